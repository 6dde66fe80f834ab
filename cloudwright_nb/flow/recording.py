"""A transaction stand-in that lets a commit be sent as one conditional write."""

from __future__ import annotations

from collections.abc import Sequence

from ..state.stores import AppRow, Record, RunRow, Transaction


class NeedsTransaction(Exception):
    """Raised inside a recorded commit that needs more than one conditional write."""


class RecordingTransaction(Transaction):
    """Serves a commit from the run read before the step and records what it writes."""

    def __init__(self, run: RunRow, namespace: str) -> None:
        self._read = run
        self.namespace = namespace
        self.run: RunRow | None = None
        self.puts: list[Record] = []
        self.deletes: list[str] = []

    def get_run(self, app: str, run_id: str) -> RunRow | None:
        return self.run or self._read

    def put_run(self, row: RunRow) -> None:
        self.run = row

    def put(self, namespace: str, record: Record) -> None:
        if namespace != self.namespace:
            raise NeedsTransaction
        self.puts.append(record)

    def delete(self, namespace: str, record_id: str) -> None:
        if namespace != self.namespace:
            raise NeedsTransaction
        self.deletes.append(record_id)

    def read(self, namespace: str, ids: Sequence[str]) -> dict[str, Record]:
        raise NeedsTransaction

    def set_expiry(self, namespace: str, expires_at: float | None) -> None:
        raise NeedsTransaction

    def get_app(self, namespace: str) -> AppRow | None:
        raise NeedsTransaction

    def put_app(self, row: AppRow) -> None:
        raise NeedsTransaction
