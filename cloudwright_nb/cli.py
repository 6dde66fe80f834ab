"""The `cloudwright` command: a thin layer that parses, calls the library, and prints.

Exit codes: 0 success, 1 a failed run or operation, 2 bad usage. Errors are one line on
stderr; `--debug` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import runpy
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .app import CloudWright, check_app_name, parse_inputs
from .durations import parse_duration
from .errors import CloudWrightError, ConfigurationError, InvalidDurationError, StateKeyError
from .flow.model import ended_word
from .flow.steps import check_run_id

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A command-line argument that is wrong in a way argparse cannot see."""


def _duration(text: str) -> str:
    """Check a duration argument and keep the text, so later messages quote what was typed."""
    try:
        parse_duration(text)
    except InvalidDurationError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def positive_int(text: str) -> int:
    """Read a count that must be 1 or more."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: use a whole number, 1 or more")
    return number


def _run_id(text: str) -> str:
    try:
        return check_run_id(text)
    except CloudWrightError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _app_name(text: str) -> str:
    try:
        return check_app_name(text)
    except ConfigurationError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _common_options(default: object) -> argparse.ArgumentParser:
    """Build the options every command accepts, shared as an argparse parent parser.

    Subcommands get `argparse.SUPPRESS` as default, so an option given before the subcommand
    (`cloudwright --app x state list`) is not reset by the subcommand's own default.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--app",
        type=_app_name,
        default=default,
        help="application name (default: CLOUDWRIGHT_APP, else the script's name)",
    )
    parser.add_argument(
        "--store", metavar="URL", default=default, help="store URL (default: CLOUDWRIGHT_STORE)"
    )
    parser.add_argument(
        "--debug", action="store_true", default=default, help="show tracebacks of errors"
    )
    return parser


