"""`sqlite:///path`: the embedded store, one SQLite file shared by every local process.

The file runs in WAL mode so readers never wait for writers, with `synchronous=FULL` so a
committed write survives a power cut, not only a killed process. Every read-then-write happens
in a `BEGIN IMMEDIATE` transaction, which takes the write lock up front: two processes never
both read, then both fail to upgrade with "database is locked". They queue on the busy timeout.

Within one process, writers that arrive while a transaction commits are grouped: the next
writer in line runs every waiting piece of work in one transaction, each inside its own
savepoint, and commits them with one sync. A piece of work that raises is rolled back alone and
its caller gets the error; the others commit. Each caller returns only after the commit that
contains its writes is on disk, so grouping changes the cost of a commit, never what it promises.
Work sent from an event loop (`transact_async`) waits in the same line, with no thread of its
own: a writer thread leads the groups it is in, so thousands of runs on one loop share commits.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import StoreError
from .base import (
    AppRow,
    Record,
    RunRow,
    Store,
    T,
    Transaction,
    context_namespace,
    now,
)

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("cloudwright_nb")

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 60_000
PURGE_BATCH = 1000
PURGE_EVERY_SECONDS = 300.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    ns TEXT NOT NULL,
    id TEXT NOT NULL,
    blob BLOB NOT NULL,
    expires_at REAL,
    PRIMARY KEY (ns, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS runs (
    app TEXT NOT NULL,
    run_id TEXT NOT NULL,
    status TEXT NOT NULL,
    step_index INTEGER NOT NULL,
    next_check_at REAL,
    lease_holder TEXT,
    lease_expires_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL,
    blob BLOB NOT NULL,
    PRIMARY KEY (app, run_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_by_app_created ON runs (app, created_at);
CREATE TABLE IF NOT EXISTS apps (
    ns TEXT PRIMARY KEY,
    name_blob BLOB NOT NULL,
    fingerprints TEXT NOT NULL
) WITHOUT ROWID;
"""

_RUN_COLUMNS = (
    "app, run_id, status, step_index, next_check_at, lease_holder, lease_expires_at, "
    "created_at, updated_at, expires_at, blob"
)
_RUN_FIELDS = _RUN_COLUMNS.split(", ")[2:]
# A kept lease's commit: one statement that writes the run only if it is still exactly the run
# read before the step ran. IS compares NULLs as equal, where = would not.
_UPDATE_UNCHANGED_RUN = (
    f"UPDATE runs SET {', '.join(f'{field} = ?' for field in _RUN_FIELDS)} "
    f"WHERE app = ? AND run_id = ? AND {' AND '.join(f'{field} IS ?' for field in _RUN_FIELDS)}"
)
_UNEXPIRED = "(expires_at IS NULL OR expires_at > ?)"
# changed_runs binds ten values per run and _update_runs twenty, so a chunk of this many runs
# stays well below SQLite's 32,766 parameters per statement.
_MAX_RUNS_PER_STATEMENT = 128
# UPDATE ... FROM arrived in SQLite 3.33; an older library writes each run on its own.
_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)
# The sqlite3 module caches up to 128 prepared statements per connection, keyed by their text,
# so a constant text is prepared again only if other statements push it out.
_SELECT_BLOB = f"SELECT blob FROM records WHERE ns = ? AND id = ? AND {_UNEXPIRED}"
# SQLite allows 32,766 parameters per statement by default since 3.32, so one select binds at
# most 500 ids.
_IDS_PER_SELECT = 500


def _app_row(row: tuple) -> AppRow:
    return AppRow(row[0], row[1], tuple(filter(None, row[2].split(","))))


