"""The state module's contract, run against every store in the `store_url` parametrization.

Everything here goes through the public state API or the store protocol, so a new store only
has to join the parametrization in conftest to be held to the same rules.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from cloudwright_nb import (
    CloudWright,
    CloudWrightError,
    InvalidDurationError,
    Runtime,
    StateKeyError,
)
from cloudwright_nb.state.stores import AppRow, Record, RunRow, Store, Transaction, open_store
from cloudwright_nb.state.stores.base import context_namespace
from conftest import PYTHON, subprocess_env

DAY = timedelta(days=1)
# Slack for the time between taking a timestamp in the test and the library taking its own.
CLOCK_SLACK = timedelta(seconds=5)


def open_runtime(app: str, store_url: str) -> Runtime:
    """Return a second CloudWright with its own store connection, as another process has."""
    runtime = Runtime()
    runtime.configure(app=app, store=store_url)
    return runtime


@pytest.fixture
def other_process(store_url: str, master_key: str) -> Iterator[Runtime]:
    """The same application opened by a second CloudWright with its own store connection."""
    runtime = open_runtime("test-app", store_url)
    yield runtime
    runtime.reset()


@pytest.fixture
def other_app(store_url: str, master_key: str) -> Iterator[Runtime]:
    """A second application, "other-app", on the same store."""
    runtime = open_runtime("other-app", store_url)
    yield runtime
    runtime.reset()


def assert_expires_in(state, key: str, ttl: timedelta, written_after: datetime) -> None:
    expires_at = state.expires_at(key)
    assert expires_at is not None, f"{key!r} has no expiry"
    assert written_after + ttl - CLOCK_SLACK <= expires_at
    assert expires_at <= datetime.now(timezone.utc) + ttl + CLOCK_SLACK


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# get, set, delete and update


def test_set_then_get_returns_value(state):
    state.set("last_run", {"when": "2024-05-01", "rows": 42})

    assert state.get("last_run") == {"when": "2024-05-01", "rows": 42}


def test_get_missing_key_returns_default(state):
    assert state.get("never-set") is None
    assert state.get("never-set", "fallback") == "fallback"


def test_stored_none_is_not_missing(state):
    state.set("nothing", None)

    assert state.get("nothing", "fallback") is None
    assert "nothing" in state


@pytest.mark.parametrize("value", [0, 0.0, False, "", [], {}], ids=repr)
def test_falsy_values_round_trip(state, value):
    state.set("falsy", value)

    assert state.get("falsy", "fallback") == value
    assert type(state.get("falsy")) is type(value)


def test_set_replaces_previous_value(state):
    state.set("counter", 1)
    state.set("counter", 2)

    assert state.get("counter") == 2


def test_delete_removes_key_and_reports_it(state):
    state.set("doomed", "x")

    assert state.delete("doomed") is True
    assert state.get("doomed") is None
    assert "doomed" not in state


def test_delete_missing_key_returns_false(state):
    assert state.delete("never-set") is False


def test_update_passes_default_when_missing(state):
    seen = []

    def increment(current):
        seen.append(current)
        return current + 1

    assert state.update("counter", increment, default=10) == 11
    assert seen == [10]
    assert state.get("counter") == 11


def test_update_with_value_says_call_set(state):
    state.set("keep", 1)

    with pytest.raises(TypeError, match=r"call set\('keep', value\)"):
        state.update("keep", 5)

    assert state.get("keep") == 1


def test_update_passes_current_value(state):
    state.set("names", ["ada"])

    result = state.update("names", lambda names: [*names, "grace"])

    assert result == ["ada", "grace"]
    assert state.get("names") == ["ada", "grace"]


def test_update_returns_value_as_stored(state):
    result = state.update("pair", lambda _: (1, 2))

    assert result == [1, 2]
    assert state.get("pair") == [1, 2]


def test_update_that_raises_keeps_old_value(state):
    state.set("counter", 5)

    def broken(current):
        raise RuntimeError("step failed")

    with pytest.raises(RuntimeError, match="step failed"):
        state.update("counter", broken)
    assert state.get("counter") == 5


def slow_increment(count: int) -> int:
    # The pause widens the window between the read and the write of an update, so a store
    # that does not serialize updates loses some of them on nearly every run.
    time.sleep(0.002)
    return count + 1


def run_in_threads(*targets: Callable[[], None]) -> list[BaseException]:
    """Run each target in its own thread, wait for all, and return what they raised."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def contended_writers(state) -> int:
    """How many writers contend in a test: the Firestore emulator answers contention with lock
    waits of about two seconds, so there two writers keep the suite fast."""
    return 2 if state._vault.store.url.startswith("firestore://") else 4


