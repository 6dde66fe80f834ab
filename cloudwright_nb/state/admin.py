"""Whole-store maintenance: master key rotation, and moving an application's state as JSON lines."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import IO, Any

from ..errors import CloudWrightError, InvalidValueError, StateDecryptionError
from . import codec
from .crypto import AppCipher, MasterKey, RegistryCipher, sealed_by
from .module import MAX_TTL_SECONDS, StateModule
from .stores import AppRow, Record, Store, Transaction
from .stores.base import now
from .vault import Vault

_PAGE = 500


def rotate_keys(store: Store, master_keys: Sequence[MasterKey]) -> int:
    """Re-encrypt every record of every application under the first master key.

    Records are re-sealed page by page, each page in its own transaction, so the store stays
    usable while it runs and a rotation that stops half way can simply be run again. Returns the
    number of records and runs re-encrypted.
    """
    registry = RegistryCipher(master_keys)
    first = master_keys[0]
    names = _check_rotation(store, master_keys, registry)
    rotated = 0
    for app_row in store.list_apps():
        app = names[app_row.namespace]
        cipher = AppCipher(app, master_keys)
        for namespace in store.namespaces(f"{app_row.namespace}/"):
            rotated += _rotate_namespace(store, cipher, namespace, first)
        rotated += _rotate_runs(store, cipher, app_row.namespace, first)

        def finish(transaction: Transaction, row: AppRow = app_row, name: str = app) -> None:
            transaction.put_app(
                AppRow(row.namespace, registry.seal_name(row.namespace, name), (first.fingerprint,))
            )

        store.transact(finish)
    return rotated


def _check_rotation(
    store: Store, master_keys: Sequence[MasterKey], registry: RegistryCipher
) -> dict[str, str]:
    """Return every application's name, or raise before anything changes if a key is missing."""
    held = {key.fingerprint for key in master_keys}
    names: dict[str, str] = {}
    problems = []
    for app_row in store.list_apps():
        try:
            names[app_row.namespace] = registry.open_name(app_row.namespace, app_row.name_blob)
        except StateDecryptionError:
            problems.append(
                f"application entry {app_row.namespace[:12]} is sealed under master key "
                f"{sealed_by(app_row.name_blob).hex()}"
            )
            continue
        missing = [fingerprint for fingerprint in app_row.fingerprints if fingerprint not in held]
        vault = Vault(names[app_row.namespace], store, master_keys)
        if missing and vault.sealed_under(missing):
            problems.append(
                f"application {names[app_row.namespace]!r} has records under master key "
                f"{', '.join(missing)}"
            )
    if problems:
        raise StateDecryptionError(
            f"cannot rotate the keys of {store.url}: {'; '.join(problems)}. Add those keys after "
            "the new one in CLOUDWRIGHT_MASTER_KEY and run it again; nothing was changed"
        )
    return names


def _sealed_by(blob: bytes, key: MasterKey) -> bool:
    return sealed_by(blob) == key.fingerprint_bytes


def _rotate_namespace(store: Store, cipher: AppCipher, namespace: str, first: MasterKey) -> int:
    rotated = 0
    after = None
    while True:
        page = store.scan(namespace, after=after, limit=_PAGE)
        moves: list[tuple[Record, Record]] = []
        for record in page:
            name, payload = cipher.open(namespace, record.id, record.blob)
            new_id = cipher.record_id(namespace, name)
            if new_id == record.id and _sealed_by(record.blob, first):
                continue
            sealed = Record(
                new_id, cipher.seal(namespace, new_id, name, payload), record.expires_at
            )
            moves.append((record, sealed))

        def work(transaction: Transaction, moves: list[tuple[Record, Record]] = moves) -> None:
            for old, new in moves:
                transaction.put(namespace, new)
                if old.id != new.id:
                    transaction.delete(namespace, old.id)

        if moves:
            store.transact(work)
            rotated += len(moves)
        if len(page) < _PAGE:
            return rotated
        after = page[-1].id


def _rotate_runs(store: Store, cipher: AppCipher, app: str, first: MasterKey) -> int:
    runs_namespace = f"{app}/runs"
    rows = [row for row in store.list_runs(app) if not _sealed_by(row.blob, first)]
    for row in rows:
        _, payload = cipher.open(runs_namespace, row.run_id, row.blob, check_id=False)
        blob = cipher.seal(runs_namespace, row.run_id, row.run_id, payload)

        def work(transaction: Transaction, run_id: str = row.run_id, blob: bytes = blob) -> None:
            current = transaction.get_run(app, run_id)
            if current is not None:
                transaction.put_run(replace(current, blob=blob))

        store.transact(work)
    return len(rows)


def export_state(state: StateModule) -> Iterator[str]:
    """Yield one JSON line per key: its name, its value and when it expires (ISO 8601, UTC)."""
    for key, value in state.items():
        expires_at = state.expires_at(key)
        line = {
            "key": key,
            "value": value,
            "expires_at": expires_at.isoformat() if expires_at else None,
        }
        yield json.dumps(line, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class ImportReport:
    """The outcome of `import_state`: keys written, keys skipped as expired, expiries shortened."""

    written: int
    expired: int
    shortened: int


def import_state(
    state: StateModule, lines: Iterable[str] | IO[str], source: str = "input"
) -> ImportReport:
    """Write the keys of JSON lines made by `export_state`, keeping their expiry.

    Every line is checked before anything is written, so a bad file changes nothing. Keys whose
    expiry has passed are left out, and expiries more than 365 days ahead are shortened to 365.
    """
    entries: list[tuple[str, Any, float]] = []
    expired = shortened = 0
    moment = now()
    numbered = enumerate(lines, start=1)
    number = 0
    while True:
        try:
            number, line = next(numbered)
        except StopIteration:
            break
        except UnicodeDecodeError as error:
            raise InvalidValueError(
                f"{source} line {number + 1} is not UTF-8 text ({error.reason}); "
                "import a file written by `cloudwright state export`"
            ) from None
        if not line.strip():
            continue
        entry = _parse_line(line, number, source)
        try:
            codec.encode_value(codec.check_key(entry["key"]), entry["value"])
        except CloudWrightError as error:
            raise type(error)(f"{source} line {number}: {error}") from None
        remaining = _remaining_seconds(entry.get("expires_at"), moment, number, source)
        if remaining <= 0:
            expired += 1
            continue
        if remaining > MAX_TTL_SECONDS:
            shortened += 1
        entries.append((entry["key"], entry["value"], min(remaining, MAX_TTL_SECONDS)))

    for key, value, remaining in entries:
        state.set(key, value, ttl=remaining)
    return ImportReport(len(entries), expired, shortened)


def _parse_line(line: str, number: int, source: str) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as error:
        raise InvalidValueError(f"{source} line {number} is not JSON: {error}") from None
    if not isinstance(entry, dict) or "key" not in entry or "value" not in entry:
        raise InvalidValueError(
            f'{source} line {number} must be an object with "key" and "value", '
            "as `cloudwright state export` writes"
        )
    return entry


def _remaining_seconds(expires_at: Any, moment: float, number: int, source: str) -> float:
    if expires_at is None:
        return 30 * 86400
    try:
        when = datetime.fromisoformat(expires_at)
    except (TypeError, ValueError):
        raise InvalidValueError(
            f"{source} line {number} has expires_at {expires_at!r}, which is not an ISO 8601 time"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return math.floor(when.timestamp() - moment)
