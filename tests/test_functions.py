"""Applications served by Google's functions-framework on loopback, ticked over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, free_port, new_master_key, subprocess_env

CLOUDWRIGHT = str(Path(sys.executable).parent / "cloudwright")
SEED = ROOT / "examples" / "cloudflow_job.py"

COUNTING_APP = """
import os
from cloudwright_nb import CloudWright

cloudflow = CloudWright.get_module("cloudflow")

def log(context):
    with open(os.environ["STEP_LOG"], "a") as handle:
        handle.write(f"{context.step} {context.attempt}\\n")

def first(context):
    log(context)
    return cloudflow.CONTINUE

def poll(context):
    log(context)
    return cloudflow.CONTINUE if context.attempt >= 5 else cloudflow.RERUN

cloudflow.run(first, poll, interval="100ms")
"""


def post(url: str, body: object | bytes, timeout: float = 30) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def start_server(command: list[str], env: dict[str, str], port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", data=b"{bad", timeout=2)
        except urllib.error.HTTPError:
            return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                output = server.stdout.read().decode() if server.stdout else ""
                raise RuntimeError(f"the function server did not start:\n{output}") from None
            time.sleep(0.2)


def stop_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


@pytest.fixture
def serve(function_env: dict[str, str]) -> Iterator:
    servers = []

    def start(script: Path, env: dict[str, str] | None = None) -> str:
        port = free_port()
        command = [CLOUDWRIGHT, "serve", str(script), "--port", str(port)]
        servers.append(start_server(command, env or function_env, port))
        return f"http://127.0.0.1:{port}/"

    yield start
    for server in servers:
        stop_server(server)


def tick_until_done(url: str, run_id: str, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        status, answer = post(url, {"run_id": run_id})
        assert status == 200, answer
        if answer["status"] in ("succeeded", "failed", "cancelled"):
            return answer
        assert time.monotonic() < deadline, answer
        time.sleep(0.1)


def test_seed_flow_succeeds_through_http_ticks_alone(serve, tmp_path: Path) -> None:
    url = serve(SEED)

    status, started = post(
        url, {"inputs": {"notification_email": "you@example.com", "rows": "20000"}}
    )
    final = tick_until_done(url, started["run_id"])

    assert status == 200
    assert started["ran_step"] is True
    assert started["current_step"] == "wait_completion"
    assert final["status"] == "succeeded"
    assert final["last_error"] is None
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1


def test_seed_flow_succeeds_on_firestore(serve, function_env, firestore_url, tmp_path) -> None:
    env = dict(
        function_env,
        CLOUDWRIGHT_STORE=firestore_url,
        FIRESTORE_EMULATOR_HOST=os.environ["FIRESTORE_EMULATOR_HOST"],
    )
    url = serve(SEED, env)

    _, started = post(url, {"inputs": {"notification_email": "you@example.com", "rows": "20000"}})
    final = tick_until_done(url, started["run_id"])

    assert final["status"] == "succeeded"
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1


def test_duplicate_and_early_ticks_run_nothing_and_say_so(serve, tmp_path: Path) -> None:
    script = tmp_path / "slow_poll.py"
    script.write_text(COUNTING_APP.replace('interval="100ms"', 'interval="1h"'))
    url = serve(script)
    _, started = post(url, {})

    status, early = post(url, {"run_id": started["run_id"]})
    _, forced = post(url, {"run_id": started["run_id"], "force": True})

    assert status == 200
    assert early["ran_step"] is False
    assert "is not due" in early["reason"]
    assert forced["ran_step"] is True


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'{"run_id": 7}', 400, "run_id must be a JSON string"),
        (b'{"force": "yes"}', 400, "force must be a JSON boolean"),
        (b'{"run_id": "no-such-run"}', 404, "no run 'no-such-run'"),
        (b'{"run_id": "../../etc"}', 400, "invalid run id '../../etc'"),
        (b'{"runid": "x"}', 400, "unknown field 'runid'"),
        (b'{"sweep": true, "run_id": "x"}', 400, "a sweep request takes no other field"),
        (b'{"inputs": {"a": NaN}}', 400, "NaN is not JSON"),
        (b"[" * 5000 + b"]" * 5000, 400, ""),
    ],
)
def test_bad_requests_get_one_line_json(serve, tmp_path: Path, body, status, message) -> None:
    script = tmp_path / "counting.py"
    script.write_text(COUNTING_APP)
    url = serve(script)

    answer_status, answer = post(url, body)

    assert answer_status == status
    assert message in answer["error"]
    assert "\n" not in answer["error"]


def test_only_post_is_accepted(serve, tmp_path: Path) -> None:
    script = tmp_path / "counting.py"
    script.write_text(COUNTING_APP)
    url = serve(script)

    try:
        urllib.request.urlopen(url, timeout=10)
    except urllib.error.HTTPError as error:
        status, answer, allow = error.code, json.loads(error.read()), error.headers["Allow"]

    assert status == 405
    assert answer == {"error": "use POST with a JSON body, not GET"}
    assert allow == "POST"
    assert not (tmp_path / "steps.log").exists()


def test_application_that_fails_to_import_answers_500(serve, tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("import no_such_module_here\n")
    url = serve(script)

    status, answer = post(url, {})

    assert status == 500
    assert answer == {
        "error": "broken.py failed: ModuleNotFoundError: No module named 'no_such_module_here'"
    }


def test_two_servers_record_each_outcome_once(serve, tmp_path: Path) -> None:
    script = tmp_path / "counting.py"
    script.write_text(COUNTING_APP)
    urls = [serve(script), serve(script)]
    _, started = post(urls[0], {})
    answers: list[dict] = []

    def hammer(url: str) -> None:
        for _ in range(15):
            answers.append(post(url, {"run_id": started["run_id"], "force": True})[1])

    threads = [threading.Thread(target=hammer, args=(url,)) for url in urls * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = tick_until_done(urls[1], started["run_id"])
    executions = Counter((tmp_path / "steps.log").read_text().splitlines())

    assert final["status"] == "succeeded"
    assert executions == Counter(["first 1"] + [f"poll {n}" for n in range(1, 6)])
    assert any(answer["ran_step"] is False for answer in answers)
    assert all(answer["reason"] for answer in answers if answer["ran_step"] is False)


def test_sweep_ticks_overdue_runs(serve, tmp_path: Path) -> None:
    script = tmp_path / "counting.py"
    script.write_text(COUNTING_APP)
    url = serve(script)
    _, started = post(url, {})
    time.sleep(0.3)

    status, swept = post(url, {"sweep": True})

    assert status == 200
    assert swept["swept"] == 1
    assert swept["runs"][0]["run_id"] == started["run_id"]
    assert swept["runs"][0]["ran_step"] is True


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A bundle of the seed script, a fresh venv built from its requirements, and the deploy
    command that `cloudwright bundle` printed."""
    base = tmp_path_factory.mktemp("bundle")
    output = base / "bundle"
    made = subprocess.run(
        [CLOUDWRIGHT, "bundle", str(SEED), "-o", str(output)],
        env=subprocess_env(CLOUDWRIGHT_MASTER_KEY=new_master_key()),
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # Cloud Functions runs pip in the source folder, where ./modules (the stand-ins) resolves.
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "-r", "requirements.txt"],
        cwd=output,
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    return output, python, made.stdout


