"""The runner for scripts and `cloudwright run`: tick until the run ends, sleep in between."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from ..engine import Claim, Engine, TickResult
from ..model import FlowRun
from ..steps import StepSpec

_BUSY_POLL_SECONDS = 1.0


def drive(
    engine: Engine,
    run_id: str,
    steps: Mapping[str, StepSpec],
    echo: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
    claimed: Claim | None = None,
) -> FlowRun:
    """Tick `run_id` until it ends, printing each step transition, and return the ended run.

    The runner keeps a rerunning step's lease through short waits, so each later check costs
    one read and one conditional write instead of two transactions. `claimed` is the claim
    `Engine.start` returned for a run this runner just created.
    """
    announced_holder = None
    kept: Claim | None = None

    def echo_event(event: str) -> None:
        echo(f"[{run_id}] {event}")

    try:
        while True:
            result = engine.tick(
                run_id, steps, echo=echo_event, keep_lease=True, kept=kept, claimed=claimed
            )
            claimed = None
            kept = result.kept
            if result.done:
                return result.run

            if result.busy_until is not None and announced_holder != result.run.lease_holder:
                echo(f"[{run_id}] waiting: {result.reason}")
                announced_holder = result.run.lease_holder
            delay = delay_before_next_tick(engine, result)
            if delay > 0:
                sleep(delay)
    except BaseException as error:
        # A runner stopped by Ctrl-C or an error hands its kept lease back, so another runner
        # can carry on at once.
        if kept is not None:
            engine.release(kept)
        if isinstance(error, KeyboardInterrupt):
            echo(f"[{run_id}] interrupted; carry on with `cloudwright resume {run_id}`")
        raise


def delay_before_next_tick(engine: Engine, result: TickResult) -> float:
    """Return how many seconds to wait before ticking again after `result`."""
    if result.busy_until is not None:
        # The holder may finish well before its lease runs out, so look again soon.
        return min(result.busy_until.timestamp() - engine.clock(), _BUSY_POLL_SECONDS)
    wake = result.row.next_check_at
    return wake - engine.clock() if wake is not None else 0.0
