"""Part (b) of flow_bench.py: many runs rerunning on one event loop, in a process of their own.

    python bench/many_runs.py async 10000 60

flow_bench.py starts this script once per variant (`async` for `async def` steps, `plain` for
plain ones) and reads the JSON line it prints last. It imports nothing of DBOS, so the peak
resident memory it reports is that of the runs and of cloudwright-nb alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import itertools
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from harness import use_throwaway_master_key

from cloudwright_nb import CONTINUE, RERUN, CloudWright


def many_runs_variant(variant: str, runs: int, seconds: float) -> dict[str, float]:
    """Drive `runs` runs on one event loop in this process and return what was measured."""
    use_throwaway_master_key()
    checks: dict[str, list[float]] = {}

    def check(context) -> object:
        moment = time.time()
        times = checks.setdefault(context.run_id, [])
        times.append(moment)
        return CONTINUE if moment - times[0] >= seconds else RERUN

    async def poll_async(context):
        return check(context)

    def poll(context):
        return check(context)

    step = poll_async if variant == "async" else poll

    async def drive() -> tuple[float, float, int]:
        cloudflow = CloudWright.get_module("cloudflow")
        began = time.time()
        live = [cloudflow.run(step, interval="1s") for _ in range(runs)]
        started = time.time()
        ended = await asyncio.gather(*live)
        return began, started, sum(run.status == "succeeded" for run in ended)

    full_collections = gc.get_stats()[2]["collections"]
    with tempfile.TemporaryDirectory(prefix="flow-bench-many-") as folder:
        CloudWright.configure(app="bench", store=f"sqlite:///{Path(folder, 'store.db')}")
        with contextlib.redirect_stdout(io.StringIO()):
            began, started, succeeded = asyncio.run(drive())
        CloudWright.get_module("cloudflow").engine.store.close()
    full_collections = gc.get_stats()[2]["collections"] - full_collections

    late = sorted(
        later - earlier - 1.0
        for times in checks.values()
        for earlier, later in itertools.pairwise(times)
        if earlier >= started
    )
    steady = [[moment for moment in times if moment >= started] for times in checks.values()]
    last = max((times[-1] for times in steady if times), default=started)
    span = last - started
    # Count the gaps between checks, not the checks: a run checked at 0, 1, 2 and 3 s made
    # three checks a second's interval apart, not four in three seconds.
    gaps = sum(max(len(times) - 1, 0) for times in steady)
    return {
        "start_seconds": started - began,
        "ticks_per_second": gaps / span if span else 0.0,
        "late_p50": _percentile(late, 0.50),
        "late_p99": _percentile(late, 0.99),
        "late_max": late[-1] if late else 0.0,
        "peak_mb": _peak_resident_mb(),
        "succeeded": succeeded,
        "full_collections": full_collections,
    }


def _peak_resident_mb() -> float:
    # Linux keeps ru_maxrss across exec, so a child started by a bigger parent would report the
    # parent's size. VmHWM is this program's own high-water mark.
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


if __name__ == "__main__":
    variant, runs, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(many_runs_variant(variant, runs, seconds)))
