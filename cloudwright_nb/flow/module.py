"""`CloudWright.get_module("cloudflow")`: start, drive and manage runs of step functions."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..app import check_inputs
from ..durations import Duration, parse_duration
from ..errors import ConfigurationError, RunNotFoundError, RunStateError, StepMismatchError
from .engine import Claim, Engine
from .model import FlowRun, ended_word
from .outcomes import CONTINUE, FAIL, RERUN, step
from .runners.blocking import drive
from .steps import StepSpec, step_specs

if TYPE_CHECKING:
    from ..app import Runtime

log = logging.getLogger("cloudwright_nb")

DEFAULT_INTERVAL_SECONDS = 60.0


class CloudFlow:
    """Long-running work as a sequence of steps, each returning CONTINUE, RERUN or FAIL."""

    CONTINUE = CONTINUE
    RERUN = RERUN
    FAIL = FAIL
    step = staticmethod(step)

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._engine: Engine | None = None

    def __repr__(self) -> str:
        return f"<cloudflow of application {self._runtime.app!r}>"

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(self._runtime.vault(), self)
        return self._engine

    def run(
        self,
        *steps: Callable[..., Any],
        interval: Duration | None = None,
        run_id: str | None = None,
        inputs: dict[str, Any] | None = None,
        timeout: Duration | None = None,
        remote: str | None = None,
    ) -> FlowRun:
        """Start a run of `steps` (or attach to run `run_id`) and drive it to its end.

        Returns the ended run; in a running event loop (a notebook), a live handle at once.
        With `remote`, the function at that URL executes every tick and this side follows the
        run through the shared store. Called from a script run as `__main__`, a failed or
        cancelled run exits the process with status 1.
        """
        specs = step_specs(steps)
        if inputs is not None:
            inputs = check_inputs(inputs)
        interval_seconds = self._interval(interval)
        timeout_seconds = parse_duration(timeout, name="timeout") if timeout is not None else None
        request = self._runtime.request
        if request is not None:
            run_id = request.run_id
        run_id = run_id or self._runtime.take_bound_run_id()

        engine = self.engine
        if request is not None:
            return self._tick_for_request(
                request, specs, run_id, inputs, interval_seconds, timeout_seconds
            )
        if remote:
            return self._run_remote(remote, specs, run_id, inputs)
        live = _running_loop() is not None
        claimed = None
        if run_id and engine.store.get_run(engine.app, run_id) is not None:
            run = engine.attach(run_id, specs)
            print(f"[{run.id}] resuming at step {run.current_step}")
        else:
            script = self._runtime.script or _main_script()
            fields = {
                "inputs": self._runtime.inputs if inputs is None else inputs,
                "interval": interval_seconds,
                "timeout": timeout_seconds,
                "script": str(script) if script else None,
                "run_id": run_id,
            }
            # Driven right here, the run is created holding its first step's lease.
            run, claimed = engine.start(specs, **fields)
            print(f"[{run.id}] run started with steps {', '.join(run.step_names)}")

        if live:
            return self._start_live(run, specs, claimed)
        run = self._drive(run.id, specs, claimed)
        if run.status in ("failed", "cancelled") and _called_from_main():
            raise SystemExit(1)
        return run

    def _tick_for_request(
        self,
        request: Any,
        specs: list[StepSpec],
        run_id: str | None,
        inputs: dict[str, Any] | None,
        interval: float,
        timeout: float | None,
    ) -> FlowRun:
        """Do one tick for a deployed function's request, starting the run if it names none."""
        engine = self.engine
        engine.log_output = True
        if run_id:
            run = engine.attach(run_id, specs)
        else:
            run = engine.create(
                specs,
                inputs=self._runtime.inputs if inputs is None else inputs,
                interval=interval,
                timeout=timeout,
                script=str(self._runtime.script) if self._runtime.script else None,
            )
            log.info("run %s started with steps %s", run.id, ", ".join(run.step_names))
        result = engine.tick(
            run.id,
            {spec.name: spec for spec in specs},
            force=request.force,
            echo=lambda event: log.info("%s", event, extra={"run_id": run.id}),
        )
        request.result = result
        return result.run

    def _run_remote(
        self, url: str, specs: list[StepSpec], run_id: str | None, inputs: dict[str, Any] | None
    ) -> FlowRun:
        """Have the function at `url` start (or tick) the run, then follow it to its end."""
        import asyncio

        from .runners.remote import check_url, dispatch, start_remote

        check_url(url)
        answer = start_remote(url, dict(self._runtime.inputs if inputs is None else inputs), run_id)
        try:
            run = self.engine.get(answer["run_id"])
        except RunNotFoundError:
            raise ConfigurationError(
                f"the function at {url} started run {answer['run_id']}, which application "
                f"{self._runtime.app!r} in {self.engine.store.url} does not have: give this side "
                "the function's application name (configure(app=...)), CLOUDWRIGHT_STORE and "
                "master key, then cancel that run there"
            ) from None
        names = [spec.name for spec in specs]
        if names != run.step_names:
            # The function started a run this side will not follow; stop it.
            self.engine.cancel(run.id)
            raise StepMismatchError(
                f"the function at {url} runs the steps [{', '.join(run.step_names)}], "
                f"not [{', '.join(names)}]; its run {run.id} was cancelled"
            )
        print(f"[{run.id}] run dispatched to {url}")

        if _running_loop() is not None:
            from .runners.kernel import KernelRunner, LiveRun

            live = LiveRun(run, self.engine, {spec.name: spec for spec in specs})
            KernelRunner.shared().start_remote(live, url)
            if "ipykernel" in sys.modules:
                from ..notebook.panel import show_panel

                show_panel(live)
            return live

        def report(snapshot: FlowRun, problem: str | None) -> None:
            if problem:
                print(f"[{snapshot.id}] {problem}")

        ended = asyncio.run(dispatch(url, run.id, lambda: self.engine.get(run.id), report))
        print(f"[{run.id}] run {ended.status}")
        return ended

    def _start_live(
        self, run: FlowRun, specs: list[StepSpec], claimed: Claim | None = None
    ) -> FlowRun:
        """Drive the run as a task on the running loop and return its live handle at once."""
        from .runners.kernel import KernelRunner, LiveRun

        runner = KernelRunner.shared()
        already = runner.driving(run.id)
        if already is not None:
            print(f"[{run.id}] this kernel is already driving the run; returning its handle")
            return already
        live = LiveRun(run, self.engine, {spec.name: spec for spec in specs})
        runner.start(live, claimed)
        if "ipykernel" in sys.modules:
            from ..notebook.panel import show_panel

            show_panel(live)
        return live

    def _interval(self, interval: Duration | None) -> float:
        # The command line (`--interval`) and configure() override the code, which overrides
        # CLOUDWRIGHT_INTERVAL.
        configured = self._runtime.configured_interval
        if configured is not None:
            return configured
        if interval is not None:
            return parse_duration(interval, name="interval")
        return self._runtime.environment_interval or DEFAULT_INTERVAL_SECONDS

    def _go(self, run: FlowRun, specs: list[StepSpec]) -> FlowRun:
        """Drive the run here: as a live task on a running loop, else to its end."""
        if _running_loop() is not None:
            return self._start_live(run, specs)
        return self._drive(run.id, specs)

    def _drive(self, run_id: str, specs: list[StepSpec], claimed: Claim | None = None) -> FlowRun:
        run = drive(self.engine, run_id, {spec.name: spec for spec in specs}, claimed=claimed)
        print(f"[{run_id}] run {run.status}")
        if run.error:
            print(f"[{run_id}] error in step {run.error['step']}: {run.error['message']}")
        return run

    def get_run(self, run_id: str) -> FlowRun:
        """Return a snapshot of the run."""
        return self.engine.get(run_id)

    def list_runs(self, status: str | None = None, limit: int | None = None) -> list[FlowRun]:
        """Return the application's runs, newest first; `status` may be "stalled"."""
        return self.engine.list(status, limit)

    def cancel(self, run_id: str) -> FlowRun:
        """Cancel a run: it starts no further check.

        A run this process drives on an event loop is woken, so its handle ends now rather than
        at its next check. A runner in another process finds out at its next check.
        """
        run = self.engine.cancel(run_id)
        if "asyncio" in sys.modules:
            # Only a process with an event loop can be driving the run on one.
            from .runners.kernel import KernelRunner

            live = KernelRunner.shared().driving(run_id)
            if live is not None and live.engine.app == self.engine.app:
                live.wake()
        return run

    def resume(self, run_id: str, *steps: Callable[..., Any]) -> FlowRun:
        """Carry a live run on from the step it was on, after a restart or a crash.

        The steps are found by name in `__main__` (a script or a notebook) unless given.
        """
        run = self.engine.get(run_id)
        if run.status == "failed":
            raise RunStateError(
                f"run {run_id} failed; start it again with cloudflow.retry({run_id!r})"
            )
        if run.done:
            raise RunStateError(f"run {run_id} has already {ended_word(run.status)}")
        specs = self._steps_for(run, steps)
        run = self.engine.attach(run_id, specs)
        print(f"[{run_id}] resuming at step {run.current_step}")
        return self._go(run, specs)

    def retry(self, run_id: str, *steps: Callable[..., Any]) -> FlowRun:
        """Restart a failed run at the step that failed, keeping its context, and drive it."""
        run = self.engine.retry(run_id)
        try:
            specs = self._steps_for(run, steps)
        except StepMismatchError:
            log.info(
                "run %s will go on when a runner resumes it (`cloudwright resume %s`)",
                run_id,
                run_id,
            )
            return run
        return self._go(run, specs)

    def _steps_for(self, run: FlowRun, steps: tuple[Callable[..., Any], ...]) -> list[StepSpec]:
        if steps:
            return step_specs(steps)
        namespace = vars(sys.modules["__main__"])
        missing = [name for name in run.step_names if not callable(namespace.get(name))]
        if missing:
            raise StepMismatchError(
                f"cannot find step {', '.join(missing)} of run {run.id}; pass the step "
                f"functions, cloudflow.resume({run.id!r}, {', '.join(run.step_names)}), "
                f"or run `cloudwright resume {run.id}`"
            )
        return step_specs([namespace[name] for name in run.step_names])


def _running_loop():
    """Return the event loop running in this thread (a kernel's, or asyncio.run's), if any."""
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _main_script() -> Path | None:
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return _resolved(path) if path else None


@functools.lru_cache(maxsize=8)
def _resolved(path: str) -> Path:
    # Resolving makes a system call per part of the path, and a script may start many runs.
    # The path of __main__ is absolute since Python 3.9, so the current directory cannot
    # change what it resolves to.
    return Path(path).resolve()


def _called_from_main() -> bool:
    # Frame 0 is this function, 1 is CloudFlow.run, and 2 is the caller of run().
    return sys._getframe(2).f_globals.get("__name__") == "__main__"
