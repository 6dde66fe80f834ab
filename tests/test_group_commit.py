"""Group commit in the SQLite store: writers waiting on one commit share the next one.

Grouping must keep every promise of a lone transaction. These tests check that each caller
still gets its own result or its own error, and that a failed piece of work leaves nothing
behind while the rest of its group commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import signal
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from cloudwright_nb import CloudWright, StoreError
from cloudwright_nb.state.stores import Record, RunRow
from cloudwright_nb.state.stores import sqlite as sqlite_store
from cloudwright_nb.state.stores.sqlite import SQLiteStore


def _put(key: str, blob: bytes):
    def work(transaction):
        transaction.put("ns", Record(key, blob, None))
        return key

    return work


def _increment(transaction) -> int:
    found = transaction.read("ns", ["counter"])
    value = int(found["counter"].blob) + 1 if found else 1
    transaction.put("ns", Record("counter", str(value).encode(), None))
    return value


def _stored(store: SQLiteStore) -> dict[str, bytes]:
    return {record.id: record.blob for record in store.scan("ns")}


@pytest.fixture
def store(tmp_path: Path):
    opened = SQLiteStore(tmp_path / "store.db")
    yield opened
    opened.close()


@pytest.fixture
def group_sizes(store, monkeypatch) -> list[int]:
    """The size of every group the store commits from now on."""
    sizes: list[int] = []
    commit = store._commit

    def counted(group):
        sizes.append(len(group))
        commit(group)

    monkeypatch.setattr(store, "_commit", counted)
    return sizes


class _Call:
    """A store call for `_queue_behind_a_held_commit` to make instead of a transaction's work."""

    def __init__(self, function, *args) -> None:
        self.function = function
        self.args = args

    def __call__(self):
        return self.function(*self.args)


def _queue_behind_a_held_commit(store: SQLiteStore, works: list) -> list:
    """Run `works` from threads while another transaction is open, so they form one group.

    Each work is a transaction's work, or a call to make as is. Returns one (result, error)
    pair per work, in order.
    """
    inside = threading.Event()
    release = threading.Event()

    def hold(transaction):
        inside.set()
        assert release.wait(10)

    outcomes: list = [None] * len(works)

    def call(index: int) -> None:
        try:
            work = works[index]
            called = work() if isinstance(work, _Call) else store.transact(work)
            outcomes[index] = (called, None)
        except Exception as error:
            outcomes[index] = (None, error)

    holder = threading.Thread(target=store.transact, args=(hold,))
    holder.start()
    assert inside.wait(10)
    callers = [threading.Thread(target=call, args=(index,)) for index in range(len(works))]
    for caller in callers:
        caller.start()
    deadline = time.monotonic() + 10
    while len(store._queue) < len(works):
        assert time.monotonic() < deadline, "the callers never queued"
        time.sleep(0.001)
    release.set()
    holder.join(10)
    for caller in callers:
        caller.join(10)
    return outcomes


def test_raising_work_rolls_back_alone(store):
    def half_then_fail(transaction):
        transaction.put("ns", Record("half", b"should vanish", None))
        raise ValueError("refused")

    outcomes = _queue_behind_a_held_commit(
        store, [_put("first", b"1"), half_then_fail, _put("last", b"3")]
    )

    assert outcomes[0] == ("first", None)
    assert isinstance(outcomes[1][1], ValueError)
    assert str(outcomes[1][1]) == "refused"
    assert outcomes[2] == ("last", None)
    assert _stored(store) == {"first": b"1", "last": b"3"}


def test_group_callers_get_own_results(store):
    works = [_put(f"key{index}", bytes([index])) for index in range(6)]

    outcomes = _queue_behind_a_held_commit(store, works)

    assert outcomes == [(f"key{index}", None) for index in range(6)]
    assert _stored(store) == {f"key{index}": bytes([index]) for index in range(6)}