RUN_STATUSES = ["pending", "running", "waiting", "succeeded", "failed", "cancelled", "stalled"]


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that start a run, shared by `cloudwright run` and `%cloudflow run`."""
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an application input; repeat for several",
    )
    parser.add_argument(
        "--interval",
        type=_duration,
        metavar="DURATION",
        help="delay between checks of a rerunning step, e.g. 5s or 2m",
    )
    parser.add_argument(
        "--run-id", type=_run_id, metavar="ID", help="attach to this run, or start it with this id"
    )


def build_parser() -> argparse.ArgumentParser:
    common = _common_options(argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="cloudwright",
        parents=[_common_options(None)],
        description="Run CloudFlow applications and manage their runs and state.",
    )
    parser.add_argument("--version", action="version", version=f"cloudwright {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run", parents=[common], help="run an application script; its flow runs to the end"
    )
    run.add_argument("script", type=Path, metavar="APP.py")
    add_run_options(run)
    run.set_defaults(handler=_run)

    runs = commands.add_parser("runs", parents=[common], help="list runs, newest first")
    runs.add_argument(
        "--status",
        choices=RUN_STATUSES,
    )
    runs.add_argument(
        "--limit", type=positive_int, default=50, help="how many runs to list (default 50)"
    )
    runs.add_argument("-q", "--quiet", action="store_true", help="print only the run ids")
    runs.set_defaults(handler=_runs)
    runs_commands = runs.add_subparsers(dest="runs_command", metavar="purge")
    purge = runs_commands.add_parser(
        "purge", parents=[common], help="delete ended runs older than a duration"
    )
    purge.add_argument(
        "--older-than",
        type=_duration,
        required=True,
        metavar="DURATION",
        help="age of the last update, e.g. 7d",
    )
    purge.set_defaults(handler=_purge)

    for name, handler, text in [
        ("status", _status, "show a run, one line per step"),
        ("cancel", _cancel, "cancel a run"),
        ("resume", _resume, "carry a run on by executing its script again"),
        ("retry", _retry, "restart a failed run at the step that failed"),
    ]:
        command = commands.add_parser(name, parents=[common], help=text)
        command.add_argument("run_id", metavar="RUN_ID")
        command.set_defaults(handler=handler)

    state = commands.add_parser(
        "state", parents=[common], help="read and write the application's state"
    )
    state_commands = state.add_subparsers(dest="state_command", metavar="ACTION", required=True)
    listing = state_commands.add_parser(
        "list", parents=[common], help="list keys with their expiry"
    )
    listing.add_argument("--prefix", help="only keys that start with this")
    listing.set_defaults(handler=_state_list)
    get = state_commands.add_parser("get", parents=[common], help="print a value as JSON")
    get.add_argument("key")
    get.set_defaults(handler=_state_get)
    put = state_commands.add_parser(
        "set",
        parents=[common],
        help='store a value: JSON when it parses (42, true, {"a": 1}), else a string',
    )
    put.add_argument("key")
    put.add_argument("value")
    put.add_argument(
        "--ttl",
        type=_duration,
        metavar="DURATION",
        help="keep the value this long (default 30d, at most 365d)",
    )
    put.set_defaults(handler=_state_set)
    delete = state_commands.add_parser("delete", parents=[common], help="delete a key")
    delete.add_argument("key")
    delete.set_defaults(handler=_state_delete)
    export = state_commands.add_parser(
        "export", parents=[common], help="write every key as JSON lines, decrypted"
    )
    export.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    export.set_defaults(handler=_state_export)
    load = state_commands.add_parser(
        "import", parents=[common], help="read JSON lines written by export"
    )
    load.add_argument("file", help="file to read, or - for stdin")
    load.set_defaults(handler=_state_import)

    keys = commands.add_parser("keys", parents=[common], help="create or rotate master keys")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    key_commands.add_parser(
        "generate", parents=[common], help="print a new random master key"
    ).set_defaults(handler=_keys_generate)
    key_commands.add_parser(
        "rotate",
        parents=[common],
        help="re-encrypt every record under the first key of CLOUDWRIGHT_MASTER_KEY",
    ).set_defaults(handler=_keys_rotate)

    serve = commands.add_parser(
        "serve", parents=[common], help="serve an application as an HTTP function on loopback"
    )
    serve.add_argument("script", type=Path, metavar="APP.py")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback)"
    )
    serve.set_defaults(handler=_serve)

    bundle = commands.add_parser(
        "bundle", parents=[common], help="write a folder that gcloud functions deploy accepts"
    )
    bundle.add_argument("script", type=Path, metavar="APP.py")
    bundle.add_argument(
        "-o", "--output", type=Path, required=True, metavar="DIR", help="new folder for the bundle"
    )
    bundle.set_defaults(handler=_bundle)

    firestore = commands.add_parser("firestore", parents=[common], help="prepare Firestore")
    firestore_commands = firestore.add_subparsers(
        dest="firestore_command", metavar="ACTION", required=True
    )
    setup = firestore_commands.add_parser(
        "setup", parents=[common], help="create or check the TTL policies on expires_at"
    )
    setup.add_argument(
        "--project",
        help="Google Cloud project (default: from the store URL, else GOOGLE_CLOUD_PROJECT)",
    )
    setup.add_argument("--database", help="Firestore database (default: (default))")
    setup.set_defaults(handler=_firestore_setup)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    CloudWright.name_from_main = False
    _show_log_events()
    warnings.formatwarning = _one_line_warning
    try:
        CloudWright.configure(app=args.app, store=args.store)
        return handler(args)
    except UsageError as error:
        parser.exit(EXIT_USAGE, f"cloudwright: error: {error}\n")
    except BrokenPipeError:
        # The reader went away (`cloudwright runs | head`); stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except (CloudWrightError, OSError) as error:
        if args.debug:
            traceback.print_exc()
        print(f"cloudwright: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("cloudwright: interrupted", file=sys.stderr)
        return 130
    return EXIT_OK


class _StderrHandler(logging.StreamHandler):
    """Writes each record to the `sys.stderr` of the moment, which tests and shells replace."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _one_line_warning(message: Warning | str, *args: Any, **kwargs: Any) -> str:
    return f"cloudwright: warning: {message}\n"


def _show_log_events() -> None:
    """Print the library's INFO events (store created, key file created) on stderr."""
    logger = logging.getLogger("cloudwright_nb")
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("cloudwright: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


# Runs.


def _execute_script(script: Path, debug: bool) -> int:
    """Execute an application script as `__main__`, as `python APP.py` would."""
    if not script.is_file():
        raise UsageError(f"no such script: {script}")
    script = script.resolve()
    CloudWright.script = script
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(script)]
    sys.path.insert(0, str(script.parent))
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit_:
        # sys.exit() with no argument means success, and with a message means failure.
        if exit_.code is None:
            return EXIT_OK
        return exit_.code if isinstance(exit_.code, int) else EXIT_FAILED
    except CloudWrightError:
        raise
    except Exception as error:
        if debug:
            traceback.print_exc()
        else:
            where = _innermost_frame_in(error, script)
            print(
                f"cloudwright: error: {script.name}{where} raised {type(error).__name__}: "
                f"{error} (add --debug for the traceback)",
                file=sys.stderr,
            )
        return EXIT_FAILED
    finally:
        sys.argv, sys.path = saved_argv, saved_path
    return EXIT_OK


