"""CloudFlow runs per second on SQLite against DBOS Transact workflows on SQLite, in one process.

    python bench/flow_bench.py            # real sizes, about half a minute
    python bench/flow_bench.py --quick    # tiny sizes, a few seconds

(a) Sequential runs. Each run has three steps that return CONTINUE at once. Three sides take
turns in every round:

- `cloudflow.run`: what a script calls. It creates the run and drives it to its end with the
  blocking runner. Its printed lines go to a buffer, so a terminal's speed does not count.
- `engine`: `Engine.create` then one `Engine.tick`, which chains the three steps. This skips
  the per-call work of `cloudflow.run`: checking the step functions and hashing their source.
- `dbos`: the same three steps as a DBOS workflow, with DBOS's system database in a SQLite file
  in a temporary folder (`system_database_url`, as DBOSConfig documents it). DBOS is launched
  in this process, so its background threads run during every side's turn.

Every side runs at its own default SQLite settings, which are printed as each connection has
them.

(b) 10,000 concurrent async runs is not measured yet. Its place is marked at the end of report().
"""

from __future__ import annotations

import argparse
import contextlib
import io
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
            run = engine.create(specs, inputs={}, interval=1, timeout=None, script=None)
            result = engine.tick(run.id, steps)
            assert result.run.status == "succeeded", result.run.status
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
        default="cloudflow.run,engine,dbos",
        help="comma-separated sides to run, for profiling one (default: all)",
    )
    arguments = parser.parse_args()
    chosen = arguments.sides.split(",")
    rounds, runs = (5, 5) if arguments.quick else (7, 200)

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
    factories = {"cloudflow.run": cloudflow_trial, "engine": engine_trial, "dbos": dbos_trial}

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
        print(f"{name:<16}{format_rate(rates[name]):>12} runs")

    if "dbos" in chosen:
        print()
        for name in chosen:
            if name != "dbos":
                print_ratio(f"{name} / dbos", rates[name] / rates["dbos"])
        if "cloudflow.run" in chosen:
            print_target("cloudflow.run / dbos", rates["cloudflow.run"] / rates["dbos"], TARGET)

    # NOTE: part (b), 10,000 concurrent async runs against DBOS, is not written yet. It belongs
    # here, and until then this benchmark measures sequential runs only.


if __name__ == "__main__":
    main()
