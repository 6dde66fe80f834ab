"""What only Firestore needs checked: round trips, lagging TTL deletion, paging, the seed flow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudwright_nb import CloudWright, ConfigurationError, DriverMissingError
from cloudwright_nb.cli import main
from cloudwright_nb.state.stores import Record, RunRow, open_store
from cloudwright_nb.state.stores.base import now
from conftest import ROOT, subprocess_env

sys.path.insert(0, str(ROOT / "bench"))
from roundtrips import measure_all


@pytest.fixture
def firestore_state(firestore_url: str, master_key: str):
    CloudWright.configure(app="firestore-app", store=firestore_url)
    return CloudWright.get_module("state")


def test_round_trips_stay_within_budget(firestore_url: str, master_key: str) -> None:
    figures = measure_all(firestore_url.removeprefix("firestore://"))

    assert figures["state.get"] == {"BatchGetDocuments": 1}
    assert figures["state.set"] == {"Commit": 1}
    assert figures["state.update"] == {"BatchGetDocuments": 1, "Commit": 1}
    assert figures["rerun tick by the runner holding the lease"] == {
        "BatchGetDocuments": 1,
        "Commit": 1,
    }
    # The claim's transaction reads the run and commits, then the outcome is one Commit whose
    # precondition is the update time the claim's commit returned.
    assert figures["rerun tick, fresh process (a function request)"] == {
        "BatchGetDocuments": 1,
        "Commit": 2,
    }


def test_expired_record_still_held_by_firestore_reads_as_missing(firestore_state) -> None:
    firestore_state.set("fresh", "kept")
    vault = CloudWright.vault()
    namespace = vault.state_namespace
    expired = vault.seal_value(namespace, "stale", "old value", now() - 1)
    vault.store.write(namespace, [expired])

    assert vault.store.scan(namespace) != []
    assert firestore_state.get("stale") is None
    assert "stale" not in firestore_state
    assert sorted(firestore_state.keys()) == ["fresh"]
    assert len(firestore_state) == 1
    assert firestore_state.expires_at("stale") is None


def test_listing_pages_through_many_keys(firestore_state) -> None:
    names = [f"key-{index:04d}" for index in range(1234)]
    firestore_state.set_many(dict.fromkeys(names[:600], 1))
    firestore_state.set_many(dict.fromkeys(names[600:], 2))
    store = CloudWright.vault().store
    pages = []
    scan = store.scan

    def counting_scan(*args, **kwargs):
        page = scan(*args, **kwargs)
        pages.append(len(page))
        return page

    store.scan = counting_scan
    listed = sorted(firestore_state.keys())

    assert listed == names
    assert pages == [500, 500, 234]


def test_scan_fills_a_page_past_expired_records(firestore_url: str) -> None:
    store = open_store(firestore_url)
    moment = now()
    expired = [Record(f"a{index:03d}", b"x", moment - 10) for index in range(5)]
    live = [Record(f"b{index:03d}", b"y", moment + 3600) for index in range(5)]
    store.write("app/state", expired + live)

    page = store.scan("app/state", limit=3)

    assert [record.id for record in page] == ["b000", "b001", "b002"]


def test_seed_flow_runs_on_firestore(firestore_url: str, master_key: str, tmp_path: Path):
    env = subprocess_env(
        CLOUDWRIGHT_STORE=firestore_url,
        DATA_ENGINE_HOME=str(tmp_path / "jobs"),
        GMAIL_OUTBOX=str(tmp_path / "outbox"),
    )

    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "cloudwright"),
            "run",
            str(ROOT / "examples" / "cloudflow_job.py"),
            "--interval",
            "1s",
            "--input",
            "notification_email=you@example.com",
            "--input",
            "rows=20000",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("run succeeded")
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1


def test_firestore_setup_against_the_emulator_explains_and_succeeds(firestore_url, capsys):
    assert main(["firestore", "setup", "--store", firestore_url]) == 0

    assert "the emulator has no TTL policies" in capsys.readouterr().out


def test_missing_credentials_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", os.devnull + "-missing.json")

    with pytest.raises(ConfigurationError, match="gcloud auth application-default login"):
        open_store("firestore://some-project")


def test_missing_driver_names_the_install_command() -> None:
    code = (
        "import sys; sys.modules['google.cloud.firestore_v1'] = None\n"
        "from cloudwright_nb.state.stores import open_store\n"
        "open_store('firestore://p')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True
    )

    assert result.returncode == 1
    assert DriverMissingError.__name__ in result.stderr
    assert 'pip install "cloudwright-nb[firestore]"' in result.stderr


def test_runs_list_pages_newest_first(firestore_url: str) -> None:
    store = open_store(firestore_url)
    start = now()
    rows = [
        RunRow(
            app="app",
            run_id=f"run-{index:04d}",
            status="failed" if index % 7 == 0 else "waiting",
            step_index=0,
            next_check_at=None,
            lease_holder=None,
            lease_expires_at=None,
            created_at=round(start + index, 6),
            updated_at=round(start + index, 6),
            expires_at=None,
            blob=b"sealed",
        )
        for index in range(700)
    ]
    for chunk in (rows[:350], rows[350:]):
        store.transact(lambda transaction, chunk=chunk: [transaction.put_run(r) for r in chunk])

    listed = store.list_runs("app")
    failed = store.list_runs("app", ["failed"], limit=5)

    assert [row.run_id for row in listed] == [row.run_id for row in reversed(rows)]
    assert [row.run_id for row in failed] == [
        "run-0693",
        "run-0686",
        "run-0679",
        "run-0672",
        "run-0665",
    ]
