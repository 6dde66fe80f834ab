"""The state module: an application's encrypted key-value store, values as JSON."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

from ..durations import Duration, parse_duration
from ..errors import InvalidValueError, StateKeyError
from . import codec
from .stores import Record, Transaction
from .stores.base import now
from .vault import Vault

DEFAULT_TTL_SECONDS = 30 * 86400
MAX_TTL_SECONDS = 365 * 86400
_PAGE = 500


def ttl_seconds(ttl: Duration | None) -> float:
    if ttl is None:
        return DEFAULT_TTL_SECONDS
    seconds = parse_duration(ttl, name="ttl")
    if seconds > MAX_TTL_SECONDS:
        raise InvalidValueError(f"invalid ttl {ttl!r}: values are kept at most 365 days")
    return seconds


class SealedMapping:
    """Reads shared by the state module and a run's context: one namespace of one vault."""

    def __init__(self, vault: Vault, namespace: str) -> None:
        self._vault = vault
        self._namespace = namespace

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value stored under `key`, or `default` if it is missing or expired."""
        found, value = self._lookup(codec.check_key(key))
        return value if found else default

    def _lookup(self, key: str) -> tuple[bool, Any]:
        vault = self._vault
        ids = vault.ids(self._namespace, key)
        return vault.read_value(
            self._namespace, key, vault.store.read_blobs(self._namespace, ids), ids
        )

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return the stored values of `keys` in one read; missing keys are left out."""
        vault = self._vault
        namespace = self._namespace
        names = [codec.check_key(key) for key in keys]
        ids_by_name = {name: vault.ids(namespace, name) for name in names}
        every_id = [record_id for ids in ids_by_name.values() for record_id in ids]
        blobs = vault.store.read_blobs(namespace, every_id)
        values = {}
        for name, ids in ids_by_name.items():
            present, value = vault.read_value(namespace, name, blobs, ids)
            if present:
                values[name] = value
        return values

    def _records(self) -> Iterator[tuple[str, Record]]:
        self._vault.reading_keys()
        after = None
        while True:
            page = self._vault.store.scan(self._namespace, after=after, limit=_PAGE)
            for record in page:
                name, _ = self._vault.open(self._namespace, record)
                yield name, record
            if len(page) < _PAGE:
                return
            after = page[-1].id

    def keys(self, prefix: str | None = None) -> Iterator[str]:
        """Yield the stored key names (in no particular order), optionally those with `prefix`."""
        for name, _ in self._records():
            if prefix is None or name.startswith(prefix):
                yield name

    def items(self, prefix: str | None = None) -> Iterator[tuple[str, Any]]:
        """Yield (key, value) pairs, read a page at a time."""
        for name, record in self._records():
            if prefix is None or name.startswith(prefix):
                _, data = self._vault.open(self._namespace, record)
                yield name, codec.decode_value(data)

    def __getitem__(self, key: str) -> Any:
        found, value = self._lookup(codec.check_key(key))
        if not found:
            raise StateKeyError(
                f"key {key!r} is not in the store of application "
                f"{self._vault.app!r} (it was never set, deleted or expired)"
            )
        return value

    def __contains__(self, key: object) -> bool:
        return self._lookup(codec.check_key(key))[0]

    def __iter__(self) -> Iterator[str]:
        return self.keys()


