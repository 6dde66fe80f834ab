"""Timing shared by the benchmarks: interleaved rounds, medians, and the lines they print.

Every benchmark prints its comparisons as `ratio WHAT: 1.23x` lines, which `tests/test_bench.py`
reads back.
"""

from __future__ import annotations

import gc
import os
import platform
import sqlite3
import statistics
import time
from collections.abc import Callable, Hashable, Mapping, Sequence

from cloudwright_nb.state.crypto import generate_master_key

SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def use_throwaway_master_key() -> None:
    """Seal the benchmark's fresh store under a new random key, so no key file is created."""
    os.environ["CLOUDWRIGHT_MASTER_KEY"] = generate_master_key()


def run_rounds(
    rounds: int, trials: Sequence[tuple[Hashable, Callable[[], int]]]
) -> dict[Hashable, float]:
    """Run every trial once per round, in the given order, and return each one's median rate.

    A trial returns how many operations it performed, and rates are in operations per second.
    Running the sides one after another inside each round spreads slow phases of the machine
    (other load, disk flushes) over all of them instead of over one.
    """
    samples: dict[Hashable, list[float]] = {key: [] for key, _ in trials}
    for _ in range(rounds):
        for key, trial in trials:
            gc.collect()
            started = time.perf_counter()
            count = trial()
            samples[key].append(count / (time.perf_counter() - started))
    return {key: statistics.median(rates) for key, rates in samples.items()}


def interleaved_medians(
    commands: Mapping[str, str], samples: int, measure: Callable[[str], float]
) -> dict[str, float]:
    """Return the median of `samples` measurements of each command, the commands taking turns.

    Each command is measured once untimed first, which compiles its byte code, as a deployed
    function has it compiled already.
    """
    for code in commands.values():
        measure(code)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(samples):
        for name, code in commands.items():
            times[name].append(measure(code))
    return {name: statistics.median(values) for name, values in times.items()}


def sqlite_settings(connection: sqlite3.Connection) -> str:
    """Describe the journal mode and synchronous level a connection is using right now."""
    journal_mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    synchronous = connection.execute("PRAGMA synchronous").fetchone()[0]
    return describe_settings(journal_mode, synchronous)


def describe_settings(journal_mode: str, synchronous: int) -> str:
    level = SYNCHRONOUS_NAMES.get(int(synchronous), "unknown")
    return f"journal_mode={journal_mode.lower()} synchronous={level} ({synchronous})"


def print_machine() -> None:
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def format_rate(rate: float) -> str:
    return f"{rate:,.0f}/s"


def print_ratio(comparison: str, ratio: float) -> None:
    print(f"ratio {comparison}: {ratio:.2f}x")


def print_target(comparison: str, ratio: float, target: float) -> None:
    verdict = "met" if ratio >= target else "missed"
    print(f"target {comparison} >= {target:g}x: {verdict} ({ratio:.2f}x)")
