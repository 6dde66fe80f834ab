"""State module throughput on SQLite against diskcache and sqlitedict, interleaved in one process.

    python bench/state_bench.py            # real sizes, under a minute
    python bench/state_bench.py --quick    # tiny sizes, a few seconds

Every side stores the same small dicts (about 100 bytes as JSON) in a fresh file in a temporary
folder, at its own default settings. The state module runs as a user gets it: encrypted, and
every read goes to the store. sqlitedict runs with autocommit=True, so each write is committed
before the call returns. diskcache has no batch read, so its `get_many` is 100 `get` calls. Its
`set_many` is 100 `set` calls inside one `transact()`, which is atomic like ours.

`set, 8 threads` is the same `set` called from eight threads at once, each on its own keys, as
a server or a notebook with several runs would call it. The state module's SQLite store groups
the commits of writers that arrive together, and each call still returns only once its write
is on disk.

Two more sides are references. `diskcache FULL` is diskcache with `sqlite_synchronous=2`: it
shows what diskcache costs when, like the state module, it syncs the WAL to disk at every
commit. `sqlite3 FULL` is plain sqlite3 in WAL mode with synchronous=FULL, one transaction per
call and JSON values without encryption: it is the rate the state module's design could reach
at its durability setting on this disk.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import diskcache
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
from sqlitedict import SqliteDict

from cloudwright_nb import CloudWright

BATCH = 100
THREADS = 8
OURS = "cloudwright-nb"
PEERS = ("diskcache", "sqlitedict", "diskcache FULL", "sqlite3 FULL")
TARGETS = {("set", "diskcache"): 1.5, ("get", "diskcache"): 0.8}


class StateSide:
    """The state module on a SQLite file, configured as a user would."""

    name = OURS

    def __init__(self, folder: Path) -> None:
        CloudWright.configure(app="bench", store=f"sqlite:///{(folder / 'store.db').resolve()}")
        self.state = CloudWright.get_module("state")
        self.set = self.state.set
        self.get = self.state.get
        self.get_many = self.state.get_many
        self.set_many = self.state.set_many

    def settings(self) -> str:
        # PRAGMA synchronous is per connection, so ask the store's own connection.
        return sqlite_settings(self.state._vault.store._connection())

    def close(self) -> None:
        self.state._vault.store.close()


class DiskcacheSide:
    """A `diskcache.Cache` in its own folder."""

    def __init__(self, folder: Path, name: str = "diskcache", **settings: Any) -> None:
        self.name = name
        self.cache = diskcache.Cache(str(folder / name.replace(" ", "-")), **settings)
        self.set = self.cache.set
        self.get = self.cache.get

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        return {key: self.cache.get(key) for key in keys}

    def set_many(self, values: dict[str, Any]) -> None:
        with self.cache.transact():
            for key, value in values.items():
                self.cache.set(key, value)

    def settings(self) -> str:
        return sqlite_settings(self.cache._con)

    def close(self) -> None:
        self.cache.close()


class SqlitedictSide:
    """A `SqliteDict` with autocommit=True and its other options at their defaults."""

    name = "sqlitedict"

    def __init__(self, folder: Path) -> None:
        self.table = SqliteDict(str(folder / "sqlitedict.db"), autocommit=True)
        self.set = self.table.__setitem__
        self.get = self.table.__getitem__
        self.set_many = self.table.update

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        return {key: self.table[key] for key in keys}

    def settings(self) -> str:
        # The connection lives in sqlitedict's worker thread, and select_one runs the query there.
        journal_mode = self.table.conn.select_one("PRAGMA journal_mode")[0]
        synchronous = self.table.conn.select_one("PRAGMA synchronous")[0]
        return describe_settings(journal_mode, synchronous)

    def close(self) -> None:
        self.table.close()


class BareSqliteSide:
    """Plain sqlite3 at the state module's settings, without encryption or value checks."""

    name = "sqlite3 FULL"

    def __init__(self, folder: Path) -> None:
        self.path = folder / "bare.db"
        self._local = threading.local()
        self.db.execute(
            "CREATE TABLE records (id TEXT PRIMARY KEY, blob BLOB NOT NULL) WITHOUT ROWID"
        )

    @property
    def db(self) -> sqlite3.Connection:
        # One connection per thread, as the state module's store keeps them.
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=60)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            self._local.db = db
        return db

    def set(self, key: str, value: Any) -> None:
        self.set_many({key: value})

    def set_many(self, values: dict[str, Any]) -> None:
        rows = [(key, json.dumps(value).encode()) for key, value in values.items()]
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("INSERT OR REPLACE INTO records (id, blob) VALUES (?, ?)", rows)
        self.db.execute("COMMIT")

    def get(self, key: str) -> Any:
        row = self.db.execute("SELECT blob FROM records WHERE id = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        marks = ",".join("?" * len(keys))
        rows = self.db.execute(f"SELECT id, blob FROM records WHERE id IN ({marks})", keys)
        return {key: json.loads(blob) for key, blob in rows}

    def settings(self) -> str:
        return sqlite_settings(self.db)

    def close(self) -> None:
        self.db.close()


def sample_value(index: int) -> dict[str, Any]:
    return {
        "id": index,
        "user": f"user-{index:05d}",
        "active": index % 2 == 0,
        "score": index / 7,
        "tags": ["alpha", "beta"],
        "note": "benchmark value",
    }


def make_trials(
    side: Any, keys: list[str], values: list[dict[str, Any]], sizes: dict[str, int]
) -> list[tuple[Hashable, Callable[[], int]]]:
    """Return one trial per operation on `side`. Each trial returns the number of calls it made."""
    batches = [keys[start : start + BATCH] for start in range(0, len(keys), BATCH)]

    def set_trial() -> int:
        for i in range(sizes["set"]):
            side.set(keys[i % len(keys)], values[i % len(values)])
        return sizes["set"]

    def threaded_set_trial() -> int:
        per_thread = sizes["set, 8 threads"] // THREADS

        def writer(thread: int) -> None:
            for i in range(thread * per_thread, (thread + 1) * per_thread):
                side.set(keys[i % len(keys)], values[i % len(values)])

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(writer, range(THREADS)))
        return per_thread * THREADS

    def get_trial() -> int:
        for i in range(sizes["get"]):
            side.get(keys[i % len(keys)])
        return sizes["get"]

    def get_many_trial() -> int:
        for i in range(sizes["get_many"]):
            side.get_many(batches[i % len(batches)])
        return sizes["get_many"]

    def set_many_trial() -> int:
        for i in range(sizes["set_many"]):
            batch = batches[i % len(batches)]
            side.set_many({key: values[(i + n) % len(values)] for n, key in enumerate(batch)})
        return sizes["set_many"]

    return [
        (("set", side.name), set_trial),
        (("set, 8 threads", side.name), threaded_set_trial),
        (("get", side.name), get_trial),
        (("get_many", side.name), get_many_trial),
        (("set_many", side.name), set_many_trial),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument(
        "--sides",
        default=",".join((OURS, *PEERS)),
        help="comma-separated sides to run, for profiling one (default: all)",
    )
    arguments = parser.parse_args()
    chosen = arguments.sides.split(",")

    if arguments.quick:
        rounds, key_count = 5, 200
        sizes = {"set": 20, "set, 8 threads": 40, "get": 100, "get_many": 5, "set_many": 5}
    else:
        rounds, key_count = 7, 1000
        sizes = {
            "set": 1000,
            "set, 8 threads": 2000,
            "get": 5000,
            "get_many": 200,
            "set_many": 100,
        }
    keys = [f"key-{i:05d}" for i in range(key_count)]
    values = [sample_value(i) for i in range(key_count)]

    use_throwaway_master_key()
    with tempfile.TemporaryDirectory(prefix="state-bench-") as folder_name:
        folder = Path(folder_name)
        factories = {
            OURS: lambda: StateSide(folder),
            "diskcache": lambda: DiskcacheSide(folder),
            "sqlitedict": lambda: SqlitedictSide(folder),
            "diskcache FULL": lambda: DiskcacheSide(folder, "diskcache FULL", sqlite_synchronous=2),
            "sqlite3 FULL": lambda: BareSqliteSide(folder),
        }
        sides = [factories[name]() for name in chosen]
        try:
            report(folder, sides, keys, values, sizes, rounds)
        finally:
            for side in sides:
                side.close()


def report(
    folder: Path,
    sides: list[Any],
    keys: list[str],
    values: list[dict[str, Any]],
    sizes: dict[str, int],
    rounds: int,
) -> None:
    print_machine()
    print(f"folder: {folder}, {len(keys)} keys, {rounds} rounds, medians")
    for side in sides:
        print(f"settings {side.name}: {side.settings()}")

    # Store every key first, so reads find values and our first write's one-time
    # registration of the application stays out of the timings.
    for side in sides:
        for start in range(0, len(keys), BATCH):
            batch = range(start, min(start + BATCH, len(keys)))
            side.set_many({keys[i]: values[i] for i in batch})

    operations = list(sizes.items())
    per_side = [make_trials(side, keys, values, sizes) for side in sides]
    # Interleave: each operation runs on every side before the next operation starts.
    trials = [side_trials[index] for index in range(len(operations)) for side_trials in per_side]
    rates = run_rounds(rounds, trials)

    names = [side.name for side in sides]
    print()
    print(f"{'calls per second':<32}" + "".join(f"{name:>16}" for name in names))
    for operation, count in operations:
        label = f"{operation} (100 keys)" if operation.endswith("many") else operation
        label = f"{label}, {count}/round"
        cells = "".join(f"{format_rate(rates[(operation, name)]):>16}" for name in names)
        print(f"{label:<32}{cells}")

    if OURS not in names:
        return
    print()
    for operation, _ in operations:
        for peer in names:
            if peer == OURS:
                continue
            ratio = rates[(operation, OURS)] / rates[(operation, peer)]
            print_ratio(f"{operation}, {OURS} / {peer}", ratio)
    for (operation, peer), target in TARGETS.items():
        if peer in names:
            ratio = rates[(operation, OURS)] / rates[(operation, peer)]
            print_target(f"{operation}, {OURS} / {peer}", ratio, target)


if __name__ == "__main__":
    main()