def _innermost_frame_in(error: BaseException, script: Path) -> str:
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if Path(frame.filename) == script
    ]
    return f" line {frames[-1].lineno}" if frames else ""


def _run(args: argparse.Namespace) -> int:
    try:
        CloudWright.environment_interval  # noqa: B018 - check it before the script runs
    except InvalidDurationError as error:
        raise UsageError(str(error)) from None
    inputs = _inputs(args.input)
    CloudWright.configure(inputs=inputs, interval=args.interval)
    CloudWright.bind_run(args.run_id)
    return _execute_script(args.script, args.debug)


def _inputs(pairs: list[str]) -> dict[str, str]:
    try:
        return parse_inputs(pairs)
    except ConfigurationError as error:
        raise UsageError(str(error)) from None


def _cloudflow():
    return CloudWright.get_module("cloudflow")


def _runs(args: argparse.Namespace) -> int:
    runs = _cloudflow().list_runs(status=args.status, limit=args.limit)
    if args.quiet:
        for run in runs:
            print(run.id)
        return EXIT_OK
    if not runs:
        print(f"no runs in application {CloudWright.app!r}")
        return EXIT_OK
    print(f"{'RUN ID':<24} {'STATUS':<10} {'STEP':<24} {'NEXT CHECK':<20} CREATED")
    for run in runs:
        status = f"{run.status}{'*' if run.stalled else ''}"
        step = f"{run.step_index + 1}/{len(run.step_names)} {run.current_step or ''}"
        next_check = run.next_check_at.strftime("%Y-%m-%d %H:%M:%S") if run.next_check_at else "-"
        created = run.created_at.strftime("%Y-%m-%d %H:%M:%S") if run.created_at else "-"
        print(f"{run.id:<24} {status:<10} {step[:24]:<24} {next_check:<20} {created}")
    if any(run.stalled for run in runs):
        print(
            "* stalled: overdue with nobody holding it; `cloudwright resume RUN_ID` takes it over"
        )
    return EXIT_OK


def _purge(args: argparse.Namespace) -> int:
    removed = _cloudflow().engine.purge(parse_duration(args.older_than))
    print(f"deleted {len(removed)} ended run(s)")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    run = _cloudflow().get_run(args.run_id)
    print(run.summary())
    if run.error and run.error.get("traceback"):
        print(run.error["traceback"].rstrip())
    return EXIT_FAILED if run.status == "failed" else EXIT_OK


def _cancel(args: argparse.Namespace) -> int:
    run = _cloudflow().cancel(args.run_id)
    print(f"run {run.id} cancelled")
    return EXIT_OK


def _resume(args: argparse.Namespace) -> int:
    run = _cloudflow().get_run(args.run_id)
    if run.status == "failed":
        raise UsageError(f"run {run.id} failed; start it again with `cloudwright retry {run.id}`")
    if run.done:
        print(f"run {run.id} has already {ended_word(run.status)}")
        return EXIT_OK
    return _rerun_script(run, args.debug)


def _retry(args: argparse.Namespace) -> int:
    run = _cloudflow().engine.retry(args.run_id)
    return _rerun_script(run, args.debug)


def _rerun_script(run: Any, debug: bool) -> int:
    if not run.script:
        raise UsageError(
            f"run {run.id} records no script; resume it where it started, "
            f"for example with %cloudflow resume {run.id} in its notebook"
        )
    script = Path(run.script)
    if not script.is_file():
        raise UsageError(f"run {run.id} was started by {script}, which no longer exists")
    CloudWright.configure(inputs=run.inputs)
    CloudWright.bind_run(run.id)
    return _execute_script(script, debug)


# State.


def _state():
    return CloudWright.get_module("state")


def _state_list(args: argparse.Namespace) -> int:
    state = _state()
    names = sorted(state.keys(args.prefix))
    for name in names:
        expires_at = state.expires_at(name)
        when = expires_at.strftime("%Y-%m-%d %H:%M:%S UTC") if expires_at else "-"
        print(f"{name}\t{when}")
    return EXIT_OK


def _state_get(args: argparse.Namespace) -> int:
    state = _state()
    values = state.get_many([args.key])
    if args.key not in values:
        raise _not_set(state, args.key)
    print(json.dumps(values[args.key], indent=2, ensure_ascii=False))
    return EXIT_OK


