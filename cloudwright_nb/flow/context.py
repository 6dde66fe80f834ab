"""The `context` a step receives: the run's own key-value store, written at commit."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator, Mapping
from typing import Any

from ..state import codec
from ..state.module import SealedMapping
from ..state.stores import Record
from ..state.vault import Vault

_DELETED = object()


class Context(SealedMapping):
    """JSON values scoped to one run, encrypted like state.

    Writes are held in memory and committed together with the step's outcome, so a step that
    raises, or whose tick is lost, leaves nothing behind.
    """

    def __init__(
        self, vault: Vault, run_id: str, step: str, attempt: int, inputs: Mapping[str, Any]
    ) -> None:
        super().__init__(vault, vault.context_namespace(run_id))
        self.run_id = run_id
        self.step = step
        self.attempt = attempt
        self.inputs = dict(inputs)
        self._pending: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<context of run {self.run_id} at step {self.step!r}, check {self.attempt}>"

    def _lookup(self, key: str) -> tuple[bool, Any]:
        if key in self._pending:
            value = self._pending[key]
            return (False, None) if value is _DELETED else (True, copy.deepcopy(value))
        return super()._lookup(key)

    def get_many(self, keys: Any) -> dict[str, Any]:
        names = [codec.check_key(key) for key in keys]
        values = super().get_many([name for name in names if name not in self._pending])
        for name in names:
            if name in self._pending and self._pending[name] is not _DELETED:
                values[name] = copy.deepcopy(self._pending[name])
        return values

    def keys(self, prefix: str | None = None) -> Iterator[str]:
        for name in super().keys(prefix):
            if name not in self._pending:
                yield name
        for name, value in self._pending.items():
            if value is not _DELETED and (prefix is None or name.startswith(prefix)):
                yield name

    def items(self, prefix: str | None = None) -> Iterator[tuple[str, Any]]:
        for name in self.keys(prefix):
            yield name, self[name]

    def set(self, key: str, value: Any) -> None:
        """Store `value` under `key` when the step's outcome is committed."""
        data = codec.encode_value(codec.check_key(key), value)
        self._pending[key] = codec.decode_value(data)

    def delete(self, key: str) -> bool:
        """Remove `key` when the step's outcome is committed; return whether it was there."""
        present = key in self
        self._pending[key] = _DELETED
        return present

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    async def aget(self, key: str, default: Any = None) -> Any:
        return await asyncio.to_thread(self.get, key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.set(key, value)

    async def adelete(self, key: str) -> bool:
        return await asyncio.to_thread(self.delete, key)

    def pending_writes(self) -> tuple[list[Record], list[str]]:
        """Return the sealed records to write and the ids to delete at commit."""
        puts, deletes = [], []
        for name, value in self._pending.items():
            ids = self._vault.ids(self._namespace, name)
            if value is _DELETED:
                deletes += ids
            else:
                puts.append(self._vault.seal_value(self._namespace, name, value, None))
                deletes += ids[1:]
        return puts, deletes