class StateModule(SealedMapping):
    """An application's key-value store: JSON values, encrypted, kept 30 days after each write.

    Every read goes to the store, so a value another process wrote is seen by the next read.
    """

    def __init__(self, vault: Vault) -> None:
        super().__init__(vault, vault.state_namespace)

    def __repr__(self) -> str:
        return f"<state of application {self._vault.app!r} in {self._vault.store.url}>"

    @property
    def app(self) -> str:
        return self._vault.app

    def set(self, key: str, value: Any, ttl: Duration | None = None) -> None:
        """Store `value` under `key`; it expires `ttl` after this write (30 days by default)."""
        self.set_many({key: value}, ttl=ttl)

    def set_many(self, values: Mapping[str, Any], ttl: Duration | None = None) -> None:
        """Store several values in one atomic write."""
        expires_at = now() + ttl_seconds(ttl)
        namespace = self._namespace
        records = []
        stale_ids = []
        for key, value in values.items():
            ids = self._vault.ids(namespace, codec.check_key(key))
            records.append(self._vault.seal_value(namespace, key, value, expires_at))
            stale_ids += ids[1:]

        if not stale_ids and not self._vault.needs_registration():
            self._vault.store.write(namespace, records)
            return

        def work(transaction: Transaction) -> None:
            self._vault.register(transaction)
            for record in records:
                transaction.put(namespace, record)
            for record_id in stale_ids:
                transaction.delete(namespace, record_id)

        self._vault.store.transact(work)

    def update(
        self, key: str, fn: Callable[[Any], Any], default: Any = None, ttl: Duration | None = None
    ) -> Any:
        """Atomically replace the value of `key` with `fn(current)` and return the new value.

        `fn` receives `default` when the key is missing. It may be called more than once when
        the store retries a conflicting transaction, so it should have no side effects.
        """
        codec.check_key(key)
        if not callable(fn):
            raise TypeError(
                f"update({key!r}, {fn!r:.40}) needs a function that takes the current value and "
                f"returns the new one; to store a value as it is, call set({key!r}, value)"
            )
        seconds = ttl_seconds(ttl)
        namespace = self._namespace
        ids = self._vault.ids(namespace, key)

        def work(transaction: Transaction) -> Any:
            records = transaction.read(namespace, ids)
            blobs = {record_id: record.blob for record_id, record in records.items()}
            found, current = self._vault.read_value(namespace, key, blobs, ids)
            new_value = fn(current if found else copy.deepcopy(default))
            record = self._vault.seal_value(namespace, key, new_value, now() + seconds)
            self._vault.register(transaction)
            transaction.put(namespace, record)
            for record_id in ids[1:]:
                transaction.delete(namespace, record_id)
            return codec.decode_value(codec.encode_value(key, new_value))

        return self._vault.store.transact(work)

    def delete(self, key: str) -> bool:
        """Remove `key`; return whether it was there."""
        codec.check_key(key)
        namespace = self._namespace
        ids = self._vault.ids(namespace, key)

        def work(transaction: Transaction) -> bool:
            found = transaction.read(namespace, ids)
            for record_id in ids:
                transaction.delete(namespace, record_id)
            return bool(found)

        return self._vault.store.transact(work)

    def expires_at(self, key: str) -> datetime | None:
        """Return when `key` expires (UTC), or None if it is missing."""
        ids = self._vault.ids(self._namespace, codec.check_key(key))
        found = self._vault.store.read(self._namespace, ids)
        record_id = self._vault.first_found(ids, found)
        expires_at = found[record_id].expires_at if record_id is not None else None
        return datetime.fromtimestamp(expires_at, timezone.utc) if expires_at is not None else None

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        if not self.delete(key):
            raise StateKeyError(f"key {key!r} is not in the store of application {self.app!r}")

    def __len__(self) -> int:
        self._vault.reading_keys()
        return self._vault.store.count(self._namespace)

    async def aget(self, key: str, default: Any = None) -> Any:
        """`get` for `async def` code: the store call runs in a worker thread."""
        return await asyncio.to_thread(self.get, key, default)

    async def aset(self, key: str, value: Any, ttl: Duration | None = None) -> None:
        await asyncio.to_thread(self.set, key, value, ttl)

    async def aupdate(
        self, key: str, fn: Callable[[Any], Any], default: Any = None, ttl: Duration | None = None
    ) -> Any:
        return await asyncio.to_thread(self.update, key, fn, default, ttl)

    async def adelete(self, key: str) -> bool:
        return await asyncio.to_thread(self.delete, key)
