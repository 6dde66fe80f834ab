"""CloudFlow in a real ipykernel, driven through jupyter_client as a notebook front end would."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager

from conftest import new_master_key, subprocess_env

SETUP = """
%load_ext cloudwright_nb
import asyncio, threading, time
from cloudwright_nb import CloudWright
CloudWright.configure(app="kernel-test")
cloudflow = CloudWright.get_module("cloudflow")
"""

STEPS = """
def launch(context):
    context.set("job", "j-1")
    print("launched", context.get("job"))
    return cloudflow.CONTINUE

def wait_for_job(context):
    time.sleep(float(context.inputs.get("step_seconds", "0")))
    return cloudflow.CONTINUE if context.attempt >= 3 else cloudflow.RERUN

def report(context):
    print("done with", context.get("job"))
    return cloudflow.CONTINUE
"""


@dataclass
class Reply:
    """What one cell produced on the kernel's iopub channel."""

    seconds: float
    text: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    messages: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def output(self) -> str:
        return "".join(self.text)


class Kernel:
    def __init__(self, env: dict[str, str]) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=env)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def execute(self, code: str, timeout: float = 60) -> Reply:
        started = time.monotonic()
        msg_id = self.client.execute(code)
        reply = Reply(0.0)
        while True:
            message = self.client.get_iopub_msg(timeout=timeout)
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind = message["msg_type"]
            content = message["content"]
            reply.messages[kind] += 1
            if kind == "status" and content["execution_state"] == "idle":
                break
            if kind == "stream":
                reply.text.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                reply.text.append(content["data"].get("text/plain", "") + "\n")
            elif kind == "error":
                reply.errors.append(f"{content['ename']}: {content['evalue']}")
        reply.seconds = time.monotonic() - started
        # Read the execute_reply before the next request. ipykernel 7 sends it raw on the shell
        # socket, and a request that arrives while it is being sent can go unread, which once
        # left a test that runs cells back to back waiting. Details:
        # https://github.com/ipython/ipykernel/issues/1554
        while self.client.get_shell_msg(timeout=timeout)["parent_header"].get("msg_id") != msg_id:
            pass
        return reply

    def value(self, expression: str) -> str:
        reply = self.execute(f"print(repr({expression}))")
        assert reply.errors == [], reply.errors
        return reply.output.strip()

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture
def kernel_env(tmp_path: Path) -> dict[str, str]:
    return subprocess_env(
        CLOUDWRIGHT_STORE=f"sqlite:///{tmp_path / 'store.db'}",
        CLOUDWRIGHT_MASTER_KEY=new_master_key(),
        CLOUDWRIGHT_KEY_FILE=str(tmp_path / "unused.key"),
    )


@pytest.fixture
def kernel(kernel_env: dict[str, str]) -> Iterator[Kernel]:
    kernel = Kernel(kernel_env)
    setup = kernel.execute(SETUP + STEPS)
    assert setup.errors == []
    yield kernel
    kernel.shutdown()


def wait_until(kernel: Kernel, expression: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while kernel.value(expression) != "True":
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.2)


def test_run_returns_at_once_and_cells_stay_responsive(kernel: Kernel) -> None:
    started = kernel.execute(
        'run = cloudflow.run(launch, wait_for_job, report, interval="1s", '
        'inputs={"step_seconds": "1.5"})'
    )

    assert started.errors == []
    assert started.seconds < 2
    assert "run started" in started.output
    latencies = []
    while kernel.value("run.done") == "False":
        latencies.append(kernel.execute("1 + 1").seconds)
    assert len(latencies) > 10
    assert max(latencies) < 0.5
    assert kernel.value("run.status") == "'succeeded'"


def test_wait_blocks_the_cell_until_the_run_ends(kernel: Kernel) -> None:
    kernel.execute('run = cloudflow.run(launch, wait_for_job, report, interval="200ms")')

    reply = kernel.execute("final = run.wait(); print(final.status, final.steps[1].checks)")

    assert reply.errors == []
    assert reply.output.strip() == "succeeded 3"


def test_await_returns_the_ended_run(kernel: Kernel) -> None:
    kernel.execute('run = cloudflow.run(launch, wait_for_job, report, interval="200ms")')

    reply = kernel.execute("final = await run\nprint(final.status)")

    assert reply.errors == []
    assert reply.output.strip() == "succeeded"


def test_many_runs_go_at_once(kernel: Kernel) -> None:
    reply = kernel.execute(
        'runs = [cloudflow.run(launch, wait_for_job, report, interval="300ms") for _ in range(20)]'
    )
    assert reply.errors == []
    assert reply.seconds < 10

    kernel.execute("finals = [r.wait() for r in runs]")

    assert kernel.value("sorted({f.status for f in finals})") == "['succeeded']"
    assert kernel.value("len({f.id for f in finals})") == "20"


def test_plain_steps_use_threads_and_async_steps_the_loop(kernel: Kernel) -> None:
    kernel.execute(
        """
seen = {}
def plain(context):
    seen["plain"] = threading.current_thread() is threading.main_thread()
    return cloudflow.CONTINUE
async def coroutine(context):
    await asyncio.sleep(0.01)
    seen["async"] = threading.current_thread() is threading.main_thread()
    return cloudflow.CONTINUE
cloudflow.run(plain, coroutine).wait()
"""
    )

    assert kernel.value("seen") == "{'plain': False, 'async': True}"


