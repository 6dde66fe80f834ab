"""Detached runs: each tick schedules the next on Cloud Tasks, here its emulator from PyPI.

gcloud-tasks-emulator pins an old protobuf, so it runs from a virtual environment of its own,
made on first use under .venv-tasks-emulator. It binds every interface unless told otherwise;
the launcher below binds it to 127.0.0.1. It does not drop tasks whose name already exists, as
the real service does, so these tests also show that a duplicate tick runs no step.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import grpc
import pytest
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from test_functions import CLOUDWRIGHT, COUNTING_APP, post, start_server, stop_server

from conftest import ROOT, free_port

QUEUE = "projects/test-project/locations/here/queues/ticks"
EMULATOR_VENV = ROOT / ".venv-tasks-emulator"
LAUNCHER = textwrap.dedent(
    """
    import sys
    import grpc
    from gcloud_tasks_emulator import server

    open_server = grpc.server

    def loopback_server(*args, **kwargs):
        grpc_server = open_server(*args, **kwargs)
        add_port = grpc_server.add_insecure_port
        grpc_server.add_insecure_port = lambda address: add_port(
            address.replace("[::]", "127.0.0.1")
        )
        return grpc_server

    server.grpc.server = loopback_server
    port, queue = int(sys.argv[1]), sys.argv[2]
    server.create_server("127.0.0.1", port, "127.0.0.1", 1, [queue], -1).run()
    """
)


@pytest.fixture(scope="session")
def tasks_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    python = EMULATOR_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(EMULATOR_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "gcloud-tasks-emulator==0.6.2"],
            check=True,
        )
    launcher = tmp_path_factory.mktemp("tasks") / "launch_emulator.py"
    launcher.write_text(LAUNCHER)
    port = free_port()
    emulator = subprocess.Popen(
        [str(python), str(launcher), str(port), QUEUE],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    host = f"127.0.0.1:{port}"
    client = tasks_client(host)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.list_tasks(parent=QUEUE)
            break
        except Exception:
            assert time.monotonic() < deadline, "the Cloud Tasks emulator did not start"
            time.sleep(0.3)
    yield host
    emulator.terminate()
    emulator.wait(10)


def tasks_client(host: str) -> tasks_v2.CloudTasksClient:
    return tasks_v2.CloudTasksClient(
        transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(host))
    )


def detached_env(function_env: dict[str, str], tasks_emulator: str, url: str, **extra: str):
    return dict(
        function_env,
        CLOUD_TASKS_EMULATOR_HOST=tasks_emulator,
        CLOUDWRIGHT_TASKS_QUEUE=QUEUE,
        CLOUDWRIGHT_FUNCTION_URL=url,
        **extra,
    )


def served_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/"


def start_detached(function_env, tasks_emulator, script: Path, **extra: str):
    port = free_port()
    url = served_url(port)
    env = detached_env(function_env, tasks_emulator, url, **extra)
    server = start_server([CLOUDWRIGHT, "serve", str(script), "--port", str(port)], env, port)
    return server, url


def wait_for_log(path: Path, lines: int, seconds: float = 60) -> Counter:
    deadline = time.monotonic() + seconds
    while True:
        seen = Counter(path.read_text().splitlines()) if path.exists() else Counter()
        if sum(seen.values()) >= lines or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


def test_run_finishes_with_no_client_attached(function_env, tasks_emulator, tmp_path) -> None:
    script = tmp_path / "counting.py"
    script.write_text(COUNTING_APP.replace('interval="100ms"', 'interval="1s"'))
    server, url = start_detached(function_env, tasks_emulator, script)
    try:
        _, started = post(url, {})
        queued = list(tasks_client(tasks_emulator).list_tasks(parent=QUEUE))
        executions = wait_for_log(tmp_path / "steps.log", 6)
        time.sleep(0.5)
        _, final = post(url, {"run_id": started["run_id"]})
    finally:
        stop_server(server)

    assert started["next_task"].startswith(f"{QUEUE}/tasks/{started['run_id']}-s1-c1-")
    assert [task.name for task in queued] == [started["next_task"]]
    scheduled = queued[0].schedule_time.timestamp()
    expected = datetime.fromisoformat(started["next_check_at"]).timestamp()
    assert abs(scheduled - expected) < 0.01
    assert executions == Counter(["first 1"] + [f"poll {n}" for n in range(1, 6)])
    assert final["status"] == "succeeded"


def test_waits_beyond_the_horizon_are_bridged(function_env, tasks_emulator, tmp_path) -> None:
    script = tmp_path / "long_wait.py"
    script.write_text(
        COUNTING_APP.replace(
            "return cloudflow.CONTINUE if context.attempt >= 5 else cloudflow.RERUN",
            "return cloudflow.CONTINUE if context.attempt >= 2 else cloudflow.RERUN.after(5)",
        )
    )
    server, url = start_detached(
        function_env, tasks_emulator, script, CLOUDWRIGHT_TASKS_HORIZON="2"
    )
    try:
        _, started = post(url, {})
        bridge = list(tasks_client(tasks_emulator).list_tasks(parent=QUEUE))
        executions = wait_for_log(tmp_path / "steps.log", 3, seconds=30)
        time.sleep(0.5)
        _, final = post(url, {"run_id": started["run_id"]})
    finally:
        stop_server(server)

    bridge_time = bridge[0].schedule_time.timestamp()
    assert bridge_time < time.time()
    assert executions == Counter(["first 1", "poll 1", "poll 2"])
    assert final["status"] == "succeeded"


def test_sweep_picks_up_a_run_whose_task_was_lost(function_env, tasks_emulator, tmp_path):
    script = tmp_path / "counting.py"
    script.write_text(COUNTING_APP.replace('interval="100ms"', 'interval="2s"'))
    server, url = start_detached(function_env, tasks_emulator, script)
    client = tasks_client(tasks_emulator)
    try:
        _, started = post(url, {})
        # The emulator has no DeleteTask; purging the queue loses the task just the same.
        client.purge_queue(name=QUEUE)
        time.sleep(2.5)
        before = Counter((tmp_path / "steps.log").read_text().splitlines())
        _, swept = post(url, {"sweep": True})
        after = Counter((tmp_path / "steps.log").read_text().splitlines())
    finally:
        stop_server(server)
        client.purge_queue(name=QUEUE)

    assert before == Counter(["first 1", "poll 1"])
    assert swept["swept"] == 1
    assert swept["runs"][0]["run_id"] == started["run_id"]
    assert swept["runs"][0]["ran_step"] is True
    assert after == Counter(["first 1", "poll 1", "poll 2"])