def test_later_work_in_a_group_sees_earlier_work(store):
    outcomes = _queue_behind_a_held_commit(store, [_increment] * 5)

    assert sorted(result for result, _ in outcomes) == [1, 2, 3, 4, 5]
    assert _stored(store) == {"counter": b"5"}


def test_concurrent_increments_lose_nothing_and_share_commits(store, group_sizes):
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: store.transact(_increment), range(800)))

    assert _stored(store) == {"counter": b"800"}
    assert sum(group_sizes) == 800
    assert len(group_sizes) < 800, "no two writers ever shared a commit"


def test_closed_store_fails_callers(store):
    store.close()

    with pytest.raises(StoreError, match="is closed"):
        store.transact(_put("late", b"x"))


def test_event_loop_work_shares_commits(store, group_sizes):
    def reject(transaction):
        transaction.put("ns", Record("rejected", b"x", None))
        raise ValueError("rejected")

    async def main():
        works = [_increment] * 300 + [reject]
        return await asyncio.gather(
            *(store.transact_async(work) for work in works), return_exceptions=True
        )

    outcomes = asyncio.run(main())

    assert sorted(outcomes[:300]) == list(range(1, 301))
    assert isinstance(outcomes[300], ValueError)
    assert _stored(store) == {"counter": b"300"}
    assert max(group_sizes) > 1


def test_event_loop_work_on_closed_store(store):
    store.close()

    with pytest.raises(StoreError, match="is closed"):
        asyncio.run(store.transact_async(_put("late", b"x")))


def test_many_runs_on_one_loop_finish(sqlite_url, master_key):
    CloudWright.configure(app="many", store=sqlite_url)
    cloudflow = CloudWright.get_module("cloudflow")
    checks: dict[str, list[int]] = {}

    async def poll(context):
        checks.setdefault(context.run_id, []).append(context.attempt)
        return cloudflow.CONTINUE if context.attempt >= 3 else cloudflow.RERUN

    async def main():
        runs = [cloudflow.run(poll, interval="50ms") for _ in range(100)]
        return await asyncio.gather(*runs)

    with contextlib.redirect_stdout(io.StringIO()):
        ended = asyncio.run(main())

    assert [run.status for run in ended] == ["succeeded"] * 100
    assert sorted(map(tuple, checks.values())) == [(1, 2, 3)] * 100


def _stored_run(store: SQLiteStore, **changes) -> RunRow:
    row = RunRow(
        app="app",
        run_id="run-1",
        status="waiting",
        step_index=0,
        next_check_at=100.0,
        lease_holder=None,
        lease_expires_at=None,
        created_at=1.0,
        updated_at=2.0,
        expires_at=None,
        blob=b"sealed",
    )
    row = replace(row, **changes)
    store.transact(lambda transaction: transaction.put_run(row))
    return row


def test_commit_run_writes_only_over_the_expected_run(store):
    stored = _stored_run(store)
    stale = replace(stored, updated_at=1.5)
    first = replace(stored, updated_at=3.0, lease_holder="host:1:a")
    second = replace(stored, updated_at=4.0)

    assert store.commit_run(stale, second, "ns") is False
    assert store.get_run("app", "run-1") == stored
    # The stored run has NULL lease fields, which must compare equal to the expected None.
    assert store.commit_run(stored, first, "ns", [Record("note", b"x", None)]) is True
    assert store.get_run("app", "run-1") == first
    assert _stored(store) == {"note": b"x"}
    assert store.commit_run(stored, second, "ns") is False
    assert store.get_run("app", "run-1") == first


def test_failed_commit_run_spares_its_group(store):
    stored = _stored_run(store)
    changed = replace(stored, updated_at=3.0)
    # A record without a blob breaks the table's NOT NULL rule, after the run was updated.
    broken = Record("broken", None, None)

    outcomes = _queue_behind_a_held_commit(
        store,
        [
            _put("first", b"1"),
            _Call(store.commit_run, stored, changed, "ns", [broken]),
            _put("last", b"3"),
        ],
    )

    assert outcomes[0] == ("first", None)
    assert isinstance(outcomes[1][1], StoreError)
    assert "NOT NULL" in str(outcomes[1][1])
    assert outcomes[2] == ("last", None)
    assert _stored(store) == {"first": b"1", "last": b"3"}
    assert store.get_run("app", "run-1") == stored