def test_concurrent_updates_from_threads_are_all_kept(state):
    def work() -> None:
        for _ in range(5):
            state.update("hits", slow_increment, default=0)

    writers = contended_writers(state)
    errors = run_in_threads(*[work] * writers)

    assert errors == []
    assert state.get("hits") == 5 * writers


def test_concurrent_updates_from_two_runtimes_are_all_kept(state, other_process):
    other_state = other_process.get_module("state")

    updates = 10 if contended_writers(state) == 4 else 5

    def work(module) -> Callable[[], None]:
        def increment() -> None:
            for _ in range(updates):
                module.update("hits", slow_increment, default=0)

        return increment

    errors = run_in_threads(work(state), work(other_state))

    assert errors == []
    assert state.get("hits") == 2 * updates


# The mapping protocol


def test_subscript_returns_value(state):
    state["color"] = "blue"

    assert state["color"] == "blue"


def test_subscript_missing_key_raises_key_error(state):
    with pytest.raises(KeyError) as caught:
        state["never-set"]

    assert isinstance(caught.value, StateKeyError)
    assert isinstance(caught.value, CloudWrightError)
    assert "never-set" in str(caught.value)


def test_del_subscript_missing_key_raises_key_error(state):
    with pytest.raises(StateKeyError):
        del state["never-set"]


def test_del_subscript_removes_key(state):
    state["doomed"] = 1

    del state["doomed"]

    assert "doomed" not in state


def test_in_reports_presence(state):
    state.set("present", 1)

    assert "present" in state
    assert "absent" not in state


def test_len_counts_keys(state):
    assert len(state) == 0

    state.set("a", 1)
    state.set("b", 2)
    state.set("a", 3)

    assert len(state) == 2


def test_iteration_yields_every_key(state):
    state.set_many({"a": 1, "b": 2, "c": 3})

    assert sorted(state) == ["a", "b", "c"]


def test_deleted_key_leaves_listings(state):
    state.set_many({"a": 1, "b": 2})

    state.delete("a")

    assert sorted(state.keys()) == ["b"]
    assert len(state) == 1


# keys, items, get_many, set_many


def test_keys_with_prefix_lists_only_matching_keys(state):
    state.set_many({"job/1": 1, "job/2": 2, "jobs": 3, "other": 4})

    assert sorted(state.keys("job/")) == ["job/1", "job/2"]
    assert sorted(state.keys(prefix="job")) == ["job/1", "job/2", "jobs"]
    assert list(state.keys("nothing")) == []


def test_items_yields_every_pair(state):
    state.set_many({"a": 1, "b": [2], "c": {"d": None}})

    assert dict(state.items()) == {"a": 1, "b": [2], "c": {"d": None}}


def test_keys_and_items_span_many_pages(state):
    # More keys than one scan page (500), so listing has to follow the pages to the end.
    values = {f"key-{index:04d}": index for index in range(1_200)}
    state.set_many(values)

    assert sorted(state.keys()) == sorted(values)
    assert dict(state.items()) == values
    assert len(state) == 1_200


def test_get_many_returns_present_keys_only(state):
    state.set_many({"a": 1, "b": 2})

    assert state.get_many(["a", "b", "missing"]) == {"a": 1, "b": 2}


def test_get_many_of_nothing_returns_empty_dict(state):
    assert state.get_many([]) == {}