def test_panel_text_summarizes_the_run(kernel: Kernel) -> None:
    reply = kernel.execute('run = cloudflow.run(launch, wait_for_job, report, interval="200ms")')
    kernel.execute("run.wait()")

    assert "> 1. launch" in reply.output
    summary = kernel.value("__import__('cloudwright_nb').notebook.panel.RunPanel(run).summary()")
    assert "succeeded" in summary
    assert "done with j-1" in summary


def test_runner_failure_lands_on_the_run(kernel: Kernel) -> None:
    kernel.execute(
        """
async def broken_commit(*args, **kwargs):
    raise RuntimeError("store went away")
run = cloudflow.run(launch, wait_for_job, report, interval="200ms")
run.engine.commit_async = broken_commit
"""
    )

    wait_until(kernel, "run.runner_error is not None")

    assert "RuntimeError: store went away" in kernel.value("run.runner_error")
    panel_text = kernel.value("__import__('cloudwright_nb').notebook.panel.RunPanel(run).summary()")
    assert "the runner stopped: RuntimeError: store went away" in panel_text


def test_resume_in_a_new_kernel_after_a_kill(kernel_env: dict[str, str]) -> None:
    first = Kernel(kernel_env)
    first.execute(SETUP + STEPS)
    first.execute(
        'run = cloudflow.run(launch, wait_for_job, report, interval="1s", '
        'inputs={"step_seconds": "0.2"})'
    )
    wait_until(first, "run.steps[1].checks >= 1")
    run_id = first.value("run.id").strip("'")
    first.manager.signal_kernel(9)  # SIGKILL: no chance to release anything
    first.client.stop_channels()

    second = Kernel(kernel_env)
    try:
        second.execute(SETUP + STEPS)
        reply = second.execute(f"resumed = %cloudflow resume {run_id}")
        assert reply.errors == []
        second.execute("final = resumed.wait()")

        assert second.value("final.status") == "'succeeded'"
        assert second.value("final.steps[0].checks") == "1"
        assert second.value("[s.status for s in final.steps]") == "['done', 'done', 'done']"
    finally:
        second.shutdown()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%cloudflow", "the following arguments are required: COMMAND"),
        ("%cloudflow frobnicate", "invalid choice: 'frobnicate'"),
        ("%cloudflow run missing_step", "no function named 'missing_step' in this notebook"),
        ("%cloudflow run launch --interval 0", "invalid duration '0'"),
        ("%cloudflow status no-such-run", "no run 'no-such-run'"),
        ("%cloudflow cancel", "the following arguments are required: RUN_ID"),
        ("%state get", "the following arguments are required: key"),
        ("%state get never-set", "key 'never-set' is not set"),
    ],
)
def test_magic_mistakes_print_one_line_not_a_traceback(kernel: Kernel, line, message):
    reply = kernel.execute(line)

    assert reply.errors == []
    assert message in reply.output
    assert "Traceback" not in reply.output
    # A magic names itself, never the command line tool.
    assert "cloudwright:" not in reply.output


def test_help_prints_the_full_usage(kernel: Kernel) -> None:
    reply = kernel.execute("%cloudflow --help")

    assert reply.errors == []
    for command in ("run", "status", "list", "cancel", "resume", "retry", "history"):
        assert command in reply.output


def test_state_magic_shares_the_command_line_handlers(kernel: Kernel) -> None:
    kernel.execute('%state set greeting \'{"text": "hi"}\'')

    listed = kernel.execute("%state list")
    fetched = kernel.execute("%state get greeting")
    browser = kernel.execute("%state")

    assert listed.output.startswith("greeting\t")
    assert '"text": "hi"' in fetched.output
    assert "state of application 'kernel-test': 1 key(s)" in browser.output


def test_widget_messages_stay_bounded_with_200_runs(kernel: Kernel) -> None:
    kernel.execute(
        """
def poll(context):
    return cloudflow.CONTINUE if context.attempt >= 60 else cloudflow.RERUN.after(0.2)
runs = [cloudflow.run(poll, interval="200ms") for _ in range(200)]
"""
    )
    client = kernel.client
    while client.iopub_channel.msg_ready():
        client.get_iopub_msg(timeout=1)

    window = 5.0
    deadline = time.monotonic() + window
    updates = 0
    while time.monotonic() < deadline:
        try:
            message = client.get_iopub_msg(timeout=0.2)
        except Exception:
            continue
        if message["msg_type"] == "comm_msg":
            updates += 1
    still_running = int(kernel.value("sum(not r.done for r in runs)"))

    per_panel_per_second = updates / 200 / window
    assert updates > 0
    assert still_running > 0
    assert per_panel_per_second <= 4


def test_resume_of_a_run_already_driven_returns_its_handle(kernel: Kernel) -> None:
    kernel.execute('run = cloudflow.run(launch, wait_for_job, report, interval="1s")')

    reply = kernel.execute("again = %cloudflow resume {run.id}")

    assert "already driving the run" in reply.output
    assert kernel.value("again is run") == "True"
