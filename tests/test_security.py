"""Encryption at rest, tamper detection and master keys, checked on real SQLite files.

These tests open the database with the `sqlite3` module, as an attacker with the file would,
and look at the bytes: no value, key name or application name may be readable there.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from cloudwright_nb import CloudWright, MasterKeyError, StateDecryptionError
from cloudwright_nb.state import vault as vault_module
from cloudwright_nb.state.admin import rotate_keys
from cloudwright_nb.state.module import StateModule
from cloudwright_nb.state.stores import Record, open_store
from cloudwright_nb.state.stores.base import now
from conftest import new_master_key

MARKER = f"marker-value-{secrets.token_hex(8)}"
KEY_NAME = f"marker-key-{secrets.token_hex(8)}"
APP_NAME = f"marker-app-{secrets.token_hex(8)}"


def database_path(sqlite_url: str) -> Path:
    return Path(sqlite_url.removeprefix("sqlite:///"))


def open_state(app: str, sqlite_url: str):
    """Configure CloudWright afresh, as a new process would, and return the state module."""
    CloudWright.reset()
    CloudWright.configure(app=app, store=sqlite_url)
    return CloudWright.get_module("state")


def encodings_of(text: str) -> dict[str, bytes]:
    """The byte patterns `text` would leave in a file if stored in a common encoding."""
    data = text.encode("utf-8")
    patterns = {
        "utf-8": data,
        "utf-16-le": text.encode("utf-16-le"),
        "utf-16-be": text.encode("utf-16-be"),
        "utf-32-le": text.encode("utf-32-le"),
        "hex": data.hex().encode(),
        "HEX": data.hex().upper().encode(),
    }
    # Base64 output depends on where the text starts modulo 3 bytes. The first and last four
    # characters also encode neighbouring bytes, so only the interior is matched.
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + data)
        patterns[f"base64+{offset}"] = encoded[4:-4]
        patterns[f"base64url+{offset}"] = base64.urlsafe_b64encode(bytes(offset) + data)[4:-4]
    return patterns


def readable_leaks(path: Path, texts: list[str]) -> list[str]:
    """Return which of `texts`, in which encoding, appear in the bytes of `path`."""
    content = path.read_bytes()
    return [
        f"{text!r} as {encoding}"
        for text in texts
        for encoding, pattern in encodings_of(text).items()
        if pattern in content
    ]


@contextmanager
def database(sqlite_url: str) -> Iterator[sqlite3.Connection]:
    """Open the store's file with the plain `sqlite3` module and commit on success."""
    with closing(sqlite3.connect(database_path(sqlite_url))) as db, db:
        yield db


def records(sqlite_url: str) -> list[tuple[str, str, bytes]]:
    """Return every (namespace, id, blob) row of the records table, in id order."""
    with database(sqlite_url) as db:
        return db.execute("SELECT ns, id, blob FROM records ORDER BY ns, id").fetchall()


def app_rows(sqlite_url: str) -> list[tuple]:
    with database(sqlite_url) as db:
        return db.execute("SELECT * FROM apps ORDER BY 1").fetchall()


def set_blob(sqlite_url: str, record_id: str, blob: bytes) -> None:
    with database(sqlite_url) as db:
        changed = db.execute("UPDATE records SET blob = ? WHERE id = ?", (blob, record_id))
        assert changed.rowcount == 1


def new_record(sqlite_url: str, before: list[tuple[str, str, bytes]]) -> tuple[str, str, bytes]:
    """Return the one row of the records table that is not in `before`."""
    added = [row for row in records(sqlite_url) if row[:2] not in {old[:2] for old in before}]
    assert len(added) == 1, added
    return added[0]


@pytest.fixture
def secured_state(sqlite_url: str, master_key: str):
    return open_state(APP_NAME, sqlite_url)


# Nothing readable on disk


def test_open_database_has_no_plaintext(secured_state, sqlite_url):
    secured_state.set(KEY_NAME, {"note": MARKER, "list": [MARKER]})
    secured_state.set("plain-key", MARKER)
    path = database_path(sqlite_url)
    wal = path.with_name(path.name + "-wal")
    assert wal.exists()

    assert readable_leaks(path, [MARKER, KEY_NAME, APP_NAME]) == []
    assert readable_leaks(wal, [MARKER, KEY_NAME, APP_NAME]) == []