class _SQLiteTransaction(Transaction):
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def read(self, namespace: str, ids: Sequence[str]) -> dict[str, Record]:
        return _read(self._db, namespace, ids)

    def put(self, namespace: str, record: Record) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO records (ns, id, blob, expires_at) VALUES (?, ?, ?, ?)",
            (namespace, record.id, record.blob, record.expires_at),
        )

    def delete(self, namespace: str, record_id: str) -> None:
        self._db.execute("DELETE FROM records WHERE ns = ? AND id = ?", (namespace, record_id))

    def set_expiry(self, namespace: str, expires_at: float | None) -> None:
        self._db.execute("UPDATE records SET expires_at = ? WHERE ns = ?", (expires_at, namespace))

    def get_run(self, app: str, run_id: str) -> RunRow | None:
        return _get_run(self._db, app, run_id)

    def put_run(self, row: RunRow) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO runs ({_RUN_COLUMNS}) VALUES ({', '.join('?' * 11)})",
            (row.app, row.run_id, *_run_fields(row)),
        )

    def get_app(self, namespace: str) -> AppRow | None:
        row = self._db.execute(
            "SELECT ns, name_blob, fingerprints FROM apps WHERE ns = ?", (namespace,)
        ).fetchone()
        return _app_row(row) if row else None

    def put_app(self, row: AppRow) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO apps (ns, name_blob, fingerprints) VALUES (?, ?, ?)",
            (row.namespace, row.name_blob, ",".join(row.fingerprints)),
        )


def _chunks(ids: Sequence[str]) -> Iterator[tuple[list[str], str]]:
    """Split `ids` into lists short enough for one SELECT, each with its placeholders."""
    for start in range(0, len(ids), _IDS_PER_SELECT):
        chunk = list(ids[start : start + _IDS_PER_SELECT])
        yield chunk, ",".join("?" * len(chunk))


def _read(db: sqlite3.Connection, namespace: str, ids: Sequence[str]) -> dict[str, Record]:
    found: dict[str, Record] = {}
    moment = now()
    for chunk, marks in _chunks(ids):
        rows = db.execute(
            f"SELECT id, blob, expires_at FROM records WHERE ns = ? AND id IN ({marks}) "
            f"AND {_UNEXPIRED}",
            (namespace, *chunk, moment),
        )
        for record_id, blob, expires_at in rows:
            found[record_id] = Record(record_id, blob, expires_at)
    return found


def _run_fields(row: RunRow) -> tuple[object, ...]:
    """Return the run's values for the columns after app and run_id, in `_RUN_FIELDS` order."""
    return (
        row.status,
        row.step_index,
        row.next_check_at,
        row.lease_holder,
        row.lease_expires_at,
        row.created_at,
        row.updated_at,
        row.expires_at,
        row.blob,
    )


def _run_commit_job(
    expected: RunRow,
    row: RunRow,
    namespace: str,
    puts: Sequence[Record],
    deletes: Sequence[str],
) -> _Job:
    """Return the job of `commit_run`, which checks and writes the run in one UPDATE.

    A group can write many such jobs that have no context writes in one statement.
    """
    work = functools.partial(_update_unchanged_run, expected, row, namespace, puts, deletes)
    job = _Job(work, savepoint=False)
    if not puts and not deletes:
        job.run_update = (expected, row)
    return job


def _update_unchanged_run(
    expected: RunRow,
    row: RunRow,
    namespace: str,
    puts: Sequence[Record],
    deletes: Sequence[str],
    transaction: Transaction,
) -> bool:
    """Do the work of `commit_run`: check and write the run in one UPDATE."""
    assert isinstance(transaction, _SQLiteTransaction)
    parameters = (*_run_fields(row), expected.app, expected.run_id, *_run_fields(expected))
    if transaction._db.execute(_UPDATE_UNCHANGED_RUN, parameters).rowcount != 1:
        return False
    for record in puts:
        transaction.put(namespace, record)
    for record_id in deletes:
        transaction.delete(namespace, record_id)
    return True


@functools.cache
def _changed_runs_query(count: int) -> str:
    """Return the query that compares `count` expected runs with the stored ones."""
    values = ", ".join(["(" + ", ".join("?" * (1 + len(_RUN_FIELDS))) + ")"] * count)
    stored = ", ".join(f"runs.{column}" for column in _RUN_COLUMNS.split(", "))
    differs = " OR ".join(f"runs.{field} IS NOT expected.{field}" for field in _RUN_FIELDS)
    return (
        f"WITH expected (run_id, {', '.join(_RUN_FIELDS)}) AS (VALUES {values}) "
        f"SELECT expected.run_id, {stored} FROM expected "
        "LEFT JOIN runs ON runs.app = ? AND runs.run_id = expected.run_id "
        f"WHERE runs.run_id IS NULL OR {differs}"
    )


