"""One application's sealed view of a store: record ids, sealing, and the master key check.

Record ids are HMACs under a key derived from the master key, so a wrong master key would find
nothing and read every value as missing. To rule that out, each application's entry in the
store lists the fingerprints of the master keys that wrote it, and the vault compares them with
the configured keys before its first read or write.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import StateDecryptionError
from . import codec
from .crypto import AppCipher, MasterKey, RegistryCipher, namespace_of, sealed_by
from .stores import AppRow, Record, Store, Transaction
from .stores.base import context_namespace, state_namespace

# Deriving a record id costs an HMAC, so the ids of recently used key names are memoized. With
# one master key an entry takes about 0.3 KB besides the name, so a full memo is about 1.3 MB.
ID_MEMO_SIZE = 4096


class Vault:
    def __init__(self, app: str, store: Store, master_keys: Sequence[MasterKey]) -> None:
        self.app = app
        self.store = store
        self.master_keys = list(master_keys)
        self.namespace = namespace_of(app)
        self.cipher = AppCipher(app, self.master_keys)
        self._registry = RegistryCipher(self.master_keys)
        self._lock = threading.Lock()
        self._reading_keys: list[int] | None = None
        self._registered = False
        # Ids depend only on the namespace, the name and the master keys, never on a stored
        # value, so a memoized id cannot hide another process's write.
        self._memoized_ids = functools.lru_cache(maxsize=ID_MEMO_SIZE)(self._derive_ids)

    @property
    def state_namespace(self) -> str:
        return state_namespace(self.namespace)

    def context_namespace(self, run_id: str) -> str:
        return context_namespace(self.namespace, run_id)

    def reading_keys(self) -> list[int]:
        """Return the indices of the configured master keys that wrote this application.

        Raises StateDecryptionError when the application exists but none of them wrote it.
        """
        with self._lock:
            if self._reading_keys is None:
                self._reading_keys = self._check_keys(self.store.get_app(self.namespace))
            return self._reading_keys

    def _check_keys(self, row: AppRow | None) -> list[int]:
        if row is None:
            return [0]
        held = self.cipher.fingerprints
        indices = [
            index for index, fingerprint in enumerate(held) if fingerprint in row.fingerprints
        ]
        if not indices:
            raise StateDecryptionError(
                f"application {self.app!r} in {self.store.url} was written with master key "
                f"{', '.join(row.fingerprints)}, but the configured key is "
                f"{', '.join(held)}: set CLOUDWRIGHT_MASTER_KEY (or the key file) to the key "
                "that wrote it; nothing was read or changed"
            )
        missing = [fingerprint for fingerprint in row.fingerprints if fingerprint not in held]
        if missing and self.sealed_under(missing):
            # Records sealed under a key we lack would read as missing: refuse instead.
            raise StateDecryptionError(
                f"application {self.app!r} in {self.store.url} still has records written with "
                f"master key {', '.join(missing)}, which is not configured: add it after the "
                "new key in CLOUDWRIGHT_MASTER_KEY (NEW,OLD) and run `cloudwright keys rotate`; "
                "nothing was read or changed"
            )
        if indices[0] != 0:
            # Writes use the first key, so reads must look there too.
            indices.insert(0, 0)
        self._registered = held[0] in row.fingerprints
        return indices

    def sealed_under(self, fingerprints: list[str]) -> bool:
        """Return whether a record or run of the application is sealed under one of `fingerprints`.

        This scans the whole application, which only happens while a key rotation is
        unfinished and the old key is no longer configured.
        """
        wanted = {bytes.fromhex(fingerprint) for fingerprint in fingerprints}
        for namespace in self.store.namespaces(f"{self.namespace}/"):
            after = None
            while page := self.store.scan(namespace, after=after):
                if any(sealed_by(record.blob) in wanted for record in page):
                    return True
                after = page[-1].id
        return any(sealed_by(row.blob) in wanted for row in self.store.list_runs(self.namespace))

    def register(self, transaction: Transaction) -> None:
        """Record in the application's entry that the first master key writes to it.

        Call inside every write transaction; after the first success in this process it costs
        nothing.
        """
        if self._registered:
            return
        row = transaction.get_app(self.namespace)
        self._check_keys(row)
        first = self.cipher.fingerprints[0]
        if row is not None and first in row.fingerprints:
            self._registered = True
            return
        fingerprints = (*row.fingerprints, first) if row else (first,)
        transaction.put_app(
            AppRow(self.namespace, self._registry.seal_name(self.namespace, self.app), fingerprints)
        )
        self._registered = True

    def needs_registration(self) -> bool:
        self.reading_keys()
        return not self._registered

    def ids(self, namespace: str, name: str) -> tuple[str, ...]:
        """Return the ids `name` may have, the id under the writing key first."""
        if self._reading_keys is None:
            self.reading_keys()
        return self._memoized_ids(namespace, name)

    def _derive_ids(self, namespace: str, name: str) -> tuple[str, ...]:
        return tuple(self.cipher.record_id(namespace, name, index) for index in self.reading_keys())

    def seal(self, namespace: str, name: str, data: bytes, expires_at: float | None) -> Record:
        record_id = self.cipher.record_id(namespace, name)
        return Record(record_id, self.cipher.seal(namespace, record_id, name, data), expires_at)

    def seal_value(self, namespace: str, name: str, value: Any, expires_at: float | None) -> Record:
        return self.seal(namespace, name, codec.encode_value(name, value), expires_at)

    def open(self, namespace: str, record: Record, what: str = "key") -> tuple[str, bytes]:
        try:
            return self.cipher.open(namespace, record.id, record.blob)
        except StateDecryptionError as error:
            raise StateDecryptionError(
                f"cannot decrypt a {what} of application {self.app!r}: {error}"
            ) from None

    def first_found(self, ids: Sequence[str], found: Mapping[str, object]) -> str | None:
        """Return the first of `ids` that `found` contains, or None."""
        for record_id in ids:
            if record_id in found:
                return record_id
        return None

    def read_value(
        self, namespace: str, name: str, blobs: Mapping[str, bytes], ids: Sequence[str]
    ) -> tuple[bool, Any]:
        """Decode the value of `name` from the blobs read for `ids`, or return (False, None)."""
        record_id = self.first_found(ids, blobs)
        if record_id is None:
            return False, None
        blob = blobs[record_id]
        try:
            # The id was derived from `name`, so comparing names checks what re-deriving the
            # id would, at a fraction of the cost.
            stored_name, data = self.cipher.open(namespace, record_id, blob, check_id=False)
        except StateDecryptionError as error:
            raise StateDecryptionError(
                f"cannot decrypt key {name!r} of application {self.app!r}: {error}"
            ) from None
        if stored_name != name:
            raise StateDecryptionError(
                f"cannot decrypt key {name!r} of application {self.app!r}: its record contains "
                f"key {stored_name!r}, so it was copied from another key"
            )
        return True, codec.decode_value(data)