def test_closed_database_has_no_plaintext(secured_state, sqlite_url):
    secured_state.set(KEY_NAME, MARKER)
    secured_state.update(KEY_NAME, lambda value: value + "-updated")

    # Closing the last connection checkpoints the WAL into the database file.
    CloudWright.reset()

    assert readable_leaks(database_path(sqlite_url), [MARKER, KEY_NAME, APP_NAME]) == []


def test_same_value_written_twice_has_different_bytes(secured_state, sqlite_url):
    secured_state.set("greeting", MARKER)
    (first,) = records(sqlite_url)

    secured_state.set("greeting", MARKER)
    (second,) = records(sqlite_url)

    assert first[1] == second[1]
    assert first[2] != second[2]


def test_same_key_in_two_applications_has_different_ids(sqlite_url, master_key):
    open_state("app-one", sqlite_url).set("shared-name", 1)
    open_state("app-two", sqlite_url).set("shared-name", 1)

    rows = records(sqlite_url)

    assert len(rows) == 2
    assert rows[0][1] != rows[1][1]
    assert rows[0][0] != rows[1][0]


# Tampering


@pytest.mark.parametrize(
    "position",
    [0, 1, 8, 9, 20, 21, 30, -17, -1],
    ids=[
        "version",
        "fingerprint-first",
        "fingerprint-last",
        "nonce-first",
        "nonce-last",
        "ciphertext-first",
        "ciphertext-middle",
        "tag-first",
        "tag-last",
    ],
)
def test_flipped_byte_raises_decryption_error(secured_state, sqlite_url, position):
    secured_state.set("account", {"balance": 100, "owner": MARKER})
    (_, record_id, blob) = records(sqlite_url)[0]
    tampered = bytearray(blob)
    tampered[position] ^= 0x01
    set_blob(sqlite_url, record_id, bytes(tampered))

    with pytest.raises(StateDecryptionError) as caught:
        secured_state.get("account")

    assert "account" in str(caught.value)
    assert records(sqlite_url)[0][1:] == (record_id, bytes(tampered))


def test_flipped_byte_fails_listing_too(secured_state, sqlite_url):
    secured_state.set("account", 100)
    (_, record_id, blob) = records(sqlite_url)[0]
    set_blob(sqlite_url, record_id, blob[:-1] + bytes([blob[-1] ^ 0x80]))

    with pytest.raises(StateDecryptionError):
        list(secured_state.items())


def test_ciphertext_copied_to_another_key_fails(secured_state, sqlite_url):
    secured_state.set("alice", {"balance": 100})
    alice = new_record(sqlite_url, [])
    secured_state.set("bob", {"balance": 5})
    bob = new_record(sqlite_url, [alice])

    set_blob(sqlite_url, bob[1], alice[2])

    with pytest.raises(StateDecryptionError) as caught:
        secured_state.get("bob")
    assert "bob" in str(caught.value)
    assert secured_state.get("alice") == {"balance": 100}


def test_ciphertext_copied_to_another_application_fails(sqlite_url, master_key):
    open_state("app-one", sqlite_url).set("balance", 100)
    first = new_record(sqlite_url, [])
    other_state = open_state("app-two", sqlite_url)
    other_state.set("balance", 5)
    second = new_record(sqlite_url, [first])

    set_blob(sqlite_url, second[1], first[2])

    with pytest.raises(StateDecryptionError):
        other_state.get("balance")


def test_row_moved_to_other_app_fails(sqlite_url, master_key):
    open_state("app-one", sqlite_url).set("balance", 100)
    namespace, record_id, blob = new_record(sqlite_url, [])
    other_state = open_state("app-two", sqlite_url)
    other_state.set("unrelated", 1)
    other_namespace = new_record(sqlite_url, [(namespace, record_id, blob)])[0]

    with database(sqlite_url) as db:
        db.execute(
            "INSERT INTO records (ns, id, blob, expires_at) SELECT ?, id, blob, expires_at "
            "FROM records WHERE ns = ? AND id = ?",
            (other_namespace, namespace, record_id),
        )

    # The id is an HMAC under app-one's key, so app-two never looks it up by name, and
    # listing it fails authentication instead of revealing app-one's value.
    assert other_state.get("balance") is None
    with pytest.raises(StateDecryptionError):
        list(other_state.keys())


# Record id memo


