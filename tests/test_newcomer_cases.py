"""Inputs a new user tried that once got a traceback, a stale message or a silent surprise."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cloudwright_nb import CloudWright, InvalidValueError, StateDecryptionError
from cloudwright_nb.cli import main
from cloudwright_nb.state.admin import rotate_keys
from conftest import new_master_key, subprocess_env

CLOUDWRIGHT = str(Path(sys.executable).parent / "cloudwright")


@pytest.fixture
def store(sqlite_url: str, master_key: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CLOUDWRIGHT_STORE", sqlite_url)
    return sqlite_url


def record_blobs(sqlite_url: str) -> list[bytes]:
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        return sorted(blob for (blob,) in db.execute("SELECT blob FROM records"))


def run_cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLOUDWRIGHT, *args], cwd=cwd, env=subprocess_env(**env), capture_output=True, text=True
    )


def test_lone_surrogates_round_trip_in_keys_and_values(state) -> None:
    state.set("k\udcff", {"\udc80": "\ud800"})

    assert state.get("k\udcff") == {"\udc80": "\ud800"}
    assert list(state.keys()) == ["k\udcff"]


def test_integer_too_long_for_text_is_refused(state) -> None:
    with pytest.raises(InvalidValueError, match="more digits than Python converts"):
        state.set("big", {"n": 10**5000})


def test_deeply_nested_value_is_refused(state) -> None:
    value: list = []
    for _ in range(5000):
        value = [value]

    with pytest.raises(InvalidValueError, match="nested too deeply"):
        state.set("deep", value)


def test_succeeded_retry_leaves_no_error(cloudflow) -> None:
    @cloudflow.step(retries=2)
    def flaky(context):
        if context.attempt < 3:
            raise ConnectionError(f"transient failure {context.attempt}")
        return cloudflow.CONTINUE

    run = cloudflow.run(flaky, interval="10ms")

    assert run.status == "succeeded"
    assert run.error is None


def test_writing_twice_records_a_key_fingerprint_once(store) -> None:
    for _ in range(3):
        CloudWright.reset()
        CloudWright.configure(app="fingerprints", store=store)
        CloudWright.get_module("state").set("x", 1)

    (entry,) = CloudWright.store().list_apps()
    assert len(entry.fingerprints) == 1


def test_rotation_missing_a_key_changes_nothing(store, monkeypatch) -> None:
    other_key = new_master_key()
    CloudWright.configure(app="mine", store=store)
    CloudWright.get_module("state").set("a", 1)
    monkeypatch.setenv("CLOUDWRIGHT_MASTER_KEY", other_key)
    CloudWright.reset()
    CloudWright.configure(app="theirs", store=store)
    CloudWright.get_module("state").set("b", 2)
    before = record_blobs(store)

    new_key = new_master_key()
    monkeypatch.setenv("CLOUDWRIGHT_MASTER_KEY", f"{new_key},{other_key}")
    CloudWright.reset()
    with pytest.raises(StateDecryptionError, match="nothing was changed"):
        rotate_keys(CloudWright.store(), CloudWright.master_keys())

    after = record_blobs(store)
    assert after == before


def test_run_id_and_interval_are_checked_before_the_script_runs(store, tmp_path) -> None:
    script = tmp_path / "touches.py"
    marker = tmp_path / "ran"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")

    bad_id = run_cli("run", str(script), "--run-id", "../../etc")
    bad_interval = run_cli("run", str(script), CLOUDWRIGHT_INTERVAL="abc")

    assert bad_id.returncode == 2
    assert "invalid run id '../../etc'" in bad_id.stderr
    assert bad_interval.returncode == 2
    assert "invalid CLOUDWRIGHT_INTERVAL 'abc'" in bad_interval.stderr
    assert not marker.exists()


def test_ttl_message_quotes_what_was_typed(store, capsys) -> None:
    assert main(["state", "set", "k", "v", "--ttl", "400d", "--app", "a"]) == 1

    assert "invalid ttl '400d'" in capsys.readouterr().err


def test_setting_a_huge_number_is_one_line(store) -> None:
    result = run_cli("state", "set", "big", "1" * 5000, "--app", "a")

    assert result.returncode == 2
    assert "quote it" in result.stderr
    assert "Traceback" not in result.stderr


def test_import_of_a_non_utf8_file_is_one_line(store, tmp_path) -> None:
    dump = tmp_path / "utf16.jsonl"
    dump.write_bytes("\ufeff{}".encode("utf-16"))

    result = run_cli("state", "import", str(dump), "--app", "a")

    assert result.returncode == 1
    assert "line 1 is not UTF-8 text" in result.stderr
    assert "Traceback" not in result.stderr


def test_import_names_the_line_of_an_unstorable_value(store, tmp_path, capsys) -> None:
    dump = tmp_path / "nan.jsonl"
    dump.write_text('{"key": "ok", "value": 1}\n{"key": "bad", "value": NaN}\n')

    assert main(["state", "import", str(dump), "--app", "a"]) == 1

    assert f"{dump} line 2: cannot store key 'bad'" in capsys.readouterr().err


def test_import_reports_expired_and_shortened_keys(store, tmp_path, capsys) -> None:
    dump = tmp_path / "old.jsonl"
    dump.write_text(
        '{"key": "gone", "value": 1, "expires_at": "2001-01-01T00:00:00+00:00"}\n'
        '{"key": "far", "value": 2, "expires_at": "2099-01-01T00:00:00+00:00"}\n'
    )

    assert main(["state", "import", str(dump), "--app", "a"]) == 0

    err = capsys.readouterr().err
    assert "imported 1 key(s)" in err
    assert "skipped 1 key(s) whose expiry has passed" in err
    assert "1 key(s) expired more than 365 days ahead" in err


def test_piping_into_head_ends_quietly(store) -> None:
    CloudWright.configure(app="piped", store=store)
    CloudWright.get_module("state").set_many({f"key-{n:05d}": n for n in range(20000)})

    result = subprocess.run(
        f"{CLOUDWRIGHT} state list --app piped | head -1",
        shell=True,
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )

    assert result.stdout.startswith("key-00000")
    assert "Broken pipe" not in result.stderr


def test_status_shows_the_output_of_every_step(store, capsys) -> None:
    CloudWright.configure(app="printer")
    cloudflow = CloudWright.get_module("cloudflow")

    def first(context):
        print("from the first step")
        return cloudflow.CONTINUE

    def second(context):
        print("from the second step")
        return cloudflow.CONTINUE

    run = cloudflow.run(first, second)
    capsys.readouterr()

    assert main(["status", run.id, "--app", "printer"]) == 0
    output = capsys.readouterr().out
    assert "| from the first step" in output
    assert "| from the second step" in output


def test_sqlite_url_with_a_query_is_refused(tmp_path) -> None:
    with pytest.raises(Exception, match="take no query"):
        CloudWright.configure(app="a", store=f"sqlite:///{tmp_path}/x.db?mode=ro")
        CloudWright.get_module("state")
