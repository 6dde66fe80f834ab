"""Tests of the data_engine and gmail stand-ins against real processes, files and SMTP."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from cloudwright_examples.data_engine import DataEngine, Job, JobNotFoundError
from cloudwright_examples.gmail import Gmail
from cloudwright_examples.job_files import write_json_atomic

# Enough rows that the job is still running seconds after it started.
LONG_JOB_ROWS = "50000000"
STARTED_AT = "2024-01-01T00:00:00.000+00:00"


@pytest.fixture
def job_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "jobs"
    monkeypatch.setenv("DATA_ENGINE_HOME", str(home))
    return home


@pytest.fixture
def engine(job_home: Path) -> DataEngine:
    return DataEngine()


def wait_for_final_status(engine: DataEngine, job_id: str, timeout: float = 15.0) -> Job:
    deadline = time.monotonic() + timeout
    while (job := engine.get_job(job_id)).status == "running":
        if time.monotonic() > deadline:
            raise AssertionError(f"Job {job_id} was still running after {timeout} s.")
        time.sleep(0.02)
    return job


def wait_for_job_pid(folder: Path, timeout: float = 15.0) -> int:
    """Wait until the job process has written its pid into status.json."""
    deadline = time.monotonic() + timeout
    while (pid := json.loads((folder / "status.json").read_text())["pid"]) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"The job in {folder} wrote no pid within {timeout} s.")
        time.sleep(0.02)
    return pid


def read_job_in_new_process(home: Path, job_id: str) -> dict[str, Any]:
    script = (
        "import json, sys\n"
        "from cloudwright_examples.data_engine import DataEngine\n"
        "job = DataEngine().get_job(sys.argv[1])\n"
        "print(json.dumps({'status': job.status, 'result': job.result, 'error': job.error}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, job_id],
        env={**os.environ, "DATA_ENGINE_HOME": str(home)},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return json.loads(completed.stdout)


def summarize_independently(csv_path: Path) -> dict[str, tuple[int, float]]:
    """Return the count and sum of amounts per category, computed without the package's code."""
    summary: dict[str, tuple[int, float]] = {}
    with csv_path.open(newline="") as file:
        reader = csv.reader(file)
        assert next(reader) == ["id", "category", "amount"]
        for _row_id, category, amount in reader:
            count, total = summary.get(category, (0, 0.0))
            summary[category] = (count + 1, total + float(amount))
    return summary


def test_job_completes_with_correct_summary(engine: DataEngine, job_home: Path) -> None:
    inputs = {"rows": "3000", "seed": "7", "notification_email": "user@example.com"}
    job_id = engine.start_job(inputs)

    job = wait_for_final_status(engine, job_id)

    assert job.status == "complete"
    assert job.error is None
    assert job.id == job_id
    assert job.folder == job_home / job_id
    assert job.result is not None
    assert job.result["rows"] == 3000
    assert job.result["seed"] == 7

    expected = summarize_independently(job.folder / "data.csv")
    assert sum(count for count, _ in expected.values()) == 3000
    assert sorted(job.result["categories"]) == sorted(expected)
    for category, (count, total) in expected.items():
        summary = job.result["categories"][category]
        assert summary["count"] == count, category
        assert summary["sum"] == pytest.approx(total, abs=0.005), category
        assert summary["mean"] == pytest.approx(total / count, abs=0.005), category

    status = json.loads((job.folder / "status.json").read_text())
    assert isinstance(status["pid"], int)
    assert status["started_at"] <= status["ended_at"]
    assert "complete" in (job.folder / "job.log").read_text()


def test_job_status_seen_by_other_readers(engine: DataEngine, job_home: Path) -> None:
    job_id = engine.start_job({"rows": "500"})
    job = wait_for_final_status(engine, job_id)

    fresh_job = DataEngine().get_job(job_id)
    assert fresh_job == job

    other_process_job = read_job_in_new_process(job_home, job_id)
    assert other_process_job == {"status": "complete", "result": job.result, "error": None}


def test_same_seed_gives_same_data(engine: DataEngine) -> None:
    first_id = engine.start_job({"rows": "1000", "seed": "3"})
    second_id = engine.start_job({"rows": "1000", "seed": "3"})
    other_seed_id = engine.start_job({"rows": "1000", "seed": "4"})

    first = wait_for_final_status(engine, first_id)
    second = wait_for_final_status(engine, second_id)
    other_seed = wait_for_final_status(engine, other_seed_id)

    assert len({first_id, second_id, other_seed_id}) == 3
    assert (first.folder / "data.csv").read_bytes() == (second.folder / "data.csv").read_bytes()
    assert first.result == second.result
    assert other_seed.result != first.result