class _CountedWrites:
    """Counts the runs each many-run UPDATE writes, and the jobs that run on their own."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[int] = []
        self.alone: list[sqlite_store._Job] = []
        update_runs = sqlite_store._update_runs
        job_run = sqlite_store._Job.run

        def counted(db, transaction, jobs):
            self.calls.append(len(jobs))
            update_runs(db, transaction, jobs)

        def run_alone(job, transaction):
            self.alone.append(job)
            return job_run(job, transaction)

        monkeypatch.setattr(sqlite_store, "_update_runs", counted)
        monkeypatch.setattr(sqlite_store._Job, "run", run_alone)


def _commit_as_one_group(
    store: SQLiteStore, make_commits, monkeypatch
) -> tuple[list, _CountedWrites]:
    """Queue the coroutines `make_commits()` returns behind a held commit, so they form one
    group. Return their results in order, and what the group's writes were counted as."""
    inside = threading.Event()
    release = threading.Event()

    def hold(transaction):
        inside.set()
        assert release.wait(10)

    async def commit_all():
        tasks = [asyncio.ensure_future(commit) for commit in make_commits()]
        while len(store._queue) < len(tasks):
            await asyncio.sleep(0.001)
        release.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    holder = threading.Thread(target=store.transact, args=(hold,))
    holder.start()
    assert inside.wait(10)
    # Counted from here, so the held commit itself is not.
    counted = _CountedWrites(monkeypatch)
    try:
        return asyncio.run(commit_all()), counted
    finally:
        release.set()
        holder.join(10)


def test_commit_runs_of_a_group_share_one_statement(store, monkeypatch):
    stored = [_stored_run(store, run_id=f"run-{index:03}") for index in range(300)]
    # Run 250 changed after its runner read it: its commit must fail, and only its own.
    store.transact(
        lambda transaction: transaction.put_run(replace(stored[250], status="cancelled"))
    )
    note = Record("note", b"x", None)

    def make_commits():
        commits = [
            store.commit_run_async(row, replace(row, updated_at=9.0, lease_holder="h:1"), "ns")
            for row in stored[:299]
        ]
        # One commit carries a context write, so it is written on its own, in the same group.
        with_note = replace(stored[299], updated_at=8.0)
        return [*commits, store.commit_run_async(stored[299], with_note, "ns", [note])]

    results, counted = _commit_as_one_group(store, make_commits, monkeypatch)

    assert results == [True] * 250 + [False] + [True] * 49
    # The 299 plain commits took chunks of 128, 128, 32, 8, 2 and 1 runs. Runs 128 to 255
    # shared a statement that wrote nothing, because of run 250, and were then written one by
    # one. The commit with a context write ran on its own.
    assert counted.calls == [299]
    assert len(counted.alone) == 129
    assert store.get_run("app", "run-250").status == "cancelled"
    assert store.get_run("app", "run-000").lease_holder == "h:1"
    assert store.get_run("app", "run-298").updated_at == 9.0
    assert store.get_run("app", "run-299").updated_at == 8.0
    assert _stored(store) == {"note": b"x"}


def test_commit_runs_of_two_apps_share_one_statement(store, monkeypatch):
    # Two applications' runs, with the same run id, in one store file.
    first = _stored_run(store, app="app-a", run_id="run-1")
    second = _stored_run(store, app="app-b", run_id="run-1")

    def make_commits():
        return [
            store.commit_run_async(row, replace(row, updated_at=5.0), "ns")
            for row in (first, second)
        ]

    results, counted = _commit_as_one_group(store, make_commits, monkeypatch)

    assert results == [True, True]
    assert counted.calls == [2]
    assert counted.alone == []
    assert store.get_run("app-a", "run-1").updated_at == 5.0
    assert store.get_run("app-b", "run-1").updated_at == 5.0