def test_set_many_writes_every_value(state):
    state.set_many({"a": 1, "b": "two", "c": [3]})

    assert state.get("a") == 1
    assert state.get("b") == "two"
    assert state.get("c") == [3]


# Retention


def test_write_expires_thirty_days_later(state):
    before = utc_now()

    state.set("report", "done")

    assert_expires_in(state, "report", 30 * DAY, before)


def test_expires_at_is_utc(state):
    state.set("report", "done")

    assert state.expires_at("report").utcoffset() == timedelta(0)


def test_expires_at_of_missing_key_is_none(state):
    assert state.expires_at("never-set") is None


def test_rewrite_resets_expiry(state):
    state.set("report", "draft", ttl="1h")
    before = utc_now()

    state.set("report", "final")

    assert_expires_in(state, "report", 30 * DAY, before)


def test_rewrite_moves_expiry_later(state):
    state.set("report", "draft")
    first = state.expires_at("report")
    time.sleep(0.05)

    state.set("report", "draft")

    assert state.expires_at("report") > first


def test_update_resets_expiry(state):
    state.set("counter", 1, ttl="1h")
    before = utc_now()

    state.update("counter", lambda n: n + 1)

    assert_expires_in(state, "counter", 30 * DAY, before)


def test_set_many_sets_every_expiry(state):
    before = utc_now()

    state.set_many({"a": 1, "b": 2}, ttl="2d")

    assert_expires_in(state, "a", 2 * DAY, before)
    assert_expires_in(state, "b", 2 * DAY, before)


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        ("1h", timedelta(hours=1)),
        (600, timedelta(minutes=10)),
        (timedelta(days=90), timedelta(days=90)),
        ("365d", timedelta(days=365)),
    ],
    ids=["1h", "600", "timedelta-90d", "365d"],
)
def test_ttl_sets_expiry(state, ttl, expected):
    before = utc_now()

    state.set("report", "done", ttl=ttl)

    assert_expires_in(state, "report", expected, before)


@pytest.mark.parametrize("ttl", ["366d", 365 * 86400 + 1, timedelta(days=400)], ids=repr)
def test_ttl_over_365_days_is_rejected(state, ttl):
    with pytest.raises(ValueError, match="365 days") as caught:
        state.set("report", "done", ttl=ttl)

    assert isinstance(caught.value, CloudWrightError)
    assert "report" not in state


@pytest.mark.parametrize("ttl", [0, -5, "abc", True], ids=repr)
def test_invalid_ttl_is_rejected(state, ttl):
    with pytest.raises(InvalidDurationError) as caught:
        state.set("report", "done", ttl=ttl)

    assert repr(ttl) in str(caught.value)
    assert "report" not in state


def test_ttl_over_365_days_is_rejected_by_update(state):
    with pytest.raises(ValueError, match="365 days"):
        state.update("counter", lambda n: n + 1, default=0, ttl="400d")

    assert "counter" not in state


@pytest.fixture
def expired_state(state):
    """The state with "gone" just past its expiry and "kept" still live."""
    state.set("kept", "here")
    state.set("gone", "stale", ttl="200ms")
    time.sleep(0.3)
    return state


def test_expired_value_reads_as_missing(expired_state):
    assert expired_state.get("gone") is None
    assert expired_state.get("gone", "fallback") == "fallback"
    assert "gone" not in expired_state


def test_expired_value_subscript_raises_key_error(expired_state):
    with pytest.raises(StateKeyError):
        expired_state["gone"]


def test_expired_value_leaves_listings(expired_state):
    assert list(expired_state.keys()) == ["kept"]
    assert dict(expired_state.items()) == {"kept": "here"}
    assert len(expired_state) == 1


def test_expired_value_left_out_of_get_many(expired_state):
    assert expired_state.get_many(["gone", "kept"]) == {"kept": "here"}


def test_expired_value_has_no_expiry(expired_state):
    assert expired_state.expires_at("gone") is None