def test_bundle_holds_what_a_deploy_needs(bundled) -> None:
    output, _, printed = bundled

    assert "gcloud functions deploy cloudflow-job" in printed
    assert "--entry-point=cloudwright" in printed
    assert "--set-secrets=CLOUDWRIGHT_MASTER_KEY=" in printed
    assert {"main.py", "cloudflow_job.py", "requirements.txt", "cloudwright_nb"} <= {
        path.name for path in output.iterdir()
    }
    requirements = (output / "requirements.txt").read_text().splitlines()
    assert all("==" in line for line in requirements if not line.startswith("./"))
    assert "./modules" in requirements
    assert "app='cloudflow_job'" in (output / "main.py").read_text()


def test_bundle_leaves_secrets_and_local_data_behind(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "job.py").write_text("print('hi')\n")
    (app / "helpers.py").write_text("X = 1\n")
    for name in ("master.key", "store.db", "store.db-wal", ".env"):
        (app / name).write_text("secret")
    (app / "outbox").mkdir()
    (app / "cloudwright_nb").mkdir()

    made = subprocess.run(
        [CLOUDWRIGHT, "bundle", str(app / "job.py"), "-o", str(tmp_path / "out")],
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )

    assert made.returncode == 0, made.stderr
    copied = {path.name for path in (tmp_path / "out").iterdir()}
    assert {"job.py", "helpers.py", "main.py", "requirements.txt", "cloudwright_nb"} == copied
    assert "left out (secrets, local data, build output): " in made.stdout
    assert "master.key" in made.stdout
    assert not (tmp_path / "out" / "cloudwright_nb" / "secret").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["README.md"], "is not a Python script"),
        (["missing.py"], "no such script"),
    ],
)
def test_bundle_refuses_bad_arguments(tmp_path: Path, arguments, message) -> None:
    (tmp_path / "README.md").write_text("# readme\n")

    made = subprocess.run(
        [CLOUDWRIGHT, "bundle", *arguments, "-o", str(tmp_path / "out")],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )

    assert made.returncode == 2
    assert message in made.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("store", ["sqlite", "firestore"])