def test_memoized_ids_equal_derived_ids(secured_state):
    vault = CloudWright.vault()
    namespace = vault.state_namespace

    first = vault.ids(namespace, "alice")
    again = vault.ids(namespace, "alice")

    assert first == (vault.cipher.record_id(namespace, "alice"),)
    assert again == first
    assert vault.ids(namespace, "bob") != first
    assert vault.ids(vault.context_namespace("run-1"), "alice") != first


def test_record_id_memo_is_bounded(secured_state, monkeypatch):
    monkeypatch.setattr(vault_module, "ID_MEMO_SIZE", 8)
    state = StateModule(CloudWright.vault())
    values = {f"key-{index}": index for index in range(20)}
    state.set_many(values)

    found = state.get_many(list(values))
    memo = state._vault._memoized_ids.cache_info()

    assert found == values
    assert memo.maxsize == 8
    assert memo.currsize == 8
    # Evicted names derive their ids again and still find their values.
    assert state.get("key-0") == 0


# Master keys


@pytest.fixture
def written_with_first_key(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Write three values under one master key and close the store."""
    monkeypatch.setenv("CLOUDWRIGHT_MASTER_KEY", new_master_key())
    values = {"a": 1, "b": [2], "c": {"three": 3}}
    open_state(APP_NAME, sqlite_url).set_many(values)
    CloudWright.reset()
    return values


WRONG_KEY_OPERATIONS = {
    "get": lambda state: state.get("a"),
    "subscript": lambda state: state["a"],
    "in": lambda state: "a" in state,
    "get_many": lambda state: state.get_many(["a", "b"]),
    "expires_at": lambda state: state.expires_at("a"),
    "keys": lambda state: list(state.keys()),
    "items": lambda state: list(state.items()),
    "len": lambda state: len(state),
    "set": lambda state: state.set("new", 1),
    "set_many": lambda state: state.set_many({"new": 1}),
    "update": lambda state: state.update("a", lambda value: 99),
    "delete": lambda state: state.delete("a"),
}


@pytest.mark.parametrize("operation", list(WRONG_KEY_OPERATIONS))
def test_wrong_master_key_fails_first_call(
    written_with_first_key, sqlite_url, monkeypatch, operation
):
    right_key = os.environ["CLOUDWRIGHT_MASTER_KEY"]
    rows_before = records(sqlite_url)
    apps_before = app_rows(sqlite_url)
    monkeypatch.setenv("CLOUDWRIGHT_MASTER_KEY", new_master_key())
    state = open_state(APP_NAME, sqlite_url)

    with pytest.raises(StateDecryptionError) as caught:
        WRONG_KEY_OPERATIONS[operation](state)

    assert "CLOUDWRIGHT_MASTER_KEY" in str(caught.value)
    assert records(sqlite_url) == rows_before
    assert app_rows(sqlite_url) == apps_before
    monkeypatch.setenv("CLOUDWRIGHT_MASTER_KEY", right_key)
    assert dict(open_state(APP_NAME, sqlite_url).items()) == written_with_first_key


def test_wrong_master_key_leaves_other_applications_usable(
    written_with_first_key, sqlite_url, monkeypatch
):
    monkeypatch.setenv("CLOUDWRIGHT_MASTER_KEY", new_master_key())

    state = open_state("a-new-app", sqlite_url)
    state.set("fresh", 1)

    assert state.get("fresh") == 1


def test_key_file_is_created_with_mode_0600(sqlite_url):
    key_file = Path(os.environ["CLOUDWRIGHT_KEY_FILE"])
    assert not key_file.exists()

    open_state(APP_NAME, sqlite_url).set("a", 1)

    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_key_file_creation_is_logged(sqlite_url, caplog):
    key_file = Path(os.environ["CLOUDWRIGHT_KEY_FILE"])

    with caplog.at_level(logging.INFO, logger="cloudwright_nb"):
        open_state(APP_NAME, sqlite_url).set("a", 1)

    assert any(str(key_file) in record.getMessage() for record in caplog.records)


def test_key_file_is_reused_by_next_process(sqlite_url):
    open_state(APP_NAME, sqlite_url).set("a", 1)
    key_file = Path(os.environ["CLOUDWRIGHT_KEY_FILE"])
    contents = key_file.read_bytes()

    assert open_state(APP_NAME, sqlite_url).get("a") == 1
    assert key_file.read_bytes() == contents


def test_malformed_key_file_raises_master_key_error(sqlite_url):
    key_file = Path(os.environ["CLOUDWRIGHT_KEY_FILE"])
    key_file.parent.mkdir(parents=True)
    key_file.write_text("not a key\n")

    with pytest.raises(MasterKeyError) as caught:
        open_state(APP_NAME, sqlite_url).get("a")

    assert str(key_file) in str(caught.value)


def test_deployed_function_without_key_raises_and_creates_none(sqlite_url):
    key_file = Path(os.environ["CLOUDWRIGHT_KEY_FILE"])
    CloudWright.configure(app=APP_NAME, store=sqlite_url, deployed=True)

    with pytest.raises(MasterKeyError) as caught:
        CloudWright.get_module("state").get("a")

    assert "CLOUDWRIGHT_MASTER_KEY" in str(caught.value)
    assert not key_file.exists()


def test_cloud_run_environment_counts_as_deployed(sqlite_url, monkeypatch):
    monkeypatch.setenv("K_SERVICE", "my-function")
    key_file = Path(os.environ["CLOUDWRIGHT_KEY_FILE"])
    CloudWright.configure(app=APP_NAME, store=sqlite_url)

    with pytest.raises(MasterKeyError, match="CLOUDWRIGHT_MASTER_KEY"):
        CloudWright.get_module("state").get("a")

    assert not key_file.exists()


@pytest.mark.parametrize(
    "value",
    [
        "not base64 at all!",
        base64.b64encode(bytes(16)).decode(),
        base64.b64encode(bytes(33)).decode(),
        new_master_key() + ",???",
        new_master_key()[:-4],
    ],
    ids=["not-base64", "16-bytes", "33-bytes", "second-key-bad", "truncated"],
)
def test_malformed_master_key_raises_with_fix(sqlite_url, monkeypatch, value):
    monkeypatch.setenv("CLOUDWRIGHT_MASTER_KEY", value)
    CloudWright.configure(app=APP_NAME, store=sqlite_url)

    with pytest.raises(MasterKeyError) as caught:
        CloudWright.get_module("state").get("a")

    assert "CLOUDWRIGHT_MASTER_KEY" in str(caught.value)
    assert "cloudwright keys generate" in str(caught.value)


# Rotation


@pytest.fixture
def keys() -> dict[str, str]:
    return {"old": new_master_key(), "new": new_master_key()}


def use_keys(monkeypatch: pytest.MonkeyPatch, *keys: str) -> None:
    monkeypatch.setenv("CLOUDWRIGHT_MASTER_KEY", ",".join(keys))


def test_values_under_old_key_read_after_adding_new(sqlite_url, monkeypatch, keys):
    use_keys(monkeypatch, keys["old"])
    open_state(APP_NAME, sqlite_url).set_many({"a": 1, "b": 2})

    use_keys(monkeypatch, keys["new"], keys["old"])
    state = open_state(APP_NAME, sqlite_url)

    assert state.get_many(["a", "b"]) == {"a": 1, "b": 2}
    assert sorted(state.keys()) == ["a", "b"]


def test_writes_go_under_first_key(sqlite_url, monkeypatch, keys):
    use_keys(monkeypatch, keys["old"])
    open_state(APP_NAME, sqlite_url).set("a", 1)
    use_keys(monkeypatch, keys["new"], keys["old"])
    state = open_state(APP_NAME, sqlite_url)

    state.set("written-later", "new")
    state.update("a", lambda value: value + 1)

    use_keys(monkeypatch, keys["new"])
    new_only = open_state(APP_NAME, sqlite_url)
    assert new_only.get("written-later") == "new"
    assert new_only.get("a") == 2


def test_dropping_old_key_before_rotation_fails_instead_of_reading_missing(
    sqlite_url, monkeypatch, keys
):
    use_keys(monkeypatch, keys["old"])
    open_state(APP_NAME, sqlite_url).set("a", 1)
    use_keys(monkeypatch, keys["new"], keys["old"])
    open_state(APP_NAME, sqlite_url).set("b", 2)

    use_keys(monkeypatch, keys["new"])
    new_only = open_state(APP_NAME, sqlite_url)

    with pytest.raises(StateDecryptionError, match="still has records written with master key"):
        new_only.get("a")
    use_keys(monkeypatch, keys["new"], keys["old"])
    assert open_state(APP_NAME, sqlite_url).get_many(["a", "b"]) == {"a": 1, "b": 2}


def test_rewrite_under_new_key_leaves_no_old_copy(sqlite_url, monkeypatch, keys):
    use_keys(monkeypatch, keys["old"])
    open_state(APP_NAME, sqlite_url).set("a", 1)
    use_keys(monkeypatch, keys["new"], keys["old"])

    open_state(APP_NAME, sqlite_url).set("a", 2)

    assert len(records(sqlite_url)) == 1
    assert dict(open_state(APP_NAME, sqlite_url).items()) == {"a": 2}


def test_rotate_keys_moves_values_to_new_key(sqlite_url, monkeypatch, keys):
    values = {"a": 1, "b": [2], "c": {"three": 3}}
    use_keys(monkeypatch, keys["old"])
    open_state(APP_NAME, sqlite_url).set_many(values)
    open_state("second-app", sqlite_url).set("d", 4)
    use_keys(monkeypatch, keys["new"], keys["old"])
    open_state(APP_NAME, sqlite_url)

    rotated = rotate_keys(CloudWright.store(), CloudWright.master_keys())

    assert rotated == 4
    use_keys(monkeypatch, keys["new"])
    assert dict(open_state(APP_NAME, sqlite_url).items()) == values
    assert dict(open_state("second-app", sqlite_url).items()) == {"d": 4}


def test_rotate_keys_again_rotates_nothing(sqlite_url, monkeypatch, keys):
    use_keys(monkeypatch, keys["old"])
    open_state(APP_NAME, sqlite_url).set_many({"a": 1, "b": 2})
    use_keys(monkeypatch, keys["new"], keys["old"])
    open_state(APP_NAME, sqlite_url)
    rotate_keys(CloudWright.store(), CloudWright.master_keys())

    assert rotate_keys(CloudWright.store(), CloudWright.master_keys()) == 0


def test_rotate_keys_keeps_expiry(sqlite_url, monkeypatch, keys):
    use_keys(monkeypatch, keys["old"])
    state = open_state(APP_NAME, sqlite_url)
    state.set("a", 1, ttl="2d")
    before = state.expires_at("a")
    use_keys(monkeypatch, keys["new"], keys["old"])
    open_state(APP_NAME, sqlite_url)

    rotate_keys(CloudWright.store(), CloudWright.master_keys())

    use_keys(monkeypatch, keys["new"])
    assert open_state(APP_NAME, sqlite_url).expires_at("a") == before


def test_old_key_alone_fails_after_rotation(sqlite_url, monkeypatch, keys):
    use_keys(monkeypatch, keys["old"])
    open_state(APP_NAME, sqlite_url).set("a", 1)
    use_keys(monkeypatch, keys["new"], keys["old"])
    open_state(APP_NAME, sqlite_url)
    rotate_keys(CloudWright.store(), CloudWright.master_keys())

    use_keys(monkeypatch, keys["old"])

    with pytest.raises(StateDecryptionError):
        open_state(APP_NAME, sqlite_url).get("a")


def test_new_key_alone_fails_before_rotation(sqlite_url, monkeypatch, keys):
    use_keys(monkeypatch, keys["old"])
    open_state(APP_NAME, sqlite_url).set("a", 1)
    use_keys(monkeypatch, keys["new"], keys["old"])
    open_state(APP_NAME, sqlite_url).set("b", 2)

    use_keys(monkeypatch, keys["new"])
    state = open_state(APP_NAME, sqlite_url)

    with pytest.raises(StateDecryptionError):
        list(state.items())


def test_expired_records_are_purged_in_bounded_batches(sqlite_url) -> None:
    store = open_store(sqlite_url)
    past, future = now() - 10, now() + 3600
    expired = [Record(f"old-{index}", b"x", past) for index in range(5)]
    store.write("app/state", [*expired, Record("live", b"y", future)])

    first = store.purge_expired(batch=2)
    remaining = len(records(sqlite_url))
    while store.purge_expired(batch=2):
        pass

    assert first == 2
    assert remaining == 4
    assert [row[1] for row in records(sqlite_url)] == ["live"]
    store.close()


def test_sealed_records_never_share_a_nonce():
    cipher = CloudWright.vault().cipher
    # Enough seals to draw from the OS several times.
    nonces = {cipher.seal("ns", "id", "key", b"{}")[9:21] for _ in range(20_000)}

    assert len(nonces) == 20_000


def test_forked_child_draws_its_own_nonces():
    from cloudwright_nb.state import crypto

    crypto._NONCES.take()  # The pool now contains nonces the parent has not used yet.
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, crypto._NONCES.take())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read_end, 64)
    os.close(read_end)
    os.close(write_end)

    assert len(child) == 12
    assert child != crypto._NONCES.take()
