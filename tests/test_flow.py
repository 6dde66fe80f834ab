"""CloudFlow as its users see it: ticks, outcomes, limits, context, management, on every store.

Tests that depend on time drive an `Engine` with a fake clock, so waits, timeouts and stalls
are checked to the second without sleeping. The stores still judge expiry by the real clock,
so the expiry tests set the fake clock some days back to end a run that many days ago.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cloudwright_nb import (
    CloudWright,
    InvalidDurationError,
    InvalidInputError,
    InvalidRunIdError,
    RunNotFoundError,
    RunStateError,
    StepMismatchError,
)
from cloudwright_nb.flow.context import Context
from cloudwright_nb.flow.engine import Engine
from cloudwright_nb.flow.model import FlowRun
from cloudwright_nb.flow.steps import StepSpec, step_specs
from conftest import PYTHON, subprocess_env

DAY = 86400


class FakeClock:
    """A clock for the engine that moves only when the test moves it."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    # Whole seconds keep every computed check time exact. Starting at the real time keeps
    # runs clear of the stores' expiry, which follows the real clock.
    return FakeClock(float(int(time.time())))


@pytest.fixture
def engine(cloudflow, clock: FakeClock) -> Engine:
    return Engine(CloudWright.vault(), cloudflow, clock=clock)


def start(
    engine: Engine,
    *functions: Callable[..., Any],
    interval: float = 60.0,
    timeout: float | None = None,
) -> tuple[str, dict[str, StepSpec]]:
    """Create a run of `functions` without ticking it, and return its id and steps by name."""
    specs = step_specs(functions)
    run = engine.create(specs, inputs={}, interval=interval, timeout=timeout, script=None)
    return run.id, {spec.name: spec for spec in specs}


def seconds_to_next_check(run: FlowRun, clock: FakeClock) -> float:
    return run.next_check_at.timestamp() - clock.now


def tick_until_done(
    engine: Engine, clock: FakeClock, run_id: str, steps: dict[str, StepSpec]
) -> FlowRun:
    """Tick the run at each of its next check times until it ends."""
    for _ in range(1000):
        run = engine.get(run_id)
        if run.done:
            return run
        clock.now = max(clock.now, run.next_check_at.timestamp())
        engine.tick(run_id, steps)
    raise AssertionError(f"run {run_id} did not end within 1000 ticks")


def run_context(run_id: str) -> Context:
    """The run's context as a step would read it."""
    return Context(CloudWright.vault(), run_id, "inspection", 1, {})


# Outcomes and ticks.


def test_continue_runs_next_steps_in_same_tick(cloudflow, engine: Engine) -> None:
    called = []

    def launch(context):
        called.append("launch")
        return cloudflow.CONTINUE

    def check(context):
        called.append("check")
        return cloudflow.CONTINUE

    def notify(context):
        called.append("notify")
        return cloudflow.CONTINUE

    run_id, steps = start(engine, launch, check, notify)
    result = engine.tick(run_id, steps)

    assert result.ran_step
    assert called == ["launch", "check", "notify"]
    assert result.run.status == "succeeded"
    assert [step.status for step in result.run.steps] == ["done", "done", "done"]


def test_continue_stops_chaining_when_budget_spent(
    cloudflow, engine: Engine, clock: FakeClock
) -> None:
    called = []

    def slow(context):
        called.append("slow")
        clock.advance(59)
        return cloudflow.CONTINUE

    def after(context):
        called.append("after")
        return cloudflow.CONTINUE

    run_id, steps = start(engine, slow, after)
    first = engine.tick(run_id, steps, budget=60)

    assert called == ["slow"]
    assert first.run.status == "waiting"
    assert first.run.current_step == "after"
    assert seconds_to_next_check(first.run, clock) <= 0

    second = engine.tick(run_id, steps, budget=60)
    assert called == ["slow", "after"]
    assert second.run.status == "succeeded"


def test_run_returns_succeeded_after_last_step(cloudflow) -> None:
    def only(context):
        return cloudflow.CONTINUE

    run = cloudflow.run(only)

    assert run.status == "succeeded"
    assert cloudflow.get_run(run.id).status == "succeeded"


def test_rerun_waits_run_interval(cloudflow, engine: Engine, clock: FakeClock) -> None:
    def poll(context):
        return cloudflow.RERUN

    run_id, steps = start(engine, poll, interval=90)
    run = engine.tick(run_id, steps).run

    assert run.status == "waiting"
    assert run.steps[0].status == "waiting"
    assert seconds_to_next_check(run, clock) == pytest.approx(90)


@pytest.mark.parametrize(
    ("delay", "seconds"),
    [("2s", 2), (5, 5), (timedelta(minutes=3), 180), ("1h", 3600)],
)
def test_rerun_after_overrides_interval(
    cloudflow, engine: Engine, clock: FakeClock, delay: Any, seconds: float
) -> None:
    def poll(context):
        return cloudflow.RERUN.after(delay)

    run_id, steps = start(engine, poll, interval=60)
    run = engine.tick(run_id, steps).run

    assert seconds_to_next_check(run, clock) == pytest.approx(seconds)


def test_step_interval_overrides_run_interval(cloudflow, engine: Engine, clock: FakeClock) -> None:
    @cloudflow.step(interval="10s")
    def poll(context):
        return cloudflow.RERUN

    run_id, steps = start(engine, poll, interval=60)
    run = engine.tick(run_id, steps).run

    assert seconds_to_next_check(run, clock) == pytest.approx(10)