def _update_runs(db: sqlite3.Connection, transaction: Transaction, jobs: list[_Job]) -> _Job | None:
    """Write the runs of many `commit_run` jobs, each only if it is unchanged.

    One statement writes a chunk of runs, so the writing thread gives up the GIL once per
    chunk rather than once per run. Under load, each time it took the GIL back could cost it
    up to the interpreter's switch interval. If a run changed meanwhile, the chunk is rolled
    back and its runs are written one by one to learn which. Returns a job whose write
    raised, after which the transaction must be rolled back, or None.
    """
    for chunk in _run_chunks(jobs):
        parameters: list[object] = []
        for job in chunk:
            assert job.run_update is not None
            expected, row = job.run_update
            parameters += (row.app, row.run_id, *_run_fields(row), *_run_fields(expected))
        db.execute("SAVEPOINT runs")
        # The cursor's rowcount stays -1 for a statement that starts with WITH.
        before = db.total_changes
        db.execute(_update_runs_query(len(chunk)), parameters)
        if db.total_changes - before == len(chunk):
            for job in chunk:
                job.result = True
        else:
            db.execute("ROLLBACK TO runs")
            for job in chunk:
                if not job.run(transaction):
                    return job
        db.execute("RELEASE runs")
    return None


@functools.cache
def _update_runs_query(count: int) -> str:
    """Return the statement that writes `count` runs, each only if it is still as expected."""
    was = [f"was_{field}" for field in _RUN_FIELDS]
    values = ", ".join(["(" + ", ".join("?" * (2 + 2 * len(_RUN_FIELDS))) + ")"] * count)
    assign = ", ".join(f"{field} = new.{field}" for field in _RUN_FIELDS)
    same = " AND ".join(f"runs.{field} IS new.was_{field}" for field in _RUN_FIELDS)
    return (
        f"WITH new (app, run_id, {', '.join(_RUN_FIELDS)}, {', '.join(was)}) "
        f"AS (VALUES {values}) UPDATE runs SET {assign} FROM new "
        f"WHERE runs.app = new.app AND runs.run_id = new.run_id AND {same}"
    )


def _run_chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """Split `items` into chunks of 128, 64, 32 and so on down to 1.

    The statements that compare or write runs have one text per chunk size, and the sqlite3
    module keeps the prepared statement of each text. Preparing the statement for 128 runs
    takes about as long as running it, and with eight sizes each is prepared only once.
    """
    start = 0
    while start < len(items):
        size = min(_MAX_RUNS_PER_STATEMENT, 1 << ((len(items) - start).bit_length() - 1))
        yield items[start : start + size]
        start += size


def _get_run(db: sqlite3.Connection, app: str, run_id: str) -> RunRow | None:
    row = db.execute(
        f"SELECT {_RUN_COLUMNS} FROM runs WHERE app = ? AND run_id = ?", (app, run_id)
    ).fetchone()
    return RunRow(*row) if row else None


class _Job:
    """One caller's piece of work in a group commit, and what came of it."""

    __slots__ = ("error", "finished", "future", "result", "run_update", "savepoint", "wake", "work")

    def __init__(self, work: Callable[[Transaction], object], savepoint: bool = True) -> None:
        self.work = work
        # False for work that fails only as a whole: a group then skips its savepoint, and if
        # the work raises after all, the group is rolled back and done again without it.
        self.savepoint = savepoint
        self.result: object = None
        self.error: BaseException | None = None
        self.finished = False
        # Set for a caller that waits: when its group has committed, or when it leads next.
        self.wake: threading.Event | None = None
        # For a caller on an event loop, which the writer thread settles after the commit.
        self.future: asyncio.Future[object] | None = None
        # For a commit_run without context writes: the run expected, and the run to write.
        self.run_update: tuple[RunRow, RunRow] | None = None

    def run(self, transaction: Transaction) -> bool:
        """Do the work; return False if it raised, keeping the error for its caller."""
        try:
            self.result = self.work(transaction)
        except Exception as error:
            self.error = error
            return False
        return True


