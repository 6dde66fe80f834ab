"""CloudFlow on SQLite: runs per second against DBOS Transact, then many runs at once.

    python bench/flow_bench.py            # real sizes, several minutes
    python bench/flow_bench.py --quick    # tiny sizes, a few seconds
    python bench/flow_bench.py --part b --runs 2000   # part (b) alone, at another size

(a) Runs of three steps that return CONTINUE at once, one after another and then many at once.
Five sides take turns in every round:

- `cloudflow.run`: what a script calls. It creates the run and drives it to its end with the
  blocking runner. Its printed lines go to a buffer, so a terminal's speed does not count.
- `engine`: `Engine.start` (which creates the run holding its first step's lease) then one
  `Engine.tick`, which chains the three steps. This skips the per-call work of
  `cloudflow.run`: checking the step functions and hashing their source.
- `dbos`: the same three steps as a DBOS workflow, with DBOS's system database in a SQLite file
  in a temporary folder (`system_database_url`, as DBOSConfig documents it). DBOS is launched
  in this process, so its background threads run during every side's turn.
- `cloudflow.run at once`: a round's runs all started by `cloudflow.run` inside one running
  event loop, as a notebook cell would, then awaited together. The steps are the same plain
  functions, so they run in worker threads.
- `dbos at once`: the same number of DBOS workflows started with `DBOS.start_workflow`, which
  runs them on DBOS's own threads, then awaited together.

Every side runs at its own default SQLite settings, which are printed as each connection has
them.

(b) Many concurrent runs in one process, as a notebook drives them: 10,000 runs, each started
with `cloudflow.run` inside a running event loop and a single step that returns RERUN with a
one-second interval until a minute has passed since its first check. It runs once with an
`async def` step and once with a plain step, each in a fresh interpreter running
bench/many_runs.py, so each variant's peak resident memory is its own and includes no DBOS.
Each prints the ticks per second once every run has started, the 50th and 99th percentile of
how late a check came, and the peak resident memory.

A check's lateness is the time since the run's previous check, less the one-second interval,
counted for checks after the last run started. It is an upper bound: the next check is due one
second after the previous one committed, and this measure also counts the step and its commit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Hashable
from pathlib import Path

import sqlalchemy
from dbos import DBOS, DBOSConfig
from dbos._dbos import _get_dbos_instance
from harness import (
    describe_settings,
    format_rate,
    print_machine,
    print_ratio,
    print_target,
    run_rounds,
    sqlite_settings,
    use_throwaway_master_key,
)

from cloudwright_nb import CONTINUE, CloudWright
from cloudwright_nb.flow.steps import step_specs

TARGET = 10.0
SIDES = ("cloudflow.run", "engine", "dbos", "cloudflow.run at once", "dbos at once")
MANY_RUNS = 10_000
MANY_SECONDS = 60.0
LATENESS_TARGET_SECONDS = 1.0
MEMORY_TARGET_MB = 300.0
MANY_RUNS_SCRIPT = Path(__file__).with_name("many_runs.py")


def first(context):
    return CONTINUE


def second(context):
    return CONTINUE


def third(context):
    return CONTINUE


@DBOS.step()
def dbos_first() -> None:
    pass


@DBOS.step()
def dbos_second() -> None:
    pass


@DBOS.step()
def dbos_third() -> None:
    pass


@DBOS.workflow()
def dbos_flow() -> str:
    dbos_first()
    dbos_second()
    dbos_third()
    return "succeeded"


def cloudflow_trial(runs: int) -> Callable[[], int]:
    cloudflow = CloudWright.get_module("cloudflow")

    def trial() -> int:
        with contextlib.redirect_stdout(io.StringIO()):
            for _ in range(runs):
                run = cloudflow.run(first, second, third, interval="1s")
                assert run.status == "succeeded", run.status
        return runs

    return trial


def engine_trial(runs: int) -> Callable[[], int]:
    engine = CloudWright.get_module("cloudflow").engine
    specs = step_specs([first, second, third])
    steps = {spec.name: spec for spec in specs}

    def trial() -> int:
        for _ in range(runs):
            run, claim = engine.start(specs, inputs={}, interval=1, timeout=None, script=None)
            result = engine.tick(run.id, steps, claimed=claim)
            assert result.run.status == "succeeded", result.run.status
        return runs

    return trial


def cloudflow_at_once_trial(runs: int) -> Callable[[], int]:
    cloudflow = CloudWright.get_module("cloudflow")

    async def drive() -> None:
        live = [cloudflow.run(first, second, third, interval="1s") for _ in range(runs)]
        for run in await asyncio.gather(*live):
            assert run.status == "succeeded", run.status

    def trial() -> int:
        with contextlib.redirect_stdout(io.StringIO()):
            asyncio.run(drive())
        return runs

    return trial


def dbos_at_once_trial(runs: int) -> Callable[[], int]:
    def trial() -> int:
        handles = [DBOS.start_workflow(dbos_flow) for _ in range(runs)]
        for handle in handles:
            assert handle.get_result() == "succeeded"
        return runs

    return trial


def dbos_trial(runs: int) -> Callable[[], int]:
    def trial() -> int:
        for _ in range(runs):
            assert dbos_flow() == "succeeded"
        return runs

    return trial


def dbos_settings() -> str:
    # PRAGMA synchronous is per connection, so ask a connection from DBOS's own engine pool.
    engine = _get_dbos_instance()._sys_db.engine
    with engine.connect() as connection:
        journal_mode = connection.execute(sqlalchemy.text("PRAGMA journal_mode")).scalar()
        synchronous = connection.execute(sqlalchemy.text("PRAGMA synchronous")).scalar()
    return describe_settings(journal_mode, synchronous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument(
        "--sides",
        default=",".join(SIDES),
        help="comma-separated sides of part (a) to run, for profiling one (default: all)",
    )
    parser.add_argument("--part", choices=("a", "b", "both"), default="both")
    parser.add_argument("--runs", type=int, help=f"part (b) runs (default {MANY_RUNS:,})")
    parser.add_argument(
        "--seconds",
        type=float,
        help=f"how long each part (b) run reruns (default {MANY_SECONDS:g})",
    )
    arguments = parser.parse_args()
    many_runs = arguments.runs or (50 if arguments.quick else MANY_RUNS)
    many_seconds = arguments.seconds or (3.0 if arguments.quick else MANY_SECONDS)
    if arguments.part in ("a", "both"):
        sequential(arguments.quick, arguments.sides.split(","))
    if arguments.part in ("b", "both"):
        concurrent(many_runs, many_seconds)


def sequential(quick: bool, chosen: list[str]) -> None:
    rounds, runs = (5, 5) if quick else (7, 200)

    use_throwaway_master_key()
    with tempfile.TemporaryDirectory(prefix="flow-bench-") as folder_name:
        folder = Path(folder_name)
        CloudWright.configure(app="bench", store=f"sqlite:///{(folder / 'store.db').resolve()}")
        config: DBOSConfig = {
            "name": "bench",
            "system_database_url": f"sqlite:///{(folder / 'dbos.sqlite').resolve()}",
            "log_level": "WARNING",
        }
        DBOS(config=config)
        DBOS.launch()
        try:
            report(folder, chosen, rounds, runs)
        finally:
            DBOS.destroy()
            CloudWright.get_module("cloudflow").engine.store.close()


def report(folder: Path, chosen: list[str], rounds: int, runs: int) -> None:
    factories = {
        "cloudflow.run": cloudflow_trial,
        "engine": engine_trial,
        "dbos": dbos_trial,
        "cloudflow.run at once": cloudflow_at_once_trial,
        "dbos at once": dbos_at_once_trial,
    }

    # One untimed run per side: creating the application's entry and warming DBOS's pool are
    # one-time costs.
    for name in chosen:
        factories[name](1)()
    trials: list[tuple[Hashable, Callable[[], int]]] = [
        (name, factories[name](runs)) for name in chosen
    ]

    print_machine()
    print(f"folder: {folder}, {runs} runs of three steps per round, {rounds} rounds, medians")
    store = CloudWright.get_module("cloudflow").engine.store
    print(f"settings cloudwright-nb: {sqlite_settings(store._connection())}")
    print(f"settings dbos: {dbos_settings()}")

    rates = run_rounds(rounds, trials)
    print()
    for name in chosen:
        print(f"{name:<24}{format_rate(rates[name]):>12} runs")

    print()
    pairs = [
        ("cloudflow.run", "dbos"),
        ("engine", "dbos"),
        ("cloudflow.run at once", "dbos at once"),
    ]
    for ours, peer in pairs:
        if ours in chosen and peer in chosen:
            print_ratio(f"{ours} / {peer}", rates[ours] / rates[peer])
    for ours, peer in (pairs[0], pairs[2]):
        if ours in chosen and peer in chosen:
            print_target(f"{ours} / {peer}", rates[ours] / rates[peer], TARGET)


def concurrent(runs: int, seconds: float) -> None:
    print()
    print(f"(b) {runs:,} concurrent runs, each rerunning every second for {seconds:g} s")
    for variant in ("async", "plain"):
        child = subprocess.run(
            [sys.executable, str(MANY_RUNS_SCRIPT), variant, str(runs), str(seconds)],
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            raise SystemExit(f"the {variant} variant failed:\n{child.stderr}")
        figures = json.loads(child.stdout.splitlines()[-1])
        print(
            f"{variant + ' steps':<13} started in {figures['start_seconds']:.1f} s, "
            f"{figures['ticks_per_second']:,.0f} ticks/s, late p50 {figures['late_p50']:.3f} s, "
            f"p99 {figures['late_p99']:.3f} s, max {figures['late_max']:.3f} s, "
            f"peak memory {figures['peak_mb']:.0f} MB, {figures['succeeded']:,} runs succeeded, "
            f"{figures['full_collections']} full garbage collections"
        )
        print_ratio(
            f"{variant} steps, ticks per second / {runs:,} (one per run per second)",
            figures["ticks_per_second"] / runs,
        )
        if variant == "async":
            late, memory = figures["late_p99"], figures["peak_mb"]
            verdict = "met" if late < LATENESS_TARGET_SECONDS else "missed"
            print(
                f"target async p99 lateness < {LATENESS_TARGET_SECONDS:g} s: "
                f"{verdict} ({late:.3f} s)"
            )
            verdict = "met" if memory < MEMORY_TARGET_MB else "missed"
            print(
                f"target async peak memory < {MEMORY_TARGET_MB:g} MB: {verdict} ({memory:.0f} MB)"
            )


if __name__ == "__main__":
    main()
