"""`memory://`: a store inside one process, for tests and throwaway notebooks."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from .base import AppRow, Record, RunRow, Store, T, Transaction, context_namespace, now


class _Tables:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Record]] = {}
        self.runs: dict[tuple[str, str], RunRow] = {}
        self.apps: dict[str, AppRow] = {}
        self.lock = threading.RLock()


def _unexpired(records: dict[str, Record], ids: Sequence[str]) -> dict[str, Record]:
    moment = now()
    found = {}
    for record_id in ids:
        record = records.get(record_id)
        if record is not None and (record.expires_at is None or record.expires_at > moment):
            found[record_id] = record
    return found


class _MemoryTransaction(Transaction):
    """Writes in place under the store's lock, keeping an undo log for rollback."""

    def __init__(self, tables: _Tables) -> None:
        self._tables = tables
        self.undo: list[Callable[[], None]] = []

    def _remember(self, table: dict[Any, Any], key: Any) -> None:
        if key in table:
            old = table[key]
            self.undo.append(lambda: table.__setitem__(key, old))
        else:
            self.undo.append(lambda: table.pop(key, None))

    def read(self, namespace: str, ids: Sequence[str]) -> dict[str, Record]:
        return _unexpired(self._tables.records.get(namespace, {}), ids)

    def put(self, namespace: str, record: Record) -> None:
        table = self._tables.records.setdefault(namespace, {})
        self._remember(table, record.id)
        table[record.id] = record

    def delete(self, namespace: str, record_id: str) -> None:
        table = self._tables.records.get(namespace, {})
        if record_id in table:
            self._remember(table, record_id)
            del table[record_id]

    def set_expiry(self, namespace: str, expires_at: float | None) -> None:
        table = self._tables.records.get(namespace, {})
        for record in list(table.values()):
            self.put(namespace, Record(record.id, record.blob, expires_at))

    def get_run(self, app: str, run_id: str) -> RunRow | None:
        return self._tables.runs.get((app, run_id))

    def put_run(self, row: RunRow) -> None:
        self._remember(self._tables.runs, (row.app, row.run_id))
        self._tables.runs[(row.app, row.run_id)] = row

    def get_app(self, namespace: str) -> AppRow | None:
        return self._tables.apps.get(namespace)

    def put_app(self, row: AppRow) -> None:
        self._remember(self._tables.apps, row.namespace)
        self._tables.apps[row.namespace] = row


class MemoryStore(Store):
    """Every store instance with the same URL in one process shares one set of tables."""

    _shared: ClassVar[dict[str, _Tables]] = {}
    _shared_lock = threading.Lock()
    reads_are_local = True

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        with self._shared_lock:
            self._tables = self._shared.setdefault(url, _Tables())
        # Instances opened on one URL share tables, so they must share the lock too.
        self._lock = self._tables.lock

    def transact(self, work: Callable[[Transaction], T]) -> T:
        with self._lock:
            transaction = _MemoryTransaction(self._tables)
            try:
                return work(transaction)
            except BaseException:
                for undo in reversed(transaction.undo):
                    undo()
                raise

    def read(self, namespace: str, ids: Sequence[str]) -> dict[str, Record]:
        with self._lock:
            return _unexpired(self._tables.records.get(namespace, {}), ids)

    def scan(self, namespace: str, after: str | None = None, limit: int = 500) -> list[Record]:
        with self._lock:
            table = self._tables.records.get(namespace, {})
            ids = sorted(record_id for record_id in table if after is None or record_id > after)
            found = _unexpired(table, ids)
            return [found[record_id] for record_id in ids if record_id in found][:limit]

    def count(self, namespace: str) -> int:
        with self._lock:
            table = self._tables.records.get(namespace, {})
            return len(_unexpired(table, list(table)))

    def namespaces(self, prefix: str) -> list[str]:
        with self._lock:
            return sorted(
                name
                for name, table in self._tables.records.items()
                if name.startswith(prefix) and table
            )

    def get_run(self, app: str, run_id: str) -> RunRow | None:
        with self._lock:
            return self._tables.runs.get((app, run_id))

    def list_runs(
        self, app: str, statuses: Iterable[str] | None = None, limit: int | None = None
    ) -> list[RunRow]:
        wanted = set(statuses) if statuses is not None else None
        moment = now()
        with self._lock:
            rows = [
                row
                for (row_app, _), row in self._tables.runs.items()
                if row_app == app
                and (wanted is None or row.status in wanted)
                and (row.expires_at is None or row.expires_at > moment)
            ]
        rows.sort(key=lambda row: (row.created_at, row.run_id), reverse=True)
        return rows[:limit] if limit is not None else rows

    def delete_runs(self, app: str, run_ids: Sequence[str]) -> None:
        with self._lock:
            for run_id in run_ids:
                self._tables.runs.pop((app, run_id), None)
                self._tables.records.pop(context_namespace(app, run_id), None)

    def get_app(self, namespace: str) -> AppRow | None:
        with self._lock:
            return self._tables.apps.get(namespace)

    def list_apps(self) -> list[AppRow]:
        with self._lock:
            return list(self._tables.apps.values())
