"""The runner for a running event loop, such as a Jupyter kernel's: each run is an asyncio task.

`cloudflow.run(...)` in a notebook returns a `LiveRun` at once; the run goes on while the user
runs other cells. Store calls and plain steps run in worker threads, `async def` steps on the
loop, so neither the kernel nor its widgets freeze while a step works.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import gc
import logging
import threading
import traceback
from collections.abc import Callable, Generator, Mapping
from typing import Any

from ...state.stores import RunRow
from ..engine import Claim, Engine
from ..model import FlowRun
from ..steps import StepSpec
from .blocking import delay_before_next_tick

log = logging.getLogger("cloudwright_nb")

Listener = Callable[["LiveRun"], None]
# A run's attributes but its id, which never changes.
_CHANGING = FlowRun.FIELDS - {"id"}


class LiveRun(FlowRun):
    """A run driven on this process's event loop: a `FlowRun` that refreshes itself.

    Its attributes follow the run as it goes; `wait()` blocks until it ends and `await run`
    waits without blocking. `runner_error` contains the traceback if the runner itself failed
    (for example, the store became unreachable).
    """

    def __init__(self, snapshot: FlowRun, engine: Engine, steps: Mapping[str, StepSpec]) -> None:
        # Guards the shown attributes, which follow() drops and a read on any thread rebuilds.
        self._shown_lock = threading.Lock()
        self.__dict__.update(snapshot.__dict__)
        self.engine = engine
        self.step_specs = dict(steps)
        self.runner_error: str | None = None
        # The latest failed tick request of a run dispatched to a function, until one succeeds.
        self.dispatch_error: str | None = None
        self._task: asyncio.Task[FlowRun] | None = None
        self._listeners: list[Listener] = []
        self._waking: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<LiveRun {self.id} {self.status} step {self.current_step!r}>"

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(run)` after each change, on the event loop's thread."""
        self._listeners.append(listener)

    def update(self, snapshot: FlowRun) -> None:
        fresh = {name: value for name, value in snapshot.__dict__.items() if name != "_flow"}
        with self._shown_lock:
            self.__dict__.pop("_row", None)
            self.__dict__.update(fresh)
        self._notify()

    def follow(self, row: RunRow) -> None:
        """Take `row` as the run's latest state, to be shown when an attribute is next read.

        Between two checks of a waiting run, its attributes are often not read at all. Building
        them from the row only when they are read saves a decryption and many objects a check.
        """
        with self._shown_lock:
            self._row = row
            for name in _CHANGING:
                self.__dict__.pop(name, None)
        self._notify()

    def __getattr__(self, name: str) -> Any:
        # Python calls this only for attributes missing from the instance. After follow(),
        # those are the shown attributes, rebuilt here from the row on first read. The lock
        # keeps a read on another thread from putting back attributes of an older row.
        lock = self.__dict__.get("_shown_lock")
        if lock is None or name not in _CHANGING:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        with lock:
            if name not in self.__dict__:
                view = self.engine.view(self.__dict__["_row"])
                self.__dict__.update(
                    (key, value) for key, value in view.__dict__.items() if key != "_flow"
                )
                del self.__dict__["_row"]
            return self.__dict__[name]

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener(self)
            except Exception:
                log.exception("a listener of run %s failed", self.id)

    def wake(self) -> None:
        """Cut the current wait short, after a cancel or retry from elsewhere; any thread."""
        if self._task is None or self._task.done():
            return
        loop = self._task.get_loop()
        if _running_loop() is loop:
            _resolve(self._waking)
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(lambda: _resolve(self._waking))

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wait(self, timeout: float | None = None) -> FlowRun:
        """Block until the run ends and return it; the loop keeps ticking other runs meanwhile."""
        if self._task is None:
            return self.refresh()
        loop = self._task.get_loop()
        if loop.is_running() and _running_loop() is loop:
            # Called from a cell: the kernel's loop is running this very code, so re-enter it.
            import nest_asyncio2

            nest_asyncio2.apply(loop)
            return loop.run_until_complete(asyncio.wait_for(asyncio.shield(self._task), timeout))
        if loop.is_running():
            future = asyncio.run_coroutine_threadsafe(_finished(self._task), loop)
            return future.result(timeout)
        return loop.run_until_complete(asyncio.wait_for(asyncio.shield(self._task), timeout))

    def __await__(self) -> Generator[Any, None, FlowRun]:
        if self._task is None:
            return _finished_now(self).__await__()
        return asyncio.shield(self._task).__await__()

    async def _sleep(self, seconds: float) -> None:
        # One timer handle and one future: a kernel may drive thousands of runs at once.
        loop = asyncio.get_running_loop()
        self._waking = loop.create_future()
        # _resolve reads no context variable, so it needs no copy of the task's context.
        timer = loop.call_later(max(seconds, 0), _resolve, self._waking, context=_NO_CONTEXT)
        try:
            await self._waking
        finally:
            timer.cancel()
            self._waking = None


_NO_CONTEXT = contextvars.Context()


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


async def _finished(task: asyncio.Task[FlowRun]) -> FlowRun:
    return await asyncio.shield(task)