class _FailingCommit:
    """A connection whose COMMIT fails, as it does when the disk fails under SQLite."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, *args):
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self._db, name)


def test_failed_commit_raises_store_error_and_store_recovers(store, monkeypatch):
    opened = store._connection
    monkeypatch.setattr(store, "_connection", lambda: _FailingCommit(opened()))

    with pytest.raises(StoreError, match="disk I/O error"):
        store.transact(_put("lost", b"1"))
    with pytest.raises(StoreError, match="disk I/O error"):
        asyncio.run(store.transact_async(_put("lost too", b"2")))

    monkeypatch.undo()
    store.transact(_put("kept", b"3"))
    asyncio.run(store.transact_async(_put("kept too", b"4")))
    assert _stored(store) == {"kept": b"3", "kept too": b"4"}


def test_interrupted_callers_never_block_the_queue(store):
    """Ctrl-C in the main thread, while other threads write, fails only the interrupted call."""
    stop = threading.Event()
    acknowledged: list[int] = []
    errors: list[BaseException] = []

    def increment_until_stopped() -> None:
        while not stop.is_set():
            try:
                store.transact(_increment)
            except BaseException as error:
                errors.append(error)
                return
            acknowledged.append(1)

    background = [threading.Thread(target=increment_until_stopped) for _ in range(3)]
    for thread in background:
        thread.start()
    main = threading.main_thread().ident
    rng = random.Random(7)
    try:
        for trial in range(40):
            delay = rng.uniform(0, 0.004)
            fired = threading.Timer(delay, signal.pthread_kill, (main, signal.SIGINT))
            fired.start()
            with contextlib.suppress(KeyboardInterrupt):
                while True:  # until the interrupt lands, always inside this block
                    store.transact(_put("main", str(trial).encode()))
            fired.join()
    finally:
        stop.set()

    late = threading.Thread(target=store.transact, args=(_put("late", b"x"),))
    late.start()
    late.join(5)
    for thread in background:
        thread.join(5)

    assert not late.is_alive(), "a write after the interrupts never finished"
    assert errors == []
    assert _stored(store)["counter"] == str(len(acknowledged)).encode()


def test_failed_commit_spares_many_run_commits(store, monkeypatch):
    # Two plain commits share one UPDATE. A third commit, with a context write, then fails
    # with a database error: the group is committed again without it, and the first two,
    # acknowledged, must be stored.
    rows = [_stored_run(store, run_id=f"run-{index}") for index in range(3)]
    update_unchanged_run = sqlite_store._update_unchanged_run

    def failing(expected, row, namespace, puts, deletes, transaction):
        if puts:
            raise sqlite3.OperationalError("disk I/O error")
        return update_unchanged_run(expected, row, namespace, puts, deletes, transaction)

    monkeypatch.setattr(sqlite_store, "_update_unchanged_run", failing)

    def make_commits():
        note = Record("note", b"x", None)
        return [
            store.commit_run_async(rows[0], replace(rows[0], status="running"), "ns"),
            store.commit_run_async(rows[1], replace(rows[1], status="running"), "ns"),
            store.commit_run_async(rows[2], replace(rows[2], status="running"), "ns", [note]),
        ]

    results, counted = _commit_as_one_group(store, make_commits, monkeypatch)
    first, second, third = results

    # The two runs shared an UPDATE in the failed group, and again in the group committed
    # after it.
    assert counted.calls == [2, 2]
    assert first is True
    assert second is True
    assert isinstance(third, StoreError)
    assert "disk I/O error" in str(third)
    assert store.get_run("app", "run-0").status == "running"
    assert store.get_run("app", "run-1").status == "running"
    assert store.get_run("app", "run-2").status == "waiting"
    assert _stored(store) == {}