def _state_set(args: argparse.Namespace) -> int:
    try:
        value: Any = json.loads(args.value)
    except json.JSONDecodeError:
        value = args.value
    except ValueError as error:
        raise UsageError(
            f"cannot read VALUE as JSON: {error}; quote it, as '\"...\"', to store a string"
        ) from None
    _state().set(args.key, value, ttl=args.ttl)
    return EXIT_OK


def _state_delete(args: argparse.Namespace) -> int:
    state = _state()
    if not state.delete(args.key):
        raise _not_set(state, args.key)
    return EXIT_OK


def _not_set(state: Any, key: str) -> StateKeyError:
    # Raised rather than printed, so the command and the %state magic each name themselves.
    return StateKeyError(f"key {key!r} is not set in application {state.app!r}")


def _state_export(args: argparse.Namespace) -> int:
    from .state.admin import export_state

    lines = export_state(_state())
    if args.output is None:
        for line in lines:
            print(line)
        return EXIT_OK
    count = 0
    with args.output.open("w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")
            count += 1
    print(f"exported {count} key(s) to {args.output}", file=sys.stderr)
    return EXIT_OK


def _state_import(args: argparse.Namespace) -> int:
    from .state.admin import import_state

    if args.file == "-":
        report = import_state(_state(), sys.stdin, "stdin")
    else:
        path = Path(args.file)
        if not path.exists():
            raise UsageError(f"no such file: {path}")
        if not path.is_file():
            raise UsageError(f"{path} is not a file")
        with path.open(encoding="utf-8") as handle:
            report = import_state(_state(), handle, str(path))
    print(f"imported {report.written} key(s)", file=sys.stderr)
    if report.expired:
        print(f"skipped {report.expired} key(s) whose expiry has passed", file=sys.stderr)
    if report.shortened:
        print(
            f"{report.shortened} key(s) expired more than 365 days ahead; they are kept 365 days",
            file=sys.stderr,
        )
    return EXIT_OK


# Keys.


def _keys_generate(args: argparse.Namespace) -> int:
    from .state.crypto import generate_master_key

    print(generate_master_key())
    return EXIT_OK


def _keys_rotate(args: argparse.Namespace) -> int:
    from .state.admin import rotate_keys

    keys = CloudWright.master_keys()
    count = rotate_keys(CloudWright.store(), keys)
    print(f"re-encrypted {count} record(s) under master key {keys[0].fingerprint}")
    return EXIT_OK


# Functions.


def _script_app(args: argparse.Namespace) -> tuple[Path, str]:
    if not args.script.is_file():
        raise UsageError(f"no such script: {args.script}")
    return args.script, args.app or check_app_name(args.script.stem)


def _serve(args: argparse.Namespace) -> int:
    from .functions.bundle import serve

    script, app = _script_app(args)
    # The server replaces this process, so its entry module lives in the user's cache folder,
    # one per script and port, rewritten on each start.
    from platformdirs import user_cache_path

    workdir = user_cache_path("cloudwright-nb") / "serve" / f"{app}-{args.port}"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        serve(script, app, args.host, args.port, workdir)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return EXIT_OK


def _bundle(args: argparse.Namespace) -> int:
    from .functions.bundle import bundle, deploy_command

    script, app = _script_app(args)
    try:
        contents, left_out = bundle(script, app, args.output)
    except (FileExistsError, ValueError) as error:
        raise UsageError(str(error)) from None
    print(f"wrote {args.output}: {', '.join(contents)}")
    if left_out:
        print(f"left out (secrets, local data, build output): {', '.join(left_out)}")
    print(f"application {app!r} is pinned in main.py; deploy it with:\n")
    print(deploy_command(app, args.output))
    return EXIT_OK


# Firestore.


def _firestore_setup(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from .state.stores.firestore_setup import setup_ttl

    project, database = args.project, args.database
    url = CloudWright.store_url
    if url.startswith("firestore://"):
        parts = urlsplit(url)
        project = project or parts.netloc
        database = database or parts.path.strip("/") or None
    project = project or os.environ.get("GOOGLE_CLOUD_PROJECT")
    if not project:
        raise UsageError(
            "no project: pass --project, or set CLOUDWRIGHT_STORE=firestore://PROJECT "
            "or GOOGLE_CLOUD_PROJECT"
        )
    setup_ttl(project, database or "(default)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