async def _finished_now(run: LiveRun) -> FlowRun:
    return run


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _CollectorTuning:
    """Fewer young garbage collections while this process drives many runs.

    Every check of a run allocates objects that live until its commit lands. With thousands of
    runs, CPython's default young collection, every 700 allocations, finds nearly all of them
    still alive and promotes them, and the full collections that follow took about half the
    time of 10,000 runs. A first threshold of 50,000 lets most of them die young instead. The
    old thresholds come back when fewer than `FEW` runs remain, unless something else changed
    them meanwhile. A program that set a higher threshold itself is left alone.
    """

    MANY = 1000
    FEW = 500
    YOUNG = 50_000

    def __init__(self) -> None:
        self._saved: tuple[int, ...] | None = None
        self._ours: tuple[int, ...] | None = None

    def runs_changed(self, count: int) -> None:
        if self._saved is None and count >= self.MANY:
            current = gc.get_threshold()
            if current[0] < self.YOUNG:
                self._saved, self._ours = current, (self.YOUNG, *current[1:])
                gc.set_threshold(*self._ours)
                log.debug("driving %d runs: gc thresholds %s -> %s", count, current, self._ours)
        elif self._saved is not None and count < self.FEW:
            if gc.get_threshold() == self._ours:
                gc.set_threshold(*self._saved)
            self._saved = self._ours = None


class KernelRunner:
    """Drives many runs at once as tasks on one event loop, keeping strong references to them."""

    _instance: KernelRunner | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[FlowRun]] = set()
        self._by_id: dict[str, LiveRun] = {}
        self._collector = _CollectorTuning()

    @classmethod
    def shared(cls) -> KernelRunner:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = KernelRunner()
            return cls._instance

    @property
    def active(self) -> int:
        return len(self._tasks)

    def driving(self, run_id: str) -> LiveRun | None:
        """Return the live run this kernel is already driving under `run_id`, if any."""
        live = self._by_id.get(run_id)
        return live if live is not None and live.running else None

    def start(self, live: LiveRun, claimed: Claim | None = None) -> LiveRun:
        """Drive `live` on the running loop; the task is kept until the run ends.

        `claimed` is the claim `Engine.start` returned, if this process just created the run.
        """
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._drive(live, claimed), name=f"cloudflow run {live.id}")
        self._keep(task, live)
        return live

    def _keep(self, task: asyncio.Task[FlowRun], live: LiveRun) -> None:
        self._tasks.add(task)
        self._by_id[live.id] = live
        self._collector.runs_changed(len(self._tasks))
        task.add_done_callback(lambda done: self._forget(done, live))
        live._task = task

    def _forget(self, task: asyncio.Task[FlowRun], live: LiveRun) -> None:
        self._tasks.discard(task)
        if self._by_id.get(live.id) is live:
            del self._by_id[live.id]
        self._collector.runs_changed(len(self._tasks))

    def start_remote(self, live: LiveRun, url: str) -> LiveRun:
        """Follow `live` while a function at `url` executes its ticks."""
        task = asyncio.get_running_loop().create_task(
            self._dispatch(live, url), name=f"cloudflow run {live.id} at {url}"
        )
        self._keep(task, live)
        return live

    async def _dispatch(self, live: LiveRun, url: str) -> FlowRun:
        from .remote import dispatch

        def changed(run: FlowRun, problem: str | None) -> None:
            live.dispatch_error = problem
            live.update(run)

        try:
            return await dispatch(url, live.id, lambda: live.engine.get(live.id), changed)
        except Exception as error:
            live.runner_error = "".join(traceback.format_exception(error))
            log.error("dispatching run %s to %s stopped: %s", live.id, url, error)
            live._notify()
            raise

    async def _drive(self, live: LiveRun, claimed: Claim | None) -> FlowRun:
        engine = live.engine
        kept: Claim | None = None
        echo = functools.partial(self._on_event, live)
        try:
            while True:
                result = await engine.tick_async(
                    live.id, live.step_specs, keep_lease=True, kept=kept, claimed=claimed, echo=echo
                )
                claimed = None
                kept = result.kept
                if result.done:
                    live.update(result.run)
                    return result.run
                live.follow(result.row)
                await live._sleep(delay_before_next_tick(engine, result))
        except asyncio.CancelledError:
            if kept is not None:
                await asyncio.to_thread(engine.release, kept)
            raise
        except Exception as error:
            # The runner itself failed, not a step: show it on the run, never only in a log.
            live.runner_error = "".join(traceback.format_exception(error))
            log.error("the runner of run %s stopped: %s", live.id, error)
            if kept is not None:
                await asyncio.to_thread(_release_quietly, engine, kept)
            live._notify()
            raise

    def _on_event(self, live: LiveRun, event: str) -> None:
        log.debug("run %s: %s", live.id, event)
        if live._listeners and (event.endswith(": started") or "->" in event):
            # A step began: show it as running without waiting for the tick to end. Only a
            # panel shows the run before the tick ends, so a run without one is not read again.
            asyncio.get_running_loop().create_task(_refresh(live))


async def _refresh(live: LiveRun) -> None:
    try:
        live.update(await asyncio.to_thread(live.engine.get, live.id))
    except Exception as error:
        log.debug("refreshing run %s failed: %s", live.id, error)


def _release_quietly(engine: Engine, kept: Claim) -> None:
    try:
        engine.release(kept)
    except Exception as error:
        log.warning("could not release the lease of run %s: %s", kept.run_id, error)