def test_job_outlives_starting_process(job_home: Path) -> None:
    script = (
        "from cloudwright_examples.data_engine import DataEngine\n"
        "print(DataEngine().start_job({'rows': '20000'}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "DATA_ENGINE_HOME": str(job_home)},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    job_id = completed.stdout.strip()

    job = wait_for_final_status(DataEngine(), job_id)

    assert job.status == "complete"
    assert job.result is not None
    assert job.result["rows"] == 20000


def test_job_with_fail_input_fails(engine: DataEngine, job_home: Path) -> None:
    job_id = engine.start_job({"rows": "200", "fail": "true"})

    job = wait_for_final_status(engine, job_id)

    assert job.status == "failed"
    assert job.error == "Job failed on purpose because its input fail is true."
    assert job.result is None
    assert not (job.folder / "result.json").exists()
    assert "RequestedFailure" in (job.folder / "job.log").read_text()
    assert read_job_in_new_process(job_home, job_id)["status"] == "failed"


def test_crunch_exits_nonzero_on_failure(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "settings.json", {"rows": 10, "seed": 1, "fail": True})
    write_json_atomic(
        tmp_path / "status.json",
        {
            "status": "running",
            "pid": None,
            "started_at": STARTED_AT,
            "ended_at": None,
            "error": None,
        },
    )

    completed = subprocess.run(
        [sys.executable, "-m", "cloudwright_examples.crunch", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert completed.returncode == 1
    assert "Job failed on purpose because its input fail is true." in completed.stderr
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "failed"
    assert isinstance(status["pid"], int)
    assert status["ended_at"] is not None


def test_killed_job_reads_failed(engine: DataEngine, job_home: Path) -> None:
    job_id = engine.start_job({"rows": LONG_JOB_ROWS})
    folder = job_home / job_id
    pid = wait_for_job_pid(folder)
    try:
        assert engine.get_job(job_id).status == "running"
        assert DataEngine().get_job(job_id).status == "running"
        assert read_job_in_new_process(job_home, job_id)["status"] == "running"
    finally:
        os.kill(pid, signal.SIGKILL)

    deadline = time.monotonic() + 15
    while (fresh_job := DataEngine().get_job(job_id)).status == "running":
        assert time.monotonic() < deadline, "The killed job still reads running after 15 s."
        time.sleep(0.02)

    assert fresh_job.status == "failed"
    assert fresh_job.error is not None
    assert f"pid {pid}" in fresh_job.error
    assert "died" in fresh_job.error
    assert fresh_job.result is None
    assert engine.get_job(job_id) == fresh_job
    assert read_job_in_new_process(job_home, job_id)["status"] == "failed"
    assert json.loads((folder / "status.json").read_text())["status"] == "running"


def test_reused_pid_does_not_look_alive(engine: DataEngine, job_home: Path) -> None:
    # The folder records a job that died without a final status. Its recorded pid is the
    # pid of this test process, as if a new process had reused it.
    job_id = "0123456789ab"
    folder = job_home / job_id
    folder.mkdir(parents=True)
    (folder / "job.lock").touch()
    write_json_atomic(
        folder / "status.json",
        {
            "status": "running",
            "pid": os.getpid(),
            "started_at": STARTED_AT,
            "ended_at": None,
            "error": None,
        },
    )

    job = engine.get_job(job_id)

    assert job.status == "failed"
    assert job.error is not None
    assert f"pid {os.getpid()}" in job.error
    assert job.result is None


def test_unknown_job_id_raises(engine: DataEngine, job_home: Path) -> None:
    for job_id in ("0123456789ab", "../jobs", ""):
        with pytest.raises(KeyError) as raised:
            engine.get_job(job_id)
        assert isinstance(raised.value, JobNotFoundError)
        assert str(raised.value) == (
            f"Job {job_id!r} was not found in {job_home}, so check the id or set "
            f"DATA_ENGINE_HOME to the folder where the job was started."
        )


def test_invalid_inputs_raise_before_start(engine: DataEngine, job_home: Path) -> None:
    cases = {
        "rows": (
            "many",
            "Input rows='many' is not a whole number, so pass e.g. --input rows=300000.",
        ),
        "seed": (
            "1.5",
            "Input seed='1.5' is not a whole number, so pass e.g. --input seed=1.",
        ),
        "fail": (
            "yes",
            "Input fail='yes' is invalid, so pass --input fail=true "
            "to make the job fail or leave it out.",
        ),
    }
    for name, (value, message) in cases.items():
        with pytest.raises(ValueError) as raised:
            engine.start_job({name: value})
        assert str(raised.value) == message

    with pytest.raises(ValueError, match=r"rows=0 is invalid"):
        engine.start_job({"rows": "0"})

    assert not job_home.exists()


def test_default_home_is_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATA_ENGINE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)

    assert DataEngine().home == tmp_path.resolve() / "data_engine_jobs"


@pytest.fixture
def outbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    outbox = tmp_path / "outbox"
    for name in ("SMTP_HOST", "SMTP_PORT", "SMTP_USERNAME", "SMTP_PASSWORD", "GMAIL_FROM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GMAIL_OUTBOX", str(outbox))
    return outbox


def test_send_email_writes_eml(outbox: Path) -> None:
    gmail = Gmail()

    delivery = gmail.send_email("Job Complete: abc123", "Job complete", "user@example.com")

    path = Path(delivery)
    assert path.parent == outbox
    assert path.suffix == ".eml"
    assert gmail.last_delivery == delivery

    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert message["Subject"] == "Job Complete: abc123"
    assert message["To"] == "user@example.com"
    assert message["From"] == "cloudwright@localhost"
    assert message["Message-ID"].endswith("@localhost>")
    assert message.get_content() == "Job complete\n"


def test_send_email_file_names_are_unique(outbox: Path) -> None:
    gmail = Gmail()

    recipients = ["a@example.com", "b@example.com"]
    deliveries = {gmail.send_email(f"Message {number}", "body", recipients) for number in range(5)}

    assert len(deliveries) == 5
    assert len(list(outbox.glob("*.eml"))) == 5
    message = BytesParser(policy=policy.default).parsebytes(Path(deliveries.pop()).read_bytes())
    assert message["To"] == "a@example.com, b@example.com"


class RecordingHandler:
    """aiosmtpd handler that keeps every envelope it receives."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


def find_free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_send_email_through_smtp(outbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = RecordingHandler()
    port = find_free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("SMTP_PORT", str(port))
        monkeypatch.setenv("GMAIL_FROM", "flows@example.org")
        gmail = Gmail()

        delivery = gmail.send_email("Job Complete: abc123", "Job complete", "user@example.com")
    finally:
        controller.stop()

    assert delivery == f"smtp://127.0.0.1:{port} to user@example.com"
    assert gmail.last_delivery == delivery
    assert not outbox.exists()

    assert len(handler.envelopes) == 1
    envelope = handler.envelopes[0]
    assert envelope.mail_from == "flows@example.org"
    assert envelope.rcpt_tos == ["user@example.com"]
    message = BytesParser(policy=policy.default).parsebytes(envelope.content)
    assert message["Subject"] == "Job Complete: abc123"
    assert message["To"] == "user@example.com"
    assert message.get_content().splitlines() == ["Job complete"]


def test_send_email_without_recipient_raises(outbox: Path) -> None:
    gmail = Gmail()

    for to in (None, "", "   ", [], ["user@example.com", ""]):
        with pytest.raises(ValueError) as raised:
            gmail.send_email("Subject", "Body", to)
        assert str(raised.value) == (
            f"Recipient address to={to!r} is missing or empty, so pass the notification_email "
            f"input (for example --input notification_email=you@example.com)."
        )

    assert gmail.last_delivery is None
    assert not outbox.exists()


def test_gmail_rejects_invalid_settings(outbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_USERNAME", "flows")
    with pytest.raises(ValueError, match="Only one of SMTP_USERNAME and SMTP_PASSWORD is set"):
        Gmail()
    monkeypatch.delenv("SMTP_USERNAME")

    for port in ("smtp", "0", "70000"):
        monkeypatch.setenv("SMTP_PORT", port)
        with pytest.raises(ValueError) as raised:
            Gmail()
        assert str(raised.value) == (
            f"SMTP_PORT={port!r} is not a valid port, "
            f"so set it to a number from 1 to 65535 or unset it for 25."
        )