def test_update_of_expired_value_starts_from_default(expired_state):
    assert expired_state.update("gone", lambda value: [value], default="fresh") == ["fresh"]


def test_delete_of_expired_value_returns_false(expired_state):
    assert expired_state.delete("gone") is False


def test_expired_key_can_be_written_again(expired_state):
    expired_state.set("gone", "back")

    assert expired_state.get("gone") == "back"


# async access


def test_async_methods_round_trip(state):
    async def scenario() -> list:
        await state.aset("job", {"status": "running"})
        first = await state.aget("job")
        updated = await state.aupdate("job", lambda job: {**job, "status": "done"})
        deleted = await state.adelete("job")
        gone = await state.aget("job", "fallback")
        return [first, updated, deleted, gone]

    first, updated, deleted, gone = asyncio.run(scenario())

    assert first == {"status": "running"}
    assert updated == {"status": "done"}
    assert deleted is True
    assert gone == "fallback"


def test_async_set_accepts_ttl(state):
    before = utc_now()

    asyncio.run(state.aset("job", 1, ttl="1h"))

    assert_expires_in(state, "job", timedelta(hours=1), before)


def test_concurrent_async_updates_are_all_kept(state):
    updates = 2 * contended_writers(state)

    async def scenario() -> None:
        await asyncio.gather(
            *(state.aupdate("hits", slow_increment, default=0) for _ in range(updates))
        )

    asyncio.run(scenario())

    assert state.get("hits") == updates


# Reads see other writers at once


def test_other_runtime_write_seen_at_once(state, other_process):
    other_state = other_process.get_module("state")
    assert state.get("status") is None

    other_state.set("status", "launched")
    assert state.get("status") == "launched"

    other_state.set("status", "finished")
    assert state.get("status") == "finished"

    other_state.delete("status")
    assert state.get("status") is None


def test_other_runtime_write_seen_by_next_get_many(state, other_process):
    other_state = other_process.get_module("state")
    state.set("status", "launched")
    assert state.get_many(["status", "rows"]) == {"status": "launched"}

    other_state.set_many({"status": "finished", "rows": 42})

    assert state.get_many(["status", "rows"]) == {"status": "finished", "rows": 42}


def test_value_expiring_after_a_get_reads_as_missing(state):
    state.set("token", "abc", ttl="1s")
    assert state.get("token") == "abc"
    assert state.get_many(["token"]) == {"token": "abc"}

    time.sleep(1.2)

    assert state.get("token") is None
    assert state.get_many(["token"]) == {}
    assert "token" not in state


def test_write_is_seen_by_another_runtime(state, other_process):
    other_state = other_process.get_module("state")
    assert other_state.get("status") is None

    state.set("status", "launched")

    assert other_state.get("status") == "launched"
    assert sorted(other_state.keys()) == ["status"]


