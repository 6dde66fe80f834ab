"""The store protocol: what every backend (memory, SQLite, Firestore) must do.

Stores hold opaque bytes. They never see a key name, a value or an application name: records
are addressed by a namespace and an id that are both hashes, and only expiry times, run
scheduling fields and ids are readable. Encryption and JSON live above this layer, so a new
backend cannot get them wrong.

Times are floats of seconds since the epoch, in UTC. Stores keep them to the microsecond (the
precision of a Firestore timestamp), so a time rounded to six decimals reads back unchanged.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

LIVE_STATUSES = ("pending", "running", "waiting")
END_STATUSES = ("succeeded", "failed", "cancelled")
RUN_STATUSES = LIVE_STATUSES + END_STATUSES


@dataclass(frozen=True)
class Record:
    """One sealed value: a state key, a context key of a run."""

    id: str
    blob: bytes
    expires_at: float | None


@dataclass(frozen=True)
class AppRow:
    """An application's entry: its sealed name and the master keys that wrote its records."""

    namespace: str
    name_blob: bytes
    fingerprints: tuple[str, ...]


@dataclass(frozen=True)
class RunRow:
    """A run as stored: scheduling fields in clear, everything else sealed in `blob`."""

    app: str
    run_id: str
    status: str
    step_index: int
    next_check_at: float | None
    lease_holder: str | None
    lease_expires_at: float | None
    created_at: float
    updated_at: float
    expires_at: float | None
    blob: bytes


class Transaction(ABC):
    """Reads and writes that commit together or not at all.

    Backends that retry on conflict (Firestore) may call the transaction function more than
    once, so the function must do all its reads through the transaction and keep no effects
    outside it. Reads come before writes.
    """

    @abstractmethod
    def read(self, namespace: str, ids: Sequence[str]) -> dict[str, Record]:
        """Return the unexpired records among `ids`; missing and expired ids are left out."""

    @abstractmethod
    def put(self, namespace: str, record: Record) -> None:
        """Create or replace a record."""

    @abstractmethod
    def delete(self, namespace: str, record_id: str) -> None:
        """Remove a record; removing a missing record does nothing."""

    @abstractmethod
    def set_expiry(self, namespace: str, expires_at: float | None) -> None:
        """Set the expiry of every record in a namespace (a run's context when it ends)."""

    @abstractmethod
    def get_run(self, app: str, run_id: str) -> RunRow | None:
        """Return the run, whether or not it has expired."""

    @abstractmethod
    def put_run(self, row: RunRow) -> None:
        """Create or replace a run."""

    @abstractmethod
    def get_app(self, namespace: str) -> AppRow | None:
        """Return an application's entry, or None before its first write."""

    @abstractmethod
    def put_app(self, row: AppRow) -> None:
        """Create or replace an application's entry."""


