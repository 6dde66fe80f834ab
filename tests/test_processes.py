"""Real processes sharing one store: concurrent updates, concurrent ticks, a killed runner.

Every child gets the test's master key and store through its environment, so the test process
reads what the children wrote. The Firestore emulator serializes contended transactions with
lock waits of about two seconds each, so there the contended tests run with two processes and
fewer updates; SQLite gets four processes.
"""

from __future__ import annotations

import collections
import runpy
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudwright_nb import CloudWright
from cloudwright_nb.flow.context import Context
from cloudwright_nb.flow.steps import step_specs
from conftest import PYTHON, subprocess_env

APP = "process-test"

COUNTER_SCRIPT = """
import sys
import time
from pathlib import Path

from cloudwright_nb import CloudWright

go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.005)

state = CloudWright.get_module("state")
for _ in range(int(sys.argv[2])):
    state.update("counter", lambda n: n + 1, default=0)
"""

TICKER_SCRIPT = """
'''Steps that log every execution, and a loop that force-ticks their run until it ends.'''

import os
import sys
import time
from pathlib import Path

from cloudwright_nb import CONTINUE, RERUN

POLLS = int(os.environ.get("POLLS", "20"))


def record(context):
    with open(os.environ["STEP_LOG"], "a") as log:
        log.write(f"{context.step} {context.attempt} {os.getpid()}\\n")
    trail = context.get("trail", [])
    context.set("trail", [*trail, f"{context.step}#{context.attempt}"])
    time.sleep(0.01)


def launch(context):
    record(context)
    return CONTINUE


def poll(context):
    record(context)
    return CONTINUE if context.attempt >= POLLS else RERUN


def report(context):
    record(context)
    return CONTINUE


STEPS = [launch, poll, report]

if __name__ == "__main__":
    from cloudwright_nb import CloudWright
    from cloudwright_nb.flow.steps import step_specs

    run_id, go = sys.argv[1], Path(sys.argv[2])
    steps = {spec.name: spec for spec in step_specs(STEPS)}
    engine = CloudWright.get_module("cloudflow").engine
    while not go.exists():
        time.sleep(0.005)

    deadline = time.monotonic() + 60
    while not engine.get(run_id).done and time.monotonic() < deadline:
        if not engine.tick(run_id, steps, force=True).ran_step:
            time.sleep(0.002)
"""

CRASH_SCRIPT = """
'''A run whose second step writes context, then blocks until the test kills the process.'''

import os
import time
from pathlib import Path

from cloudwright_nb import CONTINUE, CloudWright


def launch(context):
    context.set("job_id", "old")
    return CONTINUE


def wait_for_job(context):
    context.set("job_id_seen", context.get("job_id"))
    context.set("attempt_seen", context.attempt)
    context.set("job_id", "new")
    ready = os.environ.get("READY_FILE")
    if ready:
        Path(ready).touch()
        time.sleep(60)
    return CONTINUE


STEPS = [launch, wait_for_job]

if __name__ == "__main__":
    CloudWright.get_module("state").set("acknowledged", "before the kill")
    CloudWright.get_module("cloudflow").run(*STEPS, run_id=os.environ["RUN_ID"])
"""


@dataclass(frozen=True)
class Sizes:
    processes: int
    updates: int
    polls: int


SIZES = {"sqlite": Sizes(processes=4, updates=250, polls=20), "firestore": Sizes(2, 10, 5)}


@pytest.fixture(params=["sqlite", "firestore"])
def shared_store(request: pytest.FixtureRequest, master_key: str) -> str:
    """Configure this process for the store the children use, and return its URL."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "firestore_url")
    CloudWright.configure(app=APP, store=url)
    return url


@pytest.fixture
def sizes(shared_store: str) -> Sizes:
    return SIZES["firestore" if shared_store.startswith("firestore") else "sqlite"]


def write_script(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def start_children(script: Path, arguments: list[str], env: dict[str, str], count: int):
    return [
        subprocess.Popen(
            [PYTHON, str(script), *arguments],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def run_context(run_id: str) -> Context:
    """The run's context as a step would read it."""
    return Context(CloudWright.vault(), run_id, "inspection", 1, {})


