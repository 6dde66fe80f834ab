"""`%cloudflow` and `%state`: the `cloudwright` commands, inside a notebook.

Listing, status, cancel and the state commands call the same handlers as the command line.
`run`, `resume` and `retry` find the step functions by name in the notebook and drive the run
on the kernel's event loop. Wrong arguments print the usage and one line saying what is wrong.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from IPython.core.magic import Magics, line_magic, magics_class

from .. import cli
from ..app import CloudWright, parse_inputs
from ..errors import CloudWrightError, InvalidStepError, StepMismatchError


class _UsageError(Exception):
    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


class _HelpShown(Exception):
    """Raised after argparse printed the help, instead of exiting the kernel."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser that reports errors to the magic instead of exiting the process."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message, self.format_usage())

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            print(message, end="")
        raise _HelpShown


def _cloudflow_parser() -> _Parser:
    common = cli._common_options(argparse.SUPPRESS)
    parser = _Parser(
        prog="%cloudflow",
        description="Run CloudFlow steps defined in this notebook and manage their runs.",
        parents=[cli._common_options(None)],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run", parents=[common], help="start a run of notebook functions, in this kernel"
    )
    run.add_argument("steps", nargs="+", metavar="STEP", help="step function names, in order")
    cli.add_run_options(run)
    run.add_argument(
        "--remote",
        metavar="URL",
        help="have the function at URL execute the ticks (cloudwright serve, or deployed)",
    )
    status = commands.add_parser("status", parents=[common], help="show a run (default: latest)")
    status.add_argument("run_id", nargs="?", metavar="RUN_ID")
    listing = commands.add_parser("list", parents=[common], help="list runs, newest first")
    listing.add_argument(
        "--status",
        choices=cli.RUN_STATUSES,
    )
    listing.add_argument(
        "--limit", type=cli.positive_int, default=50, help="how many runs (default 50)"
    )
    for name, text in [
        ("cancel", "cancel a run"),
        ("resume", "carry a run on in this kernel, finding its steps by name"),
        ("retry", "restart a failed run at the step that failed"),
        ("history", "show each step's recent checks and output"),
    ]:
        command = commands.add_parser(name, parents=[common], help=text)
        command.add_argument("run_id", metavar="RUN_ID")
    return parser


def _state_parser() -> _Parser:
    common = cli._common_options(argparse.SUPPRESS)
    parser = _Parser(
        prog="%state",
        description="Browse the application's state; with an action, read or write it.",
        parents=[cli._common_options(None)],
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="list keys with their expiry")
    listing.add_argument("--prefix", help="only keys that start with this")
    get = actions.add_parser("get", parents=[common], help="print a value as JSON")
    get.add_argument("key")
    put = actions.add_parser(
        "set", parents=[common], help="store a value: JSON when it parses, else a string"
    )
    put.add_argument("key")
    put.add_argument("value")
    put.add_argument(
        "--ttl",
        type=cli._duration,
        metavar="DURATION",
        help="keep the value this long (default 30d)",
    )
    delete = actions.add_parser("delete", parents=[common], help="delete a key")
    delete.add_argument("key")
    return parser


@magics_class
class CloudWrightMagics(Magics):
    """The `%cloudflow` and `%state` line magics."""

    @line_magic
    def cloudflow(self, line: str) -> Any:
        """Run CloudFlow steps defined in this notebook; `%cloudflow --help` shows the usage."""
        return self._dispatch(_cloudflow_parser(), line, self._cloudflow)

    @line_magic
    def state(self, line: str) -> Any:
        """Browse the application's state; `%state --help` shows the usage."""
        return self._dispatch(_state_parser(), line, self._state)

    def _dispatch(self, parser: _Parser, line: str, handler: Any) -> Any:
        try:
            args = parser.parse_args(shlex.split(line))
        except _HelpShown:
            return None
        except _UsageError as error:
            print(f"{error.usage.rstrip()}\n{parser.prog}: error: {error}", file=sys.stderr)
            return None
        except ValueError as error:
            print(f"{parser.prog}: error: {error}", file=sys.stderr)
            return None
        try:
            with CloudWright.overriding(app=args.app, store=args.store):
                return handler(args)
        except (CloudWrightError, OSError, cli.UsageError) as error:
            if args.debug:
                raise
            print(f"{parser.prog}: error: {error}", file=sys.stderr)
            return None

    # %cloudflow

    def _cloudflow(self, args: argparse.Namespace) -> Any:
        cloudflow = CloudWright.get_module("cloudflow")
        if args.command == "run":
            functions = [self._step(name) for name in args.steps]
            inputs = parse_inputs(args.input) if args.input else None
            return cloudflow.run(
                *functions,
                interval=args.interval,
                run_id=args.run_id,
                inputs=inputs,
                remote=args.remote,
            )
        if args.command == "status":
            cli._status(argparse.Namespace(run_id=args.run_id or self._latest_run_id()))
            return None
        if args.command == "list":
            cli._runs(argparse.Namespace(status=args.status, limit=args.limit, quiet=False))
            return None
        if args.command == "cancel":
            cli._cancel(args)
            return None
        if args.command == "history":
            print(_history(cloudflow.get_run(args.run_id)))
            return None
        run = cloudflow.get_run(args.run_id)
        steps = [self._step(name) for name in run.step_names]
        if args.command == "resume":
            return cloudflow.resume(args.run_id, *steps)
        return cloudflow.retry(args.run_id, *steps)

    def _step(self, name: str) -> Any:
        function = self.shell.user_ns.get(name)
        if function is None:
            raise StepMismatchError(
                f"no function named {name!r} in this notebook; define it in a cell first"
            )
        if not callable(function):
            raise InvalidStepError(f"{name!r} is a {type(function).__name__}, not a function")
        return function

    def _latest_run_id(self) -> str:
        runs = CloudWright.get_module("cloudflow").list_runs(limit=1)
        if not runs:
            raise cli.UsageError(f"no runs yet in application {CloudWright.app!r}")
        return runs[0].id

    # %state

    def _state(self, args: argparse.Namespace) -> Any:
        if args.action is None:
            from .state_browser import StateBrowser

            return StateBrowser(CloudWright.get_module("state"))
        handlers = {
            "list": cli._state_list,
            "get": cli._state_get,
            "set": cli._state_set,
            "delete": cli._state_delete,
        }
        handlers[args.action](args)
        return None


def _history(run: Any) -> str:
    lines = [f"run {run.id}: {run.status}"]
    for index, step in enumerate(run.steps, start=1):
        lines.append(
            f"{index}. {step.name}: {step.status}, {step.checks} check(s), "
            f"{step.reruns} rerun(s), {step.failures} failure(s)"
        )
        for outcome in step.recent:
            lines.append(f"     {outcome['outcome']} (the check took {outcome['seconds']:.3f}s)")
        for output in step.output[-5:]:
            lines.append(f"   | {output}")
    if run.error:
        lines.append(f"last error in step {run.error['step']}: {run.error['message']}")
    return "\n".join(lines)


def load(ipython: Any) -> None:
    ipython.register_magics(CloudWrightMagics)