def test_default_interval_is_one_minute(cloudflow) -> None:
    def only(context):
        return cloudflow.CONTINUE

    assert cloudflow.run(only).interval == 60


def test_interval_from_environment(cloudflow, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDWRIGHT_INTERVAL", "5m")

    def only(context):
        return cloudflow.CONTINUE

    assert cloudflow.run(only).interval == 300


def test_fail_ends_run_failed(cloudflow) -> None:
    called = []

    def give_up(context):
        return cloudflow.FAIL

    def never(context):
        called.append("never")
        return cloudflow.CONTINUE

    run = cloudflow.run(give_up, never)

    assert run.status == "failed"
    assert run.error["step"] == "give_up"
    assert "FAIL" in run.error["message"]
    assert run.steps[0].status == "failed"
    assert run.steps[1].status == "pending"
    assert called == []


def test_raising_step_fails_run_with_traceback(cloudflow) -> None:
    def launch(context):
        raise ValueError("disk full on node 7")

    run = cloudflow.run(launch)

    assert run.status == "failed"
    assert run.error["type"] == "ValueError"
    assert "disk full on node 7" in run.error["message"]
    assert "Traceback" in run.error["traceback"]
    assert 'raise ValueError("disk full on node 7")' in run.error["traceback"]


@pytest.mark.parametrize("returned", [None, "CONTINUE", True, 0, {"status": "done"}])
def test_invalid_return_fails_run_naming_step(cloudflow, returned: Any) -> None:
    def launch_job(context):
        return returned

    run = cloudflow.run(launch_job)
    message = run.error["message"]

    assert run.status == "failed"
    assert "launch_job" in message
    assert repr(returned) in message
    assert "CONTINUE" in message
    assert "RERUN" in message
    assert "FAIL" in message


def test_async_steps_run_and_share_context(cloudflow) -> None:
    seen = []

    async def fetch(context):
        await asyncio.sleep(0)
        context.set("rows", 42)
        return cloudflow.CONTINUE

    def report(context):
        seen.append(context.get("rows"))
        return cloudflow.CONTINUE

    run = cloudflow.run(fetch, report)

    assert run.status == "succeeded"
    assert seen == [42]


# Retries and limits.


def test_retries_rerun_raising_step_then_succeed(
    cloudflow, engine: Engine, clock: FakeClock
) -> None:
    calls = []

    @cloudflow.step(retries=2)
    def flaky(context):
        calls.append(context.attempt)
        if len(calls) <= 2:
            raise ConnectionError("service unavailable")
        return cloudflow.CONTINUE

    run_id, steps = start(engine, flaky, interval=30)
    after_first = engine.tick(run_id, steps).run

    assert after_first.status == "waiting"
    assert seconds_to_next_check(after_first, clock) == pytest.approx(30)

    run = tick_until_done(engine, clock, run_id, steps)
    assert run.status == "succeeded"
    assert calls == [1, 2, 3]
    assert run.steps[0].failures == 2


def test_retries_exhausted_fail_run(cloudflow, engine: Engine, clock: FakeClock) -> None:
    calls = []

    @cloudflow.step(retries=2)
    def broken(context):
        calls.append(context.attempt)
        raise ConnectionError("service unavailable")

    run_id, steps = start(engine, broken)
    run = tick_until_done(engine, clock, run_id, steps)

    assert run.status == "failed"
    assert calls == [1, 2, 3]
    assert run.error["type"] == "ConnectionError"
    assert "service unavailable" in run.error["message"]


def test_step_timeout_not_reset_by_reruns(cloudflow, engine: Engine, clock: FakeClock) -> None:
    @cloudflow.step(timeout="10m")
    def wait_for_job(context):
        return cloudflow.RERUN

    run_id, steps = start(engine, wait_for_job, interval=60)
    started = clock.now
    run = tick_until_done(engine, clock, run_id, steps)

    assert run.status == "failed"
    assert "timeout" in run.error["message"]
    assert "wait_for_job" in run.error["message"]
    assert run.ended_at.timestamp() - started == pytest.approx(600)
    assert run.steps[0].reruns > 1


def test_step_timeout_counts_from_first_check(cloudflow, engine: Engine, clock: FakeClock) -> None:
    def prepare(context):
        return cloudflow.CONTINUE if context.attempt > 5 else cloudflow.RERUN

    @cloudflow.step(timeout="3m")
    def wait_for_job(context):
        return cloudflow.RERUN

    run_id, steps = start(engine, prepare, wait_for_job, interval=60)
    run = tick_until_done(engine, clock, run_id, steps)
    waited = run.ended_at - run.steps[1].first_check_at

    assert run.status == "failed"
    assert run.error["step"] == "wait_for_job"
    assert waited.total_seconds() == pytest.approx(180)


def test_step_timeout_not_reset_by_resume(cloudflow, engine: Engine, clock: FakeClock) -> None:
    @cloudflow.step(timeout="10m")
    def wait_for_job(context):
        return cloudflow.RERUN

    run_id, steps = start(engine, wait_for_job, interval=60)
    started = clock.now
    for _ in range(5):
        engine.tick(run_id, steps)
        clock.advance(60)

    # A new process: a fresh engine and fresh step specs, attached to the same run.
    restarted = Engine(CloudWright.vault(), cloudflow, clock=clock)
    restarted_specs = step_specs([wait_for_job])
    restarted.attach(run_id, restarted_specs)
    run = tick_until_done(restarted, clock, run_id, {spec.name: spec for spec in restarted_specs})

    assert run.status == "failed"
    assert run.ended_at.timestamp() - started == pytest.approx(600)


def test_step_timeout_not_reset_by_retries(cloudflow, engine: Engine, clock: FakeClock) -> None:
    @cloudflow.step(retries=100, timeout="3m")
    def broken(context):
        raise ConnectionError("service unavailable")

    run_id, steps = start(engine, broken, interval=60)
    started = clock.now
    run = tick_until_done(engine, clock, run_id, steps)

    assert run.status == "failed"
    assert "timeout" in run.error["message"]
    assert run.ended_at.timestamp() - started == pytest.approx(180)


def test_max_checks_fails_run(cloudflow, engine: Engine, clock: FakeClock) -> None:
    @cloudflow.step(max_checks=3)
    def wait_for_job(context):
        return cloudflow.RERUN

    run_id, steps = start(engine, wait_for_job)
    run = tick_until_done(engine, clock, run_id, steps)

    assert run.status == "failed"
    assert "max_checks" in run.error["message"]
    assert run.steps[0].checks == 4


def test_timeout_with_on_timeout_continue_moves_on(
    cloudflow, engine: Engine, clock: FakeClock
) -> None:
    called = []

    @cloudflow.step(timeout="5m", on_timeout=cloudflow.CONTINUE)
    def wait_for_job(context):
        return cloudflow.RERUN

    def notify(context):
        called.append("notify")
        return cloudflow.CONTINUE

    run_id, steps = start(engine, wait_for_job, notify, interval=60)
    started = clock.now
    run = tick_until_done(engine, clock, run_id, steps)

    assert run.status == "succeeded"
    assert called == ["notify"]
    assert run.ended_at.timestamp() - started == pytest.approx(300)


def test_max_checks_with_on_timeout_continue_moves_on(
    cloudflow, engine: Engine, clock: FakeClock
) -> None:
    called = []

    @cloudflow.step(max_checks=2, on_timeout=cloudflow.CONTINUE)
    def wait_for_job(context):
        return cloudflow.RERUN

    def notify(context):
        called.append("notify")
        return cloudflow.CONTINUE

    run_id, steps = start(engine, wait_for_job, notify)
    run = tick_until_done(engine, clock, run_id, steps)

    assert run.status == "succeeded"
    assert called == ["notify"]


def test_backoff_grows_delay_up_to_max_interval(
    cloudflow, engine: Engine, clock: FakeClock
) -> None:
    @cloudflow.step(interval="10s", backoff=2, max_interval="35s")
    def wait_for_job(context):
        return cloudflow.RERUN

    run_id, steps = start(engine, wait_for_job, interval=60)
    delays = []
    for _ in range(5):
        run = engine.tick(run_id, steps).run
        delays.append(seconds_to_next_check(run, clock))
        clock.now = run.next_check_at.timestamp()

    assert delays == [10, 20, 35, 35, 35]


def test_backoff_grows_delay_between_retries(cloudflow, engine: Engine, clock: FakeClock) -> None:
    @cloudflow.step(retries=5, interval="10s", backoff=3)
    def broken(context):
        raise ConnectionError("service unavailable")

    run_id, steps = start(engine, broken, interval=60)
    delays = []
    for _ in range(3):
        run = engine.tick(run_id, steps).run
        delays.append(seconds_to_next_check(run, clock))
        clock.now = run.next_check_at.timestamp()

    assert delays == [10, 30, 90]


def test_run_timeout_fails_run(cloudflow, engine: Engine, clock: FakeClock) -> None:
    def prepare(context):
        return cloudflow.CONTINUE if context.attempt > 3 else cloudflow.RERUN

    def wait_for_job(context):
        return cloudflow.RERUN

    run_id, steps = start(engine, prepare, wait_for_job, interval=60, timeout=300)
    started = clock.now
    run = tick_until_done(engine, clock, run_id, steps)

    assert run.status == "failed"
    assert "timed out" in run.error["message"]
    assert run.error["step"] == "wait_for_job"
    assert run.ended_at.timestamp() - started == pytest.approx(300)


def test_run_timeout_is_parsed(cloudflow) -> None:
    def only(context):
        return cloudflow.CONTINUE

    assert cloudflow.run(only, timeout="5m").timeout == 300


# The context.


def test_context_identifies_run_step_and_attempt(
    cloudflow, engine: Engine, clock: FakeClock
) -> None:
    seen = []

    def prepare(context):
        return cloudflow.CONTINUE

    def wait_for_job(context):
        seen.append((context.run_id, context.step, context.attempt))
        return cloudflow.CONTINUE if context.attempt == 3 else cloudflow.RERUN

    run_id, steps = start(engine, prepare, wait_for_job)
    tick_until_done(engine, clock, run_id, steps)

    assert seen == [
        (run_id, "wait_for_job", 1),
        (run_id, "wait_for_job", 2),
        (run_id, "wait_for_job", 3),
    ]


def test_context_values_pass_between_steps_as_json(cloudflow) -> None:
    seen = {}

    def launch(context):
        settings = {"size": 3}
        context.set("job_id", "job-17")
        context.set("shape", (2, 3))
        context.set("settings", settings)
        settings["size"] = 99
        return cloudflow.CONTINUE

    def report(context):
        seen["job_id"] = context.get("job_id")
        seen["shape"] = context.get("shape")
        seen["settings"] = context.get("settings")
        seen["missing"] = context.get("missing", "fallback")
        return cloudflow.CONTINUE

    run = cloudflow.run(launch, report)

    assert run.status == "succeeded"
    assert seen["job_id"] == "job-17"
    assert seen["shape"] == [2, 3]
    assert seen["settings"] == {"size": 3}
    assert seen["missing"] == "fallback"


def test_context_rejects_unstorable_value(cloudflow) -> None:
    def launch(context):
        context.set("job", {"started": datetime.now(timezone.utc)})
        return cloudflow.CONTINUE

    run = cloudflow.run(launch)

    assert run.status == "failed"
    assert run.error["type"] == "UnstorableValueError"
    assert "'job'" in run.error["message"]
    assert "['started']" in run.error["message"]
    assert "datetime" in run.error["message"]


def test_raising_step_leaves_no_context_write(cloudflow, engine: Engine, clock: FakeClock) -> None:
    seen = []

    def launch(context):
        context.set("job_id", "job-1")
        return cloudflow.CONTINUE

    @cloudflow.step(retries=1)
    def wait_for_job(context):
        seen.append((context.get("job_id"), context.get("half_done")))
        context.set("job_id", "job-2")
        context.set("half_done", True)
        if context.attempt == 1:
            raise ConnectionError("lost the job service")
        return cloudflow.CONTINUE

    run_id, steps = start(engine, launch, wait_for_job)
    run = tick_until_done(engine, clock, run_id, steps)

    assert run.status == "succeeded"
    assert seen == [("job-1", None), ("job-1", None)]


def test_live_run_records_never_expire(cloudflow, engine: Engine, clock: FakeClock) -> None:
    seen = []

    def wait_for_job(context):
        if context.attempt == 1:
            context.set("job_id", "job-1")
            return cloudflow.RERUN.after("400d")
        seen.append(context.get("job_id"))
        return cloudflow.CONTINUE

    real_now = clock.now
    clock.now = real_now - 400 * DAY
    run_id, steps = start(engine, wait_for_job)
    engine.tick(run_id, steps)

    assert run_id in [run.id for run in cloudflow.list_runs()]

    clock.now = real_now
    run = engine.tick(run_id, steps).run
    assert run.status == "succeeded"
    assert seen == ["job-1"]


@pytest.mark.parametrize("days_ago", [1, 29])
def test_ended_run_kept_until_30_days(
    cloudflow, engine: Engine, clock: FakeClock, days_ago: int
) -> None:
    def launch(context):
        context.set("job_id", "job-1")
        return cloudflow.CONTINUE

    clock.now -= days_ago * DAY
    run_id, steps = start(engine, launch)
    engine.tick(run_id, steps)

    assert run_id in [run.id for run in cloudflow.list_runs()]
    assert cloudflow.get_run(run_id).status == "succeeded"
    assert run_context(run_id).get("job_id") == "job-1"


def test_ended_run_expires_after_30_days(cloudflow, engine: Engine, clock: FakeClock) -> None:
    def launch(context):
        context.set("job_id", "job-1")
        return cloudflow.CONTINUE

    clock.now -= 31 * DAY
    run_id, steps = start(engine, launch)
    engine.tick(run_id, steps)

    assert run_id not in [run.id for run in cloudflow.list_runs()]
    assert run_context(run_id).get("job_id") is None


def test_expired_run_reads_as_missing(cloudflow, engine: Engine, clock: FakeClock) -> None:
    def launch(context):
        return cloudflow.CONTINUE

    clock.now -= 31 * DAY
    run_id, steps = start(engine, launch)
    engine.tick(run_id, steps)

    with pytest.raises(RunNotFoundError):
        cloudflow.get_run(run_id)


# What the run keeps.


def test_history_stays_bounded(cloudflow, engine: Engine, clock: FakeClock) -> None:
    @cloudflow.step(max_checks=5000)
    def wait_for_job(context):
        print(f"check {context.attempt}")
        return cloudflow.CONTINUE if context.attempt > 2000 else cloudflow.RERUN

    run_id, steps = start(engine, wait_for_job)
    started = clock.now
    for _ in range(2001):
        engine.tick(run_id, steps, force=True)
        clock.advance(1)
    step = engine.get(run_id).steps[0]

    assert step.checks == 2001
    assert step.reruns == 2000
    assert step.first_check_at.timestamp() == started
    assert step.last_check_at.timestamp() == started + 2000
    assert 1 <= len(step.recent) <= 10
    assert step.recent[-1]["outcome"] == "continue"
    assert len(step.output) <= 100
    assert step.output[-1] == "check 2001"


def test_step_output_keeps_last_lines(cloudflow) -> None:
    def launch(context):
        for number in range(500):
            print(f"line {number}")
        return cloudflow.CONTINUE

    run = cloudflow.run(launch)
    output = run.steps[0].output

    assert output[-1] == "line 499"
    assert "line 0" not in output
    assert len(output) < 500


# Managing runs.


def test_cancel_stops_waiting_run(cloudflow, engine: Engine, clock: FakeClock) -> None:
    checks = []

    def wait_for_job(context):
        checks.append(context.attempt)
        return cloudflow.RERUN

    run_id, steps = start(engine, wait_for_job)
    engine.tick(run_id, steps)
    cancelled = cloudflow.cancel(run_id)
    clock.advance(3600)
    result = engine.tick(run_id, steps, force=True)

    assert cancelled.status == "cancelled"
    assert not result.ran_step
    assert "cancelled" in result.reason
    assert checks == [1]
    assert cloudflow.get_run(run_id).status == "cancelled"


def test_cancelled_run_step_reads_cancelled(cloudflow, engine) -> None:
    def first(context):
        return cloudflow.CONTINUE

    def wait_for_job(context):
        return cloudflow.RERUN

    run_id, steps = start(engine, first, wait_for_job)
    engine.tick(run_id, steps)

    cancelled = cloudflow.cancel(run_id)

    assert [step.status for step in cancelled.steps] == ["done", "cancelled"]
    assert "cancelled" in cancelled.summary().splitlines()[2]


def test_cancel_during_step_discards_outcome(cloudflow) -> None:
    called = []

    def launch(context):
        cloudflow.cancel(context.run_id)
        context.set("job_id", "job-1")
        return cloudflow.CONTINUE

    def notify(context):
        called.append("notify")
        return cloudflow.CONTINUE

    run = cloudflow.run(launch, notify)

    assert run.status == "cancelled"
    assert called == []
    assert run_context(run.id).get("job_id") is None


def test_cancel_ended_run_raises(cloudflow) -> None:
    def only(context):
        return cloudflow.CONTINUE

    run = cloudflow.run(only)

    with pytest.raises(RunStateError, match="succeeded"):
        cloudflow.cancel(run.id)


def test_retry_restarts_failed_step_keeping_context(cloudflow) -> None:
    calls = []

    def prepare(context):
        calls.append("prepare")
        context.set("job_id", "job-1")
        return cloudflow.CONTINUE

    def submit(context):
        calls.append(("submit", context.get("job_id")))
        return cloudflow.FAIL if len(calls) == 2 else cloudflow.CONTINUE

    failed = cloudflow.run(prepare, submit)
    retried = cloudflow.retry(failed.id, prepare, submit)

    assert failed.status == "failed"
    assert retried.status == "succeeded"
    assert calls == ["prepare", ("submit", "job-1"), ("submit", "job-1")]


def test_retry_restarts_checks_and_timeout(cloudflow, engine: Engine, clock: FakeClock) -> None:
    attempts = []
    job_finished = []

    def prepare(context):
        return cloudflow.CONTINUE

    @cloudflow.step(timeout="5m")
    def wait_for_job(context):
        attempts.append(context.attempt)
        return cloudflow.CONTINUE if job_finished else cloudflow.RERUN

    run_id, steps = start(engine, prepare, wait_for_job, interval=60)
    timed_out = tick_until_done(engine, clock, run_id, steps)

    clock.advance(3600)
    engine.retry(run_id)
    attempts.clear()
    first_after_retry = engine.tick(run_id, steps).run

    assert timed_out.status == "failed"
    assert first_after_retry.status == "waiting"
    assert attempts == [1]
    assert first_after_retry.steps[1].checks == 1

    job_finished.append(True)
    assert tick_until_done(engine, clock, run_id, steps).status == "succeeded"


def test_retry_succeeded_run_raises(cloudflow) -> None:
    def only(context):
        return cloudflow.CONTINUE

    run = cloudflow.run(only)

    with pytest.raises(RunStateError, match="succeeded"):
        cloudflow.retry(run.id)


def test_resume_with_other_steps_shows_both_lists(cloudflow, engine: Engine) -> None:
    def launch_job(context):
        return cloudflow.CONTINUE

    def wait_completion(context):
        return cloudflow.RERUN

    def email_user(context):
        return cloudflow.CONTINUE

    run_id, steps = start(engine, launch_job, wait_completion, email_user)
    engine.tick(run_id, steps)

    with pytest.raises(StepMismatchError) as raised:
        cloudflow.resume(run_id, launch_job, email_user)
    assert "launch_job, wait_completion, email_user" in str(raised.value)
    assert "launch_job, email_user" in str(raised.value)


def changed_step_versions() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Two versions of a step called `wait_for_job` whose source differs."""
    cloudflow = CloudWright.get_module("cloudflow")

    def wait_for_job(context):
        return cloudflow.RERUN

    old = wait_for_job

    def wait_for_job(context):
        context.set("resumed_with", "new code")
        return cloudflow.CONTINUE

    return old, wait_for_job


def test_resume_with_changed_source_warns(cloudflow) -> None:
    old, new = changed_step_versions()
    engine = cloudflow.engine
    specs = step_specs([old])
    run = engine.create(specs, inputs={}, interval=0.05, timeout=None, script=None)
    engine.tick(run.id, {spec.name: spec for spec in specs})

    with pytest.warns(UserWarning, match="wait_for_job"):
        resumed = cloudflow.resume(run.id, new)

    assert resumed.status == "succeeded"
    assert run_context(run.id).get("resumed_with") == "new code"


def test_list_runs_filters_by_status(cloudflow, engine: Engine, clock: FakeClock) -> None:
    def done(context):
        return cloudflow.CONTINUE

    def give_up(context):
        return cloudflow.FAIL

    def wait_for_job(context):
        return cloudflow.RERUN

    ids = {}
    for name, function in [("succeeded", done), ("failed", give_up), ("waiting", wait_for_job)]:
        run_id, steps = start(engine, function)
        engine.tick(run_id, steps)
        ids[name] = run_id
        clock.advance(1)

    assert [run.id for run in cloudflow.list_runs(status="failed")] == [ids["failed"]]
    assert [run.id for run in cloudflow.list_runs(status="waiting")] == [ids["waiting"]]
    assert [run.id for run in cloudflow.list_runs(status="succeeded")] == [ids["succeeded"]]
    assert [run.id for run in cloudflow.list_runs()] == [
        ids["waiting"],
        ids["failed"],
        ids["succeeded"],
    ]
    assert [run.id for run in cloudflow.list_runs(limit=2)] == [ids["waiting"], ids["failed"]]


def test_overdue_unheld_run_is_stalled(cloudflow, engine: Engine, clock: FakeClock) -> None:
    def wait_for_job(context):
        return cloudflow.RERUN

    run_id, steps = start(engine, wait_for_job, interval=60)
    engine.tick(run_id, steps)

    clock.advance(60 + 10)
    assert engine.list(status="stalled") == []
    assert not engine.get(run_id).stalled

    clock.advance(3600)
    assert [run.id for run in engine.list(status="stalled")] == [run_id]
    assert engine.get(run_id).stalled


def test_run_with_live_lease_is_not_stalled(cloudflow, engine: Engine, clock: FakeClock) -> None:
    seen = []

    def wait_for_job(context):
        if context.attempt == 2:
            seen.append([run.id for run in engine.list(status="stalled")])
        return cloudflow.RERUN

    run_id, steps = start(engine, wait_for_job, interval=60)
    engine.tick(run_id, steps)
    clock.advance(60 + 3600)
    engine.tick(run_id, steps)

    assert seen == [[]]


def test_early_tick_runs_no_step(cloudflow, engine: Engine, clock: FakeClock) -> None:
    checks = []

    def wait_for_job(context):
        checks.append(context.attempt)
        return cloudflow.RERUN

    run_id, steps = start(engine, wait_for_job, interval=60)
    engine.tick(run_id, steps)
    clock.advance(30)
    early = engine.tick(run_id, steps)

    assert not early.ran_step
    assert "not due" in early.reason
    assert checks == [1]


def test_force_skips_next_check_wait(cloudflow, engine: Engine, clock: FakeClock) -> None:
    checks = []

    def wait_for_job(context):
        checks.append(context.attempt)
        return cloudflow.RERUN

    run_id, steps = start(engine, wait_for_job, interval=60)
    engine.tick(run_id, steps)
    forced = engine.tick(run_id, steps, force=True)

    assert forced.ran_step
    assert checks == [1, 2]


def test_tick_during_step_runs_nothing_even_forced(cloudflow, engine: Engine) -> None:
    duplicates = []
    checks = []

    def launch(context):
        checks.append(context.attempt)
        duplicates.append(engine.tick(context.run_id, steps, force=True))
        return cloudflow.CONTINUE

    run_id, steps = start(engine, launch)
    result = engine.tick(run_id, steps)

    assert result.run.status == "succeeded"
    assert checks == [1]
    assert not duplicates[0].ran_step
    assert "busy" in duplicates[0].reason


def test_tick_unknown_run_raises(cloudflow, engine: Engine) -> None:
    def launch(context):
        return cloudflow.CONTINUE

    steps = {spec.name: spec for spec in step_specs([launch])}

    with pytest.raises(RunNotFoundError, match="no-such-run"):
        engine.tick("no-such-run", steps)


@pytest.mark.parametrize(
    "operation", ["get_run", "cancel", "resume", "retry"], ids=lambda name: name
)
def test_unknown_run_raises_not_found(cloudflow, operation: str) -> None:
    with pytest.raises(RunNotFoundError, match="no-such-run"):
        getattr(cloudflow, operation)("no-such-run")


@pytest.mark.parametrize("run_id", ["", "has space", "a/b", "x" * 129, "naïve", 42])
def test_invalid_run_id_raises(cloudflow, run_id: Any) -> None:
    with pytest.raises(InvalidRunIdError) as raised:
        cloudflow.get_run(run_id)
    assert repr(run_id) in str(raised.value)


def test_run_with_invalid_run_id_runs_nothing(cloudflow) -> None:
    called = []

    def launch(context):
        called.append("launch")
        return cloudflow.CONTINUE

    with pytest.raises(InvalidRunIdError, match="'bad id'"):
        cloudflow.run(launch, run_id="bad id")
    assert called == []


def test_run_with_known_run_id_attaches(cloudflow, engine: Engine) -> None:
    called = []

    def launch(context):
        called.append(context.run_id)
        return cloudflow.CONTINUE

    run_id, _ = start(engine, launch)
    run = cloudflow.run(launch, run_id=run_id)

    assert run.id == run_id
    assert called == [run_id]
    assert len(cloudflow.list_runs()) == 1


# Durations.


BAD_DURATIONS = [0, -5, 0.0, "0s", "-1m", "soon", "5 parsecs", "", timedelta(0), float("nan")]


@pytest.mark.parametrize("interval", BAD_DURATIONS, ids=repr)
def test_run_rejects_bad_interval(cloudflow, interval: Any) -> None:
    def launch(context):
        return cloudflow.CONTINUE

    with pytest.raises(InvalidDurationError) as raised:
        cloudflow.run(launch, interval=interval)
    assert repr(interval) in str(raised.value)
    assert cloudflow.list_runs() == []


@pytest.mark.parametrize("delay", BAD_DURATIONS, ids=repr)
def test_rerun_after_rejects_bad_delay(cloudflow, delay: Any) -> None:
    with pytest.raises(InvalidDurationError) as raised:
        cloudflow.RERUN.after(delay)
    assert repr(delay) in str(raised.value)


@pytest.mark.parametrize("option", ["timeout", "interval", "max_interval"])
def test_step_rejects_bad_duration(cloudflow, option: str) -> None:
    with pytest.raises(InvalidDurationError, match="'-3s'"):
        cloudflow.step(**{option: "-3s"})


def test_environment_interval_rejected_when_bad(cloudflow, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDWRIGHT_INTERVAL", "every minute")

    def launch(context):
        return cloudflow.CONTINUE

    with pytest.raises(InvalidDurationError, match="'every minute'"):
        cloudflow.run(launch)


@pytest.mark.parametrize(
    ("interval", "seconds"),
    [
        (90, 90),
        (2.5, 2.5),
        ("500ms", 0.5),
        ("5s", 5),
        ("2m", 120),
        ("1h", 3600),
        ("1d", 86400),
        (timedelta(minutes=3), 180),
    ],
    ids=repr,
)
def test_run_accepts_duration_forms(cloudflow, interval: Any, seconds: float) -> None:
    def launch(context):
        return cloudflow.CONTINUE

    assert cloudflow.run(launch, interval=interval).interval == seconds


# Scripts.


SCRIPT = """
from cloudwright_nb import CloudWright

cloudflow = CloudWright.get_module("cloudflow")


def launch(context):
    return cloudflow.{outcome}


cloudflow.run(launch)
print("after the run")
"""


def run_script(script: Path, sqlite_url: str) -> subprocess.CompletedProcess[str]:
    """Run `script` as `python script.py` on the store at `sqlite_url`."""
    return subprocess.run(
        [PYTHON, str(script)],
        env=subprocess_env(CLOUDWRIGHT_STORE=sqlite_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("outcome", "status"), [("FAIL", 1), ("CONTINUE", 0)])
def test_main_script_exit_status(
    tmp_path: Path, sqlite_url: str, master_key: str, outcome: str, status: int
) -> None:
    script = tmp_path / "nightly_job.py"
    script.write_text(textwrap.dedent(SCRIPT.format(outcome=outcome)))

    finished = run_script(script, sqlite_url)

    assert finished.returncode == status, finished.stderr


STREAMS_SCRIPT = """
import subprocess
import sys

from cloudwright_nb import CloudWright

cloudflow = CloudWright.get_module("cloudflow")


def talk(context):
    print("from the step")
    return cloudflow.CONTINUE


before = (sys.stdout.fileno(), sys.stdout.encoding, sys.stderr.fileno())
cloudflow.run(talk)
after = (sys.stdout.fileno(), sys.stdout.encoding, sys.stderr.fileno())
print("same streams:", before == after)
sys.stdout.flush()
subprocess.run([sys.executable, "-c", "print('child output')"], stdout=sys.stdout, check=True)
"""


def test_step_capture_keeps_real_streams(tmp_path: Path, sqlite_url: str, master_key: str):
    script = tmp_path / "streams.py"
    script.write_text(STREAMS_SCRIPT)

    finished = run_script(script, sqlite_url)

    assert finished.returncode == 0, finished.stderr
    assert "from the step" in finished.stdout
    assert "same streams: True" in finished.stdout
    assert "child output" in finished.stdout


def test_step_calling_sys_exit_fails_only_its_run(cloudflow) -> None:
    async def finish(context):
        return cloudflow.CONTINUE

    async def quit_async(context):
        raise SystemExit(4)

    def quit_plain(context):
        sys.exit(3)

    async def main():
        runs = [cloudflow.run(step) for step in (finish, quit_async, quit_plain, finish)]
        return await asyncio.gather(*runs)

    with contextlib.redirect_stdout(io.StringIO()):
        ended = asyncio.run(main())

    assert [run.status for run in ended] == ["succeeded", "failed", "failed", "succeeded"]
    assert ended[1].error["type"] == "SystemExit"
    assert ended[2].error["type"] == "SystemExit"


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ("notadict", "inputs must be a dict of names to JSON values, not str 'notadict'"),
        ([1, 2], "inputs must be a dict of names to JSON values, not list [1, 2]"),
        ({1: "one"}, "input name 1 is int; input names must be strings"),
        ({"when": object()}, "invalid input 'when': cannot store key 'when'"),
    ],
)
def test_bad_run_inputs_name_the_input(cloudflow, inputs, message) -> None:
    def step(context):
        return cloudflow.CONTINUE

    with pytest.raises(InvalidInputError) as raised:
        cloudflow.run(step, inputs=inputs)

    assert message in str(raised.value)
    assert cloudflow.list_runs() == []


def test_inputs_orjson_refuses_are_kept_exactly(cloudflow) -> None:
    # Run details are encoded by orjson, which rejects an integer over 64 bits and a lone
    # surrogate. json encodes those runs instead, so nothing is lost or rounded.
    inputs = {"big": 2**70, "lone": "\udc80", "accent": "é"}
    seen = []

    def step(context):
        seen.append(context.inputs)
        return cloudflow.CONTINUE

    with contextlib.redirect_stdout(io.StringIO()):
        run = cloudflow.run(step, inputs=inputs)

    assert run.status == "succeeded"
    assert seen == [inputs]
    assert cloudflow.get_run(run.id).inputs == inputs


def test_flow_run_fields_name_every_attribute(cloudflow, engine: Engine) -> None:
    # A LiveRun rebuilds exactly these when its run changes, so a new attribute must be listed.
    run_id, _ = start(engine, lambda context: cloudflow.CONTINUE)

    assert set(vars(engine.get(run_id))) - {"_flow"} == FlowRun.FIELDS


def test_live_run_shows_its_latest_check(cloudflow) -> None:
    # Between checks a live run keeps only the stored row, and builds what it shows on demand.
    async def poll(context):
        return cloudflow.CONTINUE if context.attempt >= 3 else cloudflow.RERUN

    async def main():
        live = cloudflow.run(poll, interval="200ms")
        seen = []
        while not live.done:
            await asyncio.sleep(0.05)
            seen.append((live.status, live.steps[0].checks, live.next_check_at is not None))
        return live, seen

    with contextlib.redirect_stdout(io.StringIO()):
        live, seen = asyncio.run(main())

    assert ("waiting", 2, True) in seen
    assert live.status == "succeeded"
    assert live.steps[0].checks == 3
    assert live.current_step is None


def test_collector_tuning_follows_the_number_of_runs() -> None:
    import gc

    from cloudwright_nb.flow.runners.kernel import _CollectorTuning

    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        tuning = _CollectorTuning()
        tuning.runs_changed(999)
        assert gc.get_threshold() == (700, 10, 10)
        tuning.runs_changed(1000)
        assert gc.get_threshold() == (50_000, 10, 10)
        tuning.runs_changed(500)
        assert gc.get_threshold() == (50_000, 10, 10)
        tuning.runs_changed(499)
        assert gc.get_threshold() == (700, 10, 10)

        # A program that changed the thresholds keeps its own.
        tuning.runs_changed(1000)
        gc.set_threshold(30_000, 5, 5)
        tuning.runs_changed(0)
        assert gc.get_threshold() == (30_000, 5, 5)
        gc.set_threshold(100_000, 10, 10)
        tuning.runs_changed(2000)
        tuning.runs_changed(0)
        assert gc.get_threshold() == (100_000, 10, 10)
    finally:
        gc.set_threshold(*saved)


def test_live_run_thread_read_keeps_newer_row(cloudflow, engine: Engine) -> None:
    # A thread rebuilds a live run's attributes from one row while the loop takes a newer
    # one. The handle must end up showing the newer row.
    from cloudwright_nb.flow.runners.kernel import LiveRun

    run_id, steps = start(engine, lambda context: cloudflow.RERUN)
    older = engine.store.get_run(engine.app, run_id)
    engine.tick(run_id, steps)
    newer = engine.store.get_run(engine.app, run_id)
    assert (older.status, newer.status) == ("pending", "waiting")

    live = LiveRun(engine.get(run_id), engine, steps)
    live.follow(older)
    building = threading.Event()
    go_on = threading.Event()
    view = engine.view

    def slow_view(row):
        if row is older:
            building.set()
            assert go_on.wait(10)
        return view(row)

    engine.view = slow_view
    reader = threading.Thread(target=lambda: live.status)
    reader.start()
    assert building.wait(10)
    follower = threading.Thread(target=live.follow, args=(newer,))
    follower.start()
    time.sleep(0.05)
    go_on.set()
    reader.join(10)
    follower.join(10)

    assert live.status == "waiting"
    assert live.steps[0].checks == 1


def test_each_step_transition_prints_once(cloudflow) -> None:
    # The last step's commit ends the run, which needs a transaction after the one-write try.
    def ok(context):
        return cloudflow.CONTINUE

    def last(context):
        return cloudflow.CONTINUE

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run = cloudflow.run(ok, last)

    lines = [line.split("] ", 1)[1] for line in printed.getvalue().splitlines()]
    assert run.status == "succeeded"
    assert len(lines) == len(set(lines))
    assert next(line for line in lines if "run succeeded" in line).startswith("last: done")


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"rate": float("nan")}, "invalid input 'rate'"),
        ({"when": datetime(2026, 1, 2)}, "invalid input 'when'"),
        ({"tags": {1, 2}}, "invalid input 'tags'"),
        (["a"], "inputs must be a dict of names to JSON values, not list ['a']"),
    ],
)
def test_bad_configured_inputs_name_the_input(inputs, message) -> None:
    # Inputs set on the application reach every run's details, so they are checked as a run's.
    with pytest.raises(InvalidInputError) as raised:
        CloudWright.configure(inputs=inputs)

    assert message in str(raised.value)


@pytest.mark.parametrize("caller", ["loop", "thread"])
def test_cancel_ends_waiting_live_run_at_once(cloudflow, caller) -> None:
    # The run waits an hour between checks; a cancel must not leave its handle waiting too.
    async def poll(context):
        return cloudflow.RERUN

    async def main():
        live = cloudflow.run(poll, interval="1h")
        while live.steps[0].status != "waiting":
            await asyncio.sleep(0.01)
        if caller == "loop":
            cloudflow.cancel(live.id)
        else:
            await asyncio.to_thread(cloudflow.cancel, live.id)
        return await asyncio.wait_for(asyncio.shield(live._task), 5)

    with contextlib.redirect_stdout(io.StringIO()):
        ended = asyncio.run(main())

    assert ended.status == "cancelled"