def test_bundle_runs_from_a_fresh_environment(bundled, function_env, tmp_path, store, request):
    output, python, _ = bundled
    env = dict(function_env, PYTHONPATH="")
    if store == "firestore":
        env["CLOUDWRIGHT_STORE"] = request.getfixturevalue("firestore_url")
        env["FIRESTORE_EMULATOR_HOST"] = os.environ["FIRESTORE_EMULATOR_HOST"]
    port = free_port()
    server = start_server(
        [
            python,
            "-m",
            "functions_framework",
            "--target",
            "cloudwright",
            "--source",
            str(output / "main.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env,
        port,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        inputs = {"notification_email": "you@example.com", "rows": "20000"}
        _, started = post(url, {"inputs": inputs})
        final = tick_until_done(url, started["run_id"])
    finally:
        stop_server(server)

    assert final["status"] == "succeeded"
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1


SLOW_SECOND_CHECK = """
import os, time
from cloudwright_nb import CloudWright

cloudflow = CloudWright.get_module("cloudflow")

def poll(context):
    with open(os.environ["STEP_LOG"], "a") as handle:
        handle.write(f"poll {context.attempt}\\n")
    if context.attempt == 2:
        time.sleep(3)
    return cloudflow.CONTINUE if context.attempt >= 3 else cloudflow.RERUN

cloudflow.run(poll, interval="2s")
"""


def test_retry_after_a_client_timeout_runs_no_step(serve, tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text(SLOW_SECOND_CHECK)
    url = serve(script)
    _, started = post(url, {})
    time.sleep(2.2)

    with pytest.raises((TimeoutError, urllib.error.URLError)):
        post(url, {"run_id": started["run_id"]}, timeout=1)
    _, retried = post(url, {"run_id": started["run_id"]})
    final = tick_until_done(url, started["run_id"], seconds=30)
    executions = Counter((tmp_path / "steps.log").read_text().splitlines())

    assert retried["ran_step"] is False
    assert "is not due" in retried["reason"]
    assert executions == Counter(["poll 1", "poll 2", "poll 3"])
    assert final["status"] == "succeeded"


LOCAL_SIDE = """
import sys
from cloudwright_nb import CloudWright

cloudflow = CloudWright.get_module("cloudflow")

# Only the names matter here: the function executes the steps.
def first(context): ...
def poll(context): ...

run = cloudflow.run(first, poll, remote=sys.argv[1])
print("final:", run.status)
"""


def test_remote_dispatch_from_a_script(serve, function_env, tmp_path: Path) -> None:
    app = tmp_path / "counting.py"
    app.write_text(COUNTING_APP)
    url = serve(app)
    local = tmp_path / "local_side.py"
    local.write_text(LOCAL_SIDE)

    result = subprocess.run(
        [sys.executable, str(local), url],
        env=dict(function_env, CLOUDWRIGHT_APP="counting"),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "run dispatched to" in result.stdout
    assert result.stdout.rstrip().endswith("final: succeeded")
    executions = Counter((tmp_path / "steps.log").read_text().splitlines())
    assert executions == Counter(["first 1"] + [f"poll {n}" for n in range(1, 6)])


def test_remote_dispatch_retries_until_the_server_is_back(function_env, tmp_path: Path) -> None:
    app = tmp_path / "counting.py"
    app.write_text(COUNTING_APP.replace('interval="100ms"', 'interval="1s"'))
    local = tmp_path / "local_side.py"
    local.write_text(LOCAL_SIDE)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [CLOUDWRIGHT, "serve", str(app), "--port", str(port)]
    server = start_server(command, function_env, port)
    side = subprocess.Popen(
        [sys.executable, str(local), url],
        env=dict(function_env, CLOUDWRIGHT_APP="counting"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    stop_server(server)
    time.sleep(3)
    server = start_server(command, function_env, port)
    try:
        stdout, stderr = side.communicate(timeout=120)
    finally:
        stop_server(server)

    assert side.returncode == 0, stderr
    assert f"cannot reach {url}" in stdout
    assert "retrying in" in stdout
    assert stdout.rstrip().endswith("final: succeeded")


def test_deployed_logs_carry_the_run_and_step(function_env, tmp_path: Path) -> None:
    script = tmp_path / "chatty.py"
    script.write_text(
        "from cloudwright_nb import CloudWright\n"
        "cloudflow = CloudWright.get_module('cloudflow')\n"
        "def greet(context):\n"
        "    print('hello from greet')\n"
        "    return cloudflow.CONTINUE\n"
        "cloudflow.run(greet)\n"
    )
    port = free_port()
    server = start_server(
        [CLOUDWRIGHT, "serve", str(script), "--port", str(port)], function_env, port
    )
    try:
        _, answer = post(f"http://127.0.0.1:{port}/", {})
    finally:
        stop_server(server)
    lines = server.stdout.read().decode().splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]

    printed = [entry for entry in entries if entry["message"] == "hello from greet"]
    assert printed == [
        {
            "severity": "INFO",
            "message": "hello from greet",
            "logging.googleapis.com/labels": {"run_id": answer["run_id"], "step": "greet"},
        }
    ]
    assert "hello from greet" not in [line for line in lines if not line.startswith("{")]
    assert any(
        entry.get("logging.googleapis.com/labels") == {"run_id": answer["run_id"]}
        for entry in entries
    )


def test_serve_refuses_a_taken_port_and_a_broken_script(function_env, tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    good.write_text(COUNTING_APP)
    broken = tmp_path / "broken.py"
    broken.write_text("def oops(:\n")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [CLOUDWRIGHT, "serve", str(good), "--port", str(port)],
            env=function_env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    syntax = subprocess.run(
        [CLOUDWRIGHT, "serve", str(broken), "--port", str(free_port())],
        env=function_env,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert busy.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert syntax.returncode == 2
    assert "broken.py line 1:" in syntax.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("notaurl", "invalid function URL 'notaurl'"),
        ("ftp://127.0.0.1/", "invalid function URL 'ftp://127.0.0.1/'"),
        ("http://127.0.0.1:9/", "cannot reach http://127.0.0.1:9/"),
    ],
)
def test_remote_mistakes_are_one_line(function_env, tmp_path: Path, url, message) -> None:
    local = tmp_path / "counting.py"
    local.write_text(
        "import os\n"
        "from cloudwright_nb import CloudWright\n"
        "cloudflow = CloudWright.get_module('cloudflow')\n"
        "def first(context): ...\n"
        "cloudflow.run(first, remote=os.environ['REMOTE_URL'])\n"
    )

    result = subprocess.run(
        [CLOUDWRIGHT, "run", str(local)],
        env=dict(function_env, REMOTE_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