# The leader of groups of work sent from an event loop, which has no caller thread to lead.
_WRITER = object()


def _settle(jobs: list[_Job]) -> None:
    """Hand each finished job's result or error to the event loop task awaiting it."""
    for job in jobs:
        future = job.future
        if future is None or future.done():
            continue
        if job.error is not None:
            future.set_exception(job.error)
        else:
            future.set_result(job.result)


class SQLiteStore(Store):
    reads_are_local = True

    def __init__(self, path: Path, url: str | None = None) -> None:
        self.path = Path(path)
        self.url = url or f"sqlite:///{self.path}"
        self._local = threading.local()
        self._connections: dict[int, sqlite3.Connection] = {}
        self._connections_lock = threading.Lock()
        self._purger: threading.Thread | None = None
        self._closed = threading.Event()
        self._group_lock = threading.Lock()
        self._queue: list[_Job] = []
        # Whose turn it is to commit the queue: a waiting caller's job, the writer thread
        # (_WRITER), or None when no commit is under way.
        self._leader: _Job | object | None = None
        # A group whose COMMIT went through before an interrupt, so that nothing in it runs twice.
        self._committed: list[_Job] | None = None
        self._writer: threading.Thread | None = None
        self._writer_turn = threading.Event()

        created = not self.path.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create the folder for store {self.url}: {error}") from None
        with self._errors("open"):
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"store {self.url} has schema version {version}, newer than this "
                        f"cloudwright-nb understands ({SCHEMA_VERSION}); upgrade cloudwright-nb"
                    )
                # executescript() would commit first; run the statements inside our transaction.
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if created:
            log.info("created store %s", self.path.resolve())

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as error:
            raise self._error(action, error) from None

    def _error(self, action: str, error: sqlite3.DatabaseError) -> StoreError:
        return StoreError(
            f"cannot {action} store {self.url}: {error}; check that the file is a "
            "cloudwright-nb database and its folder is writable"
        )

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "connection", None)
        if self._closed.is_set():
            if db is not None:
                db.close()
                self._local.connection = None
            raise StoreError(f"store {self.url} is closed")
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"store {self.url} could not switch to WAL mode (got {mode})")
            db.execute("PRAGMA synchronous = FULL")
            self._local.connection = db
            with self._connections_lock:
                self._connections[threading.get_ident()] = db
        return db

    def transact(self, work: Callable[[Transaction], T]) -> T:
        return self._queue_and_wait(_Job(work))  # type: ignore[return-value]

    def commit_run(
        self,
        expected: RunRow,
        row: RunRow,
        namespace: str,
        puts: Sequence[Record] = (),
        deletes: Sequence[str] = (),
    ) -> bool:
        job = _run_commit_job(expected, row, namespace, puts, deletes)
        return self._queue_and_wait(job)  # type: ignore[return-value]

    def _queue_and_wait(self, job: _Job) -> object:
        with self._group_lock:
            self._queue.append(job)
            if self._leader is None:
                self._leader = job
            else:
                job.wake = threading.Event()
        try:
            if job.wake is not None:
                job.wake.wait()
            if not job.finished:
                # This caller leads the next group: its own work is in the queue it takes.
                self._write_group(job)
        except BaseException:
            # Interrupted (Ctrl-C): leave the line, and pass on the turn to lead if it was ours.
            self._leave_queue(job)
            raise
        self._start_purger()
        if job.error is not None:
            raise job.error
        return job.result

    async def transact_async(self, work: Callable[[Transaction], T]) -> T:
        return await self._queue_async(_Job(work))  # type: ignore[return-value]

    def _queue_async(self, job: _Job) -> asyncio.Future[object]:
        # A function that returns the future rather than a coroutine: thousands of runs may
        # wait on commits at once, and each coroutine is one more object for the garbage
        # collector to walk.
        import asyncio  # here, not at the top, so that import cloudwright_nb does not load it

        job.future = asyncio.get_running_loop().create_future()
        with self._group_lock:
            self._queue.append(job)
            if self._leader is None:
                self._leader = _WRITER
                self._writer_leads()
        self._start_purger()
        return job.future

    async def commit_run_async(
        self,
        expected: RunRow,
        row: RunRow,
        namespace: str,
        puts: Sequence[Record] = (),
        deletes: Sequence[str] = (),
    ) -> bool:
        job = _run_commit_job(expected, row, namespace, puts, deletes)
        return await self._queue_async(job)  # type: ignore[return-value]

    def _writer_leads(self) -> None:
        """Have the writer thread lead the next group, for work sent from an event loop."""
        if self._writer is None or not self._writer.is_alive():
            self._writer = threading.Thread(
                target=self._write_forever, name="cloudwright-nb writer", daemon=True
            )
            self._writer.start()
        self._writer_turn.set()

    def _write_forever(self) -> None:
        while True:
            self._writer_turn.wait()
            self._writer_turn.clear()
            with self._group_lock:
                waiting = bool(self._queue)
            if waiting:
                # On a closed store the group fails with "store is closed", as a caller's would.
                self._write_group()
            if self._closed.is_set() and not self._writer_turn.is_set():
                return

    def _leave_queue(self, job: _Job) -> None:
        """Take an interrupted caller's work out of the queue, handing on its turn to lead."""
        with self._group_lock:
            # A job a group has taken already commits or fails with that group.
            if job in self._queue:
                self._queue.remove(job)
            if self._leader is job:
                self._hand_over()

    def _write_group(self, own: _Job | None = None) -> None:
        """Commit every queued job as one group; `own` is the leading caller's job, if any."""
        group: list[_Job] = []
        self._committed = None
        try:
            with self._group_lock:
                group, self._queue = self._queue, []
            self._commit(group)
        except BaseException:
            if self._committed is not group:
                # The leading caller was interrupted (Ctrl-C) before the commit: its work is
                # dropped, and the others' goes back to the front of the queue.
                others = [job for job in group if job is not own]
                for job in others:
                    job.result = job.error = None
                with self._group_lock:
                    self._queue[:0] = others
                group = [own] if own is not None else []
            raise
        finally:
            self._finish(group)
            with self._group_lock:
                self._hand_over()

    def _hand_over(self) -> None:
        """Wake the next caller in line to lead, or mark the store idle; hold _group_lock."""
        if not self._queue:
            self._leader = None
        elif self._queue[0].wake is not None:
            self._leader = self._queue[0]
            self._queue[0].wake.set()
        else:
            self._leader = _WRITER
            self._writer_leads()

    def _finish(self, group: list[_Job]) -> None:
        """Wake every caller in a group that has committed or failed."""
        settled: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        for job in group:
            job.finished = True
            if job.wake is not None:
                job.wake.set()
            elif job.future is not None:
                settled.setdefault(job.future.get_loop(), []).append(job)
        for loop, jobs in settled.items():
            with contextlib.suppress(RuntimeError):  # the loop has closed, so no task waits
                loop.call_soon_threadsafe(_settle, jobs)

    def _commit(self, group: list[_Job]) -> None:
        """Run each job's work in one transaction and commit it; each job keeps its own error."""
        try:
            db = self._connection()
        except (StoreError, sqlite3.DatabaseError) as error:
            for job in group:
                job.error = (
                    self._error("write to", error)
                    if isinstance(error, sqlite3.DatabaseError)
                    else error
                )
            return
        transaction = _SQLiteTransaction(db)
        began = False
        try:
            if db.in_transaction:
                # An interrupt (Ctrl-C) left this thread's last transaction open, holding the
                # write lock. Nothing in it was acknowledged, so roll it back.
                db.execute("ROLLBACK")
            db.execute("BEGIN IMMEDIATE")
            began = True
            if len(group) == 1:
                written = group[0].run(transaction)
            else:
                failed = self._run_group(db, transaction, group)
                if failed is not None:
                    # Work without a savepoint failed: commit the rest afresh, without it.
                    db.execute("ROLLBACK")
                    if isinstance(failed.error, sqlite3.DatabaseError):
                        failed.error = self._error("write to", failed.error)
                    self._commit_again([other for other in group if other is not failed])
                    return
                written = True
            db.execute("COMMIT" if written else "ROLLBACK")
        except BaseException as error:
            if began and not db.in_transaction and not isinstance(error, Exception):
                # An interrupt that arrived during COMMIT is raised once it has finished, so
                # every job keeps its outcome.
                self._committed = group
                raise
            # The whole group is lost: a failed COMMIT, or an interrupt while some work ran.
            if db.in_transaction:
                db.execute("ROLLBACK")
            lost: BaseException = error
            if isinstance(error, sqlite3.DatabaseError):
                lost = self._error("write to", error)
            for job in group:
                job.error = lost
            if not isinstance(error, Exception):
                raise
            return
        for job in group:
            if isinstance(job.error, sqlite3.DatabaseError):
                job.error = self._error("write to", job.error)

    def _run_group(
        self, db: sqlite3.Connection, transaction: Transaction, group: list[_Job]
    ) -> _Job | None:
        """Run a group's jobs in the open transaction; return a job without a savepoint that
        failed, after which the transaction must be rolled back."""
        rest = group
        updates = [job for job in group if job.run_update is not None]
        if len(updates) > 1 and _UPDATE_FROM:
            failed = _update_runs(db, transaction, updates)
            if failed is not None:
                return failed
            rest = [job for job in group if job.run_update is None]
        for job in rest:
            if not job.savepoint:
                if not job.run(transaction):
                    return job
                continue
            db.execute("SAVEPOINT job")
            if not job.run(transaction):
                db.execute("ROLLBACK TO job")
            db.execute("RELEASE job")
        return None

    def _commit_again(self, group: list[_Job]) -> None:
        """Commit a group afresh after a job without a savepoint failed and was left out."""
        for job in group:
            job.result = None
            job.error = None
        if group:
            self._commit(group)

    def read(self, namespace: str, ids: Sequence[str]) -> dict[str, Record]:
        with self._errors("read"):
            return _read(self._connection(), namespace, ids)

    def read_blobs(self, namespace: str, ids: Sequence[str]) -> dict[str, bytes]:
        # Every get comes here. A try statement costs less than entering _errors, and a value
        # read needs no Record objects.
        try:
            db = self._connection()
            moment = now()
            if len(ids) == 1:
                # fetchone() steps past the only row, and the sqlite3 module resets a statement
                # that reaches its end, so no read snapshot stays open to hide the next write.
                row = db.execute(_SELECT_BLOB, (namespace, ids[0], moment)).fetchone()
                return {} if row is None else {ids[0]: row[0]}

            found: dict[str, bytes] = {}
            for chunk, marks in _chunks(ids):
                rows = db.execute(
                    f"SELECT id, blob FROM records WHERE ns = ? AND id IN ({marks}) "
                    f"AND {_UNEXPIRED}",
                    (namespace, *chunk, moment),
                )
                found.update(rows)
            return found
        except sqlite3.DatabaseError as error:
            raise self._error("read", error) from None

    def scan(self, namespace: str, after: str | None = None, limit: int = 500) -> list[Record]:
        with self._errors("read"):
            rows = self._connection().execute(
                f"SELECT id, blob, expires_at FROM records WHERE ns = ? AND id > ? "
                f"AND {_UNEXPIRED} ORDER BY id LIMIT ?",
                (namespace, after or "", now(), limit),
            )
            return [Record(*row) for row in rows]

    def count(self, namespace: str) -> int:
        with self._errors("read"):
            return (
                self._connection()
                .execute(
                    f"SELECT COUNT(*) FROM records WHERE ns = ? AND {_UNEXPIRED}",
                    (namespace, now()),
                )
                .fetchone()[0]
            )

    def namespaces(self, prefix: str) -> list[str]:
        with self._errors("read"):
            rows = self._connection().execute(
                "SELECT DISTINCT ns FROM records WHERE substr(ns, 1, ?) = ? ORDER BY ns",
                (len(prefix), prefix),
            )
            return [row[0] for row in rows]

    def get_run(self, app: str, run_id: str) -> RunRow | None:
        with self._errors("read"):
            return _get_run(self._connection(), app, run_id)

    def changed_runs(self, app: str, expected: Sequence[RunRow]) -> dict[str, RunRow | None]:
        # SQLite compares the rows, so the usual result, no run changed, costs one step of one
        # statement per chunk instead of a row per run.
        changed: dict[str, RunRow | None] = {}
        with self._errors("read"):
            db = self._connection()
            for chunk in _run_chunks(expected):
                parameters = [value for row in chunk for value in (row.run_id, *_run_fields(row))]
                rows = db.execute(_changed_runs_query(len(chunk)), (*parameters, app))
                for run_id, *stored in rows:
                    changed[run_id] = RunRow(*stored) if stored[0] is not None else None
        return changed

    def list_runs(
        self, app: str, statuses: Iterable[str] | None = None, limit: int | None = None
    ) -> list[RunRow]:
        query = f"SELECT {_RUN_COLUMNS} FROM runs WHERE app = ? AND {_UNEXPIRED}"
        parameters: list[object] = [app, now()]
        if statuses is not None:
            wanted = list(statuses)
            query += f" AND status IN ({','.join('?' * len(wanted))})"
            parameters += wanted
        query += " ORDER BY created_at DESC, run_id DESC"
        if limit is not None:
            query += " LIMIT ?"
            parameters.append(limit)
        with self._errors("read"):
            return [RunRow(*row) for row in self._connection().execute(query, parameters)]

    def delete_runs(self, app: str, run_ids: Sequence[str]) -> None:
        def work(transaction: Transaction) -> None:
            db = transaction._db  # type: ignore[attr-defined]
            for run_id in run_ids:
                db.execute("DELETE FROM runs WHERE app = ? AND run_id = ?", (app, run_id))
                db.execute("DELETE FROM records WHERE ns = ?", (context_namespace(app, run_id),))

        self.transact(work)

    def get_app(self, namespace: str) -> AppRow | None:
        with self._errors("read"):
            row = (
                self._connection()
                .execute("SELECT ns, name_blob, fingerprints FROM apps WHERE ns = ?", (namespace,))
                .fetchone()
            )
            return _app_row(row) if row else None

    def list_apps(self) -> list[AppRow]:
        with self._errors("read"):
            rows = self._connection().execute("SELECT ns, name_blob, fingerprints FROM apps")
            return [_app_row(row) for row in rows]

    def purge_expired(self, batch: int = PURGE_BATCH) -> int:
        """Delete up to `batch` expired records and runs in one short transaction."""
        moment = now()

        def work(transaction: Transaction) -> int:
            db = transaction._db  # type: ignore[attr-defined]
            removed = db.execute(
                "DELETE FROM records WHERE (ns, id) IN (SELECT ns, id FROM records "
                "WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)",
                (moment, batch),
            ).rowcount
            removed += db.execute(
                "DELETE FROM runs WHERE (app, run_id) IN (SELECT app, run_id FROM runs "
                "WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)",
                (moment, batch),
            ).rowcount
            return removed

        return self.transact(work)

    def _start_purger(self) -> None:
        if self._purger is None:
            self._purger = threading.Thread(
                target=self._purge_forever, name="cloudwright-nb purge", daemon=True
            )
            self._purger.start()

    def _purge_forever(self) -> None:
        # Bounded batches keep each write transaction short, so runners never queue behind
        # a purge for long.
        while not self._closed.wait(1.0):
            try:
                while self.purge_expired() == PURGE_BATCH and not self._closed.is_set():
                    pass
            except StoreError as error:
                log.warning("purging expired records from %s failed: %s", self.url, error)
            if self._closed.wait(PURGE_EVERY_SECONDS):
                return

    def close(self) -> None:
        """Close the connections no thread is using; a thread still running closes its own.

        Closing a connection while another thread runs a statement on it crashes SQLite, so
        connections of live threads are left to those threads, which close them on next use.
        """
        self._closed.set()
        if self._purger is not None and self._purger is not threading.current_thread():
            self._purger.join(timeout=30)
        if self._writer is not None and self._writer is not threading.current_thread():
            self._writer_turn.set()
            self._writer.join(timeout=30)
        live = {thread.ident for thread in threading.enumerate()}
        me = threading.get_ident()
        with self._connections_lock:
            for ident, db in list(self._connections.items()):
                if ident == me or ident not in live:
                    db.close()
                    del self._connections[ident]
        self._local = threading.local()
