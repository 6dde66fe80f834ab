"""The runner for scripts and `cloudwright run`: tick until the run ends, sleep in between."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from ..engine import Engine, StepSpec
from ..model import FlowRun

_BUSY_POLL_SECONDS = 1.0


def drive(
    engine: Engine,
    run_id: str,
    steps: Mapping[str, StepSpec],
    echo: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> FlowRun:
    """Tick `run_id` until it ends, printing each step transition, and return the ended run."""
    announced = None
    while True:
        result = engine.tick(run_id, steps, echo=lambda event: echo(f"[{run_id}] {event}"))
        run = result.run
        if run.done:
            return run

        if result.busy_until is not None:
            if announced != run.lease_holder:
                echo(f"[{run_id}] waiting: {result.reason}")
                announced = run.lease_holder
            # The holder may finish well before its lease runs out, so look again soon.
            delay = min(result.busy_until.timestamp() - engine.clock(), _BUSY_POLL_SECONDS)
        else:
            announced = None
            wake = run.next_check_at.timestamp() if run.next_check_at else engine.clock()
            delay = wake - engine.clock()
        if delay > 0:
            sleep(delay)