def run_child(code: str) -> str:
    """Run Python code in a child process with this test's environment; return its stdout."""
    result = subprocess.run(
        [PYTHON, "-c", code],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


CHILD_PREAMBLE = """
from cloudwright_nb import CloudWright
CloudWright.configure(app="test-app", store={url!r})
state = CloudWright.get_module("state")
"""


def test_child_process_write_seen_at_once(sqlite_url, master_key):
    CloudWright.configure(app="test-app", store=sqlite_url)
    state = CloudWright.get_module("state")
    state.set("status", "before")
    assert state.get("status") == "before"

    run_child(CHILD_PREAMBLE.format(url=sqlite_url) + "state.set('status', 'from child')")

    assert state.get("status") == "from child"


def test_write_is_seen_by_child_process(sqlite_url, master_key):
    CloudWright.configure(app="test-app", store=sqlite_url)
    state = CloudWright.get_module("state")
    state.set("status", {"rows": 3})

    output = run_child(CHILD_PREAMBLE.format(url=sqlite_url) + "print(state.get('status'))")

    assert output.strip() == "{'rows': 3}"


def test_concurrent_updates_from_processes_are_all_kept(sqlite_url, master_key):
    CloudWright.configure(app="test-app", store=sqlite_url)
    state = CloudWright.get_module("state")
    state.set("hits", 0)
    code = CHILD_PREAMBLE.format(url=sqlite_url) + (
        "for _ in range(25):\n    state.update('hits', lambda n: n + 1)\n"
    )

    children = [
        subprocess.Popen([PYTHON, "-c", code], env=subprocess_env(), stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for _ in range(25):
        state.update("hits", lambda n: n + 1)
    for child in children:
        _, stderr = child.communicate(timeout=60)
        assert child.returncode == 0, stderr.decode()

    assert state.get("hits") == 100


# Applications are isolated


def test_applications_do_not_see_each_others_values(state, other_app):
    other_state = other_app.get_module("state")

    state.set("shared-name", "mine")
    other_state.set("shared-name", "theirs")

    assert state.get("shared-name") == "mine"
    assert other_state.get("shared-name") == "theirs"


def test_applications_do_not_list_each_others_keys(state, other_app):
    other_state = other_app.get_module("state")

    state.set_many({"a": 1, "b": 2})
    other_state.set("c", 3)

    assert sorted(state.keys()) == ["a", "b"]
    assert list(other_state.keys()) == ["c"]
    assert dict(other_state.items()) == {"c": 3}
    assert len(other_state) == 1
    assert other_state.get_many(["a", "b", "c"]) == {"c": 3}


def test_delete_in_one_application_leaves_the_other(state, other_app):
    other_state = other_app.get_module("state")
    state.set("shared-name", "mine")
    other_state.set("shared-name", "theirs")

    other_state.delete("shared-name")

    assert state.get("shared-name") == "mine"


# The store protocol, beneath the state module


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def record(record_id: str, blob: bytes = b"\x00sealed\xff", expires_in: float | None = 3600):
    # Stores keep times to the microsecond, the precision of a Firestore timestamp.
    expires_at = None if expires_in is None else round(time.time() + expires_in, 6)
    return Record(record_id, blob, expires_at)


def run_row(run_id: str, created_at: float, status: str = "waiting", app: str = "app-ns"):
    created_at = round(created_at, 6)
    return RunRow(
        app=app,
        run_id=run_id,
        status=status,
        step_index=1,
        next_check_at=created_at + 60,
        lease_holder="host:123",
        lease_expires_at=created_at + 30,
        created_at=created_at,
        updated_at=created_at + 1,
        expires_at=None,
        blob=b"\x01run\x00blob",
    )


def test_store_transact_commits_and_returns_result(store):
    def work(transaction: Transaction) -> str:
        transaction.put("ns", record("a1", b"first"))
        return "committed"

    assert store.transact(work) == "committed"
    assert store.read("ns", ["a1"])["a1"].blob == b"first"


def test_store_record_round_trips_exactly(store):
    original = record("a1", bytes(range(256)), expires_in=1234.5)

    store.write("ns", [original])

    assert store.read("ns", ["a1"]) == {"a1": original}


def test_store_record_without_expiry_round_trips(store):
    store.write("ns", [record("a1", expires_in=None)])

    assert store.read("ns", ["a1"])["a1"].expires_at is None


def test_store_transact_rolls_back_every_write_on_error(store):
    store.write("ns", [record("kept", b"old"), record("doomed", b"still here")])

    def work(transaction: Transaction) -> None:
        transaction.put("ns", record("kept", b"new"))
        transaction.put("ns", record("added", b"new"))
        transaction.delete("ns", "doomed")
        transaction.put_run(run_row("run-1", time.time()))
        transaction.put_app(AppRow("app-ns", b"sealed name", ("fingerprint",)))
        raise RuntimeError("work failed")

    with pytest.raises(RuntimeError, match="work failed"):
        store.transact(work)

    found = store.read("ns", ["kept", "added", "doomed"])
    assert found["kept"].blob == b"old"
    assert "added" not in found
    assert found["doomed"].blob == b"still here"
    assert store.get_run("app-ns", "run-1") is None
    assert store.get_app("app-ns") is None


def test_store_transaction_reads_its_own_writes(store):
    def work(transaction: Transaction) -> list[str]:
        transaction.put("ns", record("a1"))
        return sorted(transaction.read("ns", ["a1", "b2"]))

    assert store.transact(work) == ["a1"]


def test_store_read_leaves_out_missing_and_expired(store):
    store.write("ns", [record("live"), record("expired", expires_in=-1)])

    assert sorted(store.read("ns", ["live", "expired", "missing"])) == ["live"]


def test_store_write_deletes_ids(store):
    store.write("ns", [record("a1"), record("b2")])

    store.write("ns", [], deletes=["a1", "never-there"])

    assert sorted(store.read("ns", ["a1", "b2"])) == ["b2"]


def test_store_namespaces_are_separate(store):
    store.write("ns-one", [record("a1", b"one")])
    store.write("ns-two", [record("a1", b"two")])

    assert store.read("ns-one", ["a1"])["a1"].blob == b"one"
    assert store.read("ns-two", ["a1"])["a1"].blob == b"two"
    assert store.count("ns-one") == 1


def test_store_scan_pages_in_id_order(store):
    ids = ["f3", "0a", "c1", "77", "b0", "2e", "9d"]
    store.write("ns", [record(record_id) for record_id in ids])
    store.write("other-ns", [record("00"), record("ff")])

    pages = []
    after = None
    while True:
        page = store.scan("ns", after=after, limit=3)
        pages.append([found.id for found in page])
        if len(page) < 3:
            break
        after = page[-1].id

    assert pages == [["0a", "2e", "77"], ["9d", "b0", "c1"], ["f3"]]


def test_store_scan_leaves_out_expired(store):
    store.write("ns", [record("a1"), record("b2", expires_in=-1), record("c3")])

    assert [found.id for found in store.scan("ns")] == ["a1", "c3"]


def test_store_scan_of_empty_namespace_is_empty(store):
    assert store.scan("nothing-here") == []


def test_store_count_counts_unexpired_records(store):
    store.write("ns", [record("a1"), record("b2"), record("c3", expires_in=-1)])
    store.write("other-ns", [record("d4")])

    assert store.count("ns") == 2
    assert store.count("empty-ns") == 0


def test_store_set_expiry_applies_to_whole_namespace(store):
    store.write("ns", [record("a1", expires_in=None), record("b2", expires_in=None)])
    store.write("other-ns", [record("c3", expires_in=None)])

    store.transact(lambda transaction: transaction.set_expiry("ns", time.time() - 1))

    assert store.count("ns") == 0
    assert store.count("other-ns") == 1


def test_store_namespaces_lists_by_prefix(store):
    store.write("app/run/1", [record("a1")])
    store.write("app/run/2", [record("a1")])
    store.write("app/state", [record("a1")])

    assert store.namespaces("app/run/") == ["app/run/1", "app/run/2"]


def test_store_run_row_round_trips(store):
    row = run_row("run-1", time.time())

    store.transact(lambda transaction: transaction.put_run(row))

    assert store.get_run("app-ns", "run-1") == row
    assert store.transact(lambda transaction: transaction.get_run("app-ns", "run-1")) == row


def test_store_changed_runs_returns_only_what_changed(store):
    # More runs than one SQLite statement compares, with unrounded times and NULL fields.
    rows = [
        replace(run_row(f"run-{index:03}", time.time()), lease_holder=None, lease_expires_at=None)
        for index in range(250)
    ]

    def write(transaction: Transaction) -> None:
        for row in rows:
            transaction.put_run(row)

    store.transact(write)
    assert store.changed_runs("app-ns", rows) == {}

    cancelled = replace(rows[3], status="cancelled", next_check_at=None)
    taken_over = replace(
        rows[240], lease_holder="other:1", lease_expires_at=rows[240].created_at + 60
    )
    resealed = replace(rows[7], blob=b"\x02other")
    store.transact(
        lambda transaction: [transaction.put_run(row) for row in (cancelled, taken_over)]
    )
    store.transact(lambda transaction: transaction.put_run(resealed))
    store.delete_runs("app-ns", ["run-100"])
    never_stored = run_row("run-999", time.time())

    changed = store.changed_runs("app-ns", [*rows, never_stored])

    assert changed == {
        "run-003": cancelled,
        "run-007": resealed,
        "run-100": None,
        "run-240": taken_over,
        "run-999": None,
    }
    assert store.changed_runs("other-app", rows[:2]) == {"run-000": None, "run-001": None}


def test_store_commit_run_needs_the_expected_run(store, store_url):
    row = run_row("run-1", time.time())
    store.transact(lambda transaction: transaction.put_run(row))
    moved = replace(row, status="running", updated_at=row.updated_at + 1)
    note = record("note")

    # Right after this store wrote the run, as a runner's next commit is.
    assert store.commit_run(row, moved, "app-ns/run/run-1", [note]) is True
    assert store.get_run("app-ns", "run-1") == moved
    assert list(store.read("app-ns/run/run-1", ["note"])) == ["note"]
    assert store.commit_run(row, replace(row, status="failed"), "app-ns/run/run-1") is False
    assert store.get_run("app-ns", "run-1") == moved

    # Another process changes the run: a commit that expects the old one writes nothing.
    other = open_store(store_url)
    try:
        cancelled = replace(moved, status="cancelled", updated_at=moved.updated_at + 1)
        other.transact(lambda transaction: transaction.put_run(cancelled))
    finally:
        other.close()
    assert store.commit_run(moved, replace(moved, step_index=2), "app-ns/run/run-1") is False
    assert store.get_run("app-ns", "run-1") == cancelled


def test_store_get_run_of_missing_run_is_none(store):
    assert store.get_run("app-ns", "no-such-run") is None


def test_store_list_runs_newest_first_with_filters(store):
    start = time.time()
    rows = [
        run_row("run-a", start, "succeeded"),
        run_row("run-b", start + 1, "waiting"),
        run_row("run-c", start + 2, "failed"),
        run_row("run-d", start + 3, "waiting", app="another-app-ns"),
    ]

    def work(transaction: Transaction) -> None:
        for row in rows:
            transaction.put_run(row)

    store.transact(work)

    assert [row.run_id for row in store.list_runs("app-ns")] == ["run-c", "run-b", "run-a"]
    assert [row.run_id for row in store.list_runs("app-ns", statuses=["waiting"])] == ["run-b"]
    assert [row.run_id for row in store.list_runs("app-ns", limit=2)] == ["run-c", "run-b"]


def test_store_delete_runs_removes_run_and_context(store):
    start = time.time()
    store.transact(lambda transaction: transaction.put_run(run_row("run-1", start)))
    store.transact(lambda transaction: transaction.put_run(run_row("run-2", start)))
    store.write(context_namespace("app-ns", "run-1"), [record("a1")])
    store.write(context_namespace("app-ns", "run-2"), [record("a1")])

    store.delete_runs("app-ns", ["run-1"])

    assert store.get_run("app-ns", "run-1") is None
    assert store.count(context_namespace("app-ns", "run-1")) == 0
    assert store.get_run("app-ns", "run-2") is not None
    assert store.count(context_namespace("app-ns", "run-2")) == 1


def test_store_app_row_round_trips(store):
    row = AppRow("app-ns", b"\x01sealed name", ("aaaa", "bbbb"))

    store.transact(lambda transaction: transaction.put_app(row))

    assert store.get_app("app-ns") == row
    assert store.list_apps() == [row]


def test_store_get_app_before_first_write_is_none(store):
    assert store.get_app("app-ns") is None


def test_store_second_instance_sees_commits(store, store_url):
    second = open_store(store_url)
    try:
        assert second.read("ns", ["a1"]) == {}

        store.write("ns", [record("a1", b"fresh")])

        assert second.read("ns", ["a1"])["a1"].blob == b"fresh"
    finally:
        second.close()