def test_concurrent_updates_lose_nothing(tmp_path: Path, shared_store: str, sizes: Sizes):
    script = write_script(tmp_path, "count.py", COUNTER_SCRIPT)
    go = tmp_path / "go"
    children = start_children(
        script,
        [str(go), str(sizes.updates)],
        subprocess_env(CLOUDWRIGHT_STORE=shared_store, CLOUDWRIGHT_APP=APP),
        sizes.processes,
    )
    go.touch()
    finished = [child.communicate(timeout=60) for child in children]

    for child, (_, stderr) in zip(children, finished, strict=True):
        assert child.returncode == 0, stderr
        assert "database is locked" not in stderr
    assert CloudWright.get_module("state").get("counter") == sizes.processes * sizes.updates


def test_concurrent_ticks_record_each_step_once(tmp_path: Path, shared_store: str, sizes: Sizes):
    script = write_script(tmp_path, "concurrent_steps.py", TICKER_SCRIPT)
    step_log = tmp_path / "steps.log"
    go = tmp_path / "go"
    steps = runpy.run_path(str(script), run_name="concurrent_steps")
    engine = CloudWright.get_module("cloudflow").engine
    run = engine.create(
        step_specs(steps["STEPS"]), inputs={}, interval=60, timeout=None, script=None
    )

    env = subprocess_env(
        CLOUDWRIGHT_STORE=shared_store,
        CLOUDWRIGHT_APP=APP,
        STEP_LOG=str(step_log),
        POLLS=str(sizes.polls),
    )
    children = start_children(script, [run.id, str(go)], env, sizes.processes)
    go.touch()
    finished = [child.communicate(timeout=60) for child in children]

    for child, (_, stderr) in zip(children, finished, strict=True):
        assert child.returncode == 0, stderr
    executions = collections.Counter(
        tuple(line.split()[:2]) for line in step_log.read_text().splitlines()
    )
    ended = CloudWright.get_module("cloudflow").get_run(run.id)
    polls = sizes.polls

    assert ended.status == "succeeded"
    assert [step.checks for step in ended.steps] == [1, polls, 1]
    assert executions == collections.Counter(
        [("launch", "1")] + [("poll", str(n)) for n in range(1, polls + 1)] + [("report", "1")]
    )
    assert run_context(run.id).get("trail") == (
        ["launch#1"] + [f"poll#{n}" for n in range(1, polls + 1)] + ["report#1"]
    )


def test_killed_runner_leaves_no_partial_context(tmp_path: Path, shared_store: str) -> None:
    script = write_script(tmp_path, "crashing_job.py", CRASH_SCRIPT)
    ready = tmp_path / "ready"
    run_id = "crash-1"
    child = subprocess.Popen(
        [PYTHON, str(script)],
        env=subprocess_env(
            CLOUDWRIGHT_STORE=shared_store,
            CLOUDWRIGHT_APP=APP,
            RUN_ID=run_id,
            READY_FILE=str(ready),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 15
    while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if not ready.exists():
        child.kill()
        _, stderr = child.communicate()
        pytest.fail(f"the child never reached its blocking step:\n{stderr}")

    child.kill()
    child.wait(timeout=10)
    cloudflow = CloudWright.get_module("cloudflow")
    state = CloudWright.get_module("state")
    killed = cloudflow.get_run(run_id)

    assert killed.status == "running"
    assert killed.current_step == "wait_for_job"
    assert str(child.pid) in killed.lease_holder
    assert killed.lease_expires_at.timestamp() > time.time() + 30
    assert run_context(run_id).get("job_id") == "old"
    assert run_context(run_id).get("job_id_seen") is None
    assert state.get("acknowledged") == "before the kill"

    steps = runpy.run_path(str(script), run_name="crashing_job")["STEPS"]
    started = time.monotonic()
    resumed = cloudflow.resume(run_id, *steps)
    took = time.monotonic() - started

    assert resumed.status == "succeeded"
    assert took < 10
    assert run_context(run_id).get("job_id_seen") == "old"
    assert run_context(run_id).get("attempt_seen") == 2
    assert run_context(run_id).get("job_id") == "new"