class Store(ABC):
    """A place where records and runs live, shared by every process that opens the same URL.

    Reads outside a transaction see the latest committed data; nothing is cached between calls.
    """

    url: str
    # True when a read is a short local file or memory access, quick enough to make on an
    # event loop's own thread. A store that reads over the network leaves this False.
    reads_are_local = False

    @abstractmethod
    def transact(self, work: Callable[[Transaction], T]) -> T:
        """Run `work` in a transaction and commit it; if `work` raises, nothing is written."""

    @abstractmethod
    def read(self, namespace: str, ids: Sequence[str]) -> dict[str, Record]:
        """Return the unexpired records among `ids`, in one round trip."""

    def read_blobs(self, namespace: str, ids: Sequence[str]) -> dict[str, bytes]:
        """Return the sealed blobs of the unexpired records among `ids`, by id, in one round trip.

        This is `read` without the expiry times, which value reads never need. Stores may
        override it with a leaner query.
        """
        return {record_id: record.blob for record_id, record in self.read(namespace, ids).items()}

    @abstractmethod
    def scan(self, namespace: str, after: str | None = None, limit: int = 500) -> list[Record]:
        """Return up to `limit` unexpired records with ids greater than `after`, ordered by id."""

    @abstractmethod
    def count(self, namespace: str) -> int:
        """Return how many unexpired records a namespace holds."""

    @abstractmethod
    def namespaces(self, prefix: str) -> list[str]:
        """Return the namespaces that start with `prefix` and hold at least one record."""

    @abstractmethod
    def get_run(self, app: str, run_id: str) -> RunRow | None:
        """Return the run, whether or not it has expired."""

    def changed_runs(self, app: str, expected: Sequence[RunRow]) -> dict[str, RunRow | None]:
        """Return, by id, the runs that are no longer stored exactly as `expected` has them.

        Each changed run maps to the run as stored now, or to None if it is gone. A run that
        is unchanged is left out, so a store can check many runs and send back only the few
        that changed.
        """
        stored = {row.run_id: self.get_run(app, row.run_id) for row in expected}
        return {row.run_id: stored[row.run_id] for row in expected if stored[row.run_id] != row}

    @abstractmethod
    def list_runs(
        self, app: str, statuses: Iterable[str] | None = None, limit: int | None = None
    ) -> list[RunRow]:
        """Return an application's unexpired runs, newest first, optionally of some statuses."""

    @abstractmethod
    def delete_runs(self, app: str, run_ids: Sequence[str]) -> None:
        """Remove runs and their context records."""

    @abstractmethod
    def get_app(self, namespace: str) -> AppRow | None:
        """Return an application's entry, or None before its first write."""

    @abstractmethod
    def list_apps(self) -> list[AppRow]:
        """Return every application's entry."""

    def commit_run(
        self,
        expected: RunRow,
        row: RunRow,
        namespace: str,
        puts: Sequence[Record] = (),
        deletes: Sequence[str] = (),
    ) -> bool:
        """Write `row` and the records atomically, only if the stored run still equals `expected`.

        Returns whether it wrote. Stores that can check a version with the write itself do this
        in one round trip.
        """

        def work(transaction: Transaction) -> bool:
            if transaction.get_run(expected.app, expected.run_id) != expected:
                return False
            transaction.put_run(row)
            for record in puts:
                transaction.put(namespace, record)
            for record_id in deletes:
                transaction.delete(namespace, record_id)
            return True

        return self.transact(work)

    async def transact_async(self, work: Callable[[Transaction], T]) -> T:
        """Do what `transact` does without blocking the running event loop.

        `work` runs in another thread, so it must not touch the loop. Stores that can commit
        many callers' work together override this.
        """
        import asyncio  # here, not at the top, so that import cloudwright_nb does not load it

        return await asyncio.to_thread(self.transact, work)

    async def commit_run_async(
        self,
        expected: RunRow,
        row: RunRow,
        namespace: str,
        puts: Sequence[Record] = (),
        deletes: Sequence[str] = (),
    ) -> bool:
        """Do what `commit_run` does without blocking the running event loop."""
        import asyncio

        return await asyncio.to_thread(self.commit_run, expected, row, namespace, puts, deletes)

    def write(self, namespace: str, puts: Sequence[Record], deletes: Sequence[str] = ()) -> None:
        """Write records and delete ids atomically."""

        def work(transaction: Transaction) -> None:
            for record in puts:
                transaction.put(namespace, record)
            for record_id in deletes:
                transaction.delete(namespace, record_id)

        self.transact(work)

    def close(self) -> None:  # noqa: B027 - most stores hold nothing to release
        """Release connections; the store may not be used afterwards."""


def now() -> float:
    """Return the current time, rounded to the microsecond as every store keeps it."""
    # Every read and write calls this, and integer rounding of the nanosecond clock costs a
    # fifth of round(time.time(), 6). The two can differ by one microsecond, because a float
    # of today's time in seconds is only accurate to about 0.24 microseconds.
    return (time.time_ns() + 500) // 1000 / 1e6


def context_namespace(app: str, run_id: str) -> str:
    return f"{app}/run/{run_id}"


def state_namespace(app: str) -> str:
    return f"{app}/state"
