"""A runner that keeps a rerunning step's lease through the wait: cheaper, and just as safe."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from cloudwright_nb import CloudWright
from cloudwright_nb.flow.context import Context
from cloudwright_nb.flow.engine import MAX_KEPT_WAIT_SECONDS, Engine
from cloudwright_nb.flow.runners.blocking import drive
from cloudwright_nb.flow.steps import step_specs
from test_flow import FakeClock, start


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(float(int(time.time())))


@pytest.fixture
def engine(cloudflow, clock: FakeClock) -> Engine:
    return Engine(CloudWright.vault(), cloudflow, clock=clock)


def polls(until: int):
    def poll(context):
        context.set("seen", [*context.get("seen", []), context.attempt])
        return (
            CloudWright.get_module("cloudflow").CONTINUE
            if context.attempt >= until
            else (CloudWright.get_module("cloudflow").RERUN)
        )

    return poll


def test_rerun_keeps_the_lease_until_the_next_check(engine, clock):
    run_id, steps = start(engine, polls(3), interval=10)

    first = engine.tick(run_id, steps, keep_lease=True)

    assert first.kept is not None
    assert first.run.status == "waiting"
    assert first.run.lease_holder == first.kept.holder
    assert first.run.lease_expires_at.timestamp() == pytest.approx(clock.now + 10 + 60)
    assert first.run.steps[0].checks == 2


def test_kept_lease_turns_away_other_runners(engine, clock):
    run_id, steps = start(engine, polls(3), interval=10)
    engine.tick(run_id, steps, keep_lease=True)
    clock.advance(10)

    other = engine.tick(run_id, steps, force=True)

    assert other.ran_step is False
    assert "busy" in other.reason


def test_kept_ticks_count_attempts_and_commit_context(engine, clock):
    run_id, steps = start(engine, polls(3), interval=10)
    result = engine.tick(run_id, steps, keep_lease=True)
    while not result.run.done:
        clock.advance(10)
        result = engine.tick(run_id, steps, keep_lease=True, kept=result.kept)

    assert result.run.status == "succeeded"
    assert result.run.steps[0].checks == 3
    assert Context(CloudWright.vault(), run_id, "x", 1, {}).get("seen") == [1, 2, 3]
    assert result.run.lease_holder is None


def test_kept_tick_before_its_time_runs_nothing(engine, clock):
    run_id, steps = start(engine, polls(3), interval=10)
    first = engine.tick(run_id, steps, keep_lease=True)
    clock.advance(5)

    early = engine.tick(run_id, steps, keep_lease=True, kept=first.kept)

    assert early.ran_step is False
    assert "not due" in early.reason
    assert early.kept is first.kept


def test_cancel_during_a_kept_wait_starts_no_further_check(engine, clock, cloudflow):
    executions = []

    def poll(context):
        executions.append(context.attempt)
        return cloudflow.RERUN

    run_id, steps = start(engine, poll, interval=10)
    first = engine.tick(run_id, steps, keep_lease=True)
    engine.cancel(run_id)
    clock.advance(10)

    after = engine.tick(run_id, steps, keep_lease=True, kept=first.kept)

    assert executions == [1]
    assert after.ran_step is False
    assert after.run.status == "cancelled"


def test_long_wait_releases_the_lease(engine, clock, cloudflow):
    def slow(context):
        return cloudflow.RERUN.after(MAX_KEPT_WAIT_SECONDS + 1)

    run_id, steps = start(engine, slow)

    result = engine.tick(run_id, steps, keep_lease=True)

    assert result.kept is None
    assert result.run.lease_holder is None


def test_stopped_runner_hands_back_its_kept_lease(engine, clock):
    run_id, steps = start(engine, polls(5), interval=10)

    def interrupt(seconds):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        drive(engine, run_id, steps, echo=lambda line: None, sleep=interrupt)

    run = engine.get(run_id)
    assert run.lease_holder is None
    assert run.status == "waiting"


def test_long_step_renews_its_lease(cloudflow) -> None:
    engine = Engine(CloudWright.vault(), cloudflow)

    def slow(context):
        time.sleep(2.0)
        return cloudflow.CONTINUE

    run_id, steps = start(engine, slow)
    outcome = {}
    worker = threading.Thread(
        target=lambda: outcome.update(result=engine.tick(run_id, steps, budget=0.6))
    )
    worker.start()
    time.sleep(1.2)
    intruder = Engine(CloudWright.vault(), cloudflow).tick(run_id, steps, force=True)
    worker.join()

    assert intruder.ran_step is False
    assert "busy" in intruder.reason
    assert outcome["result"].ran_step is True
    assert outcome["result"].run.status == "succeeded"


def test_started_run_holds_first_lease(engine, clock):
    specs = step_specs([polls(1)])
    steps = {spec.name: spec for spec in specs}

    run, claim = engine.start(specs, inputs={}, interval=10, timeout=None, script=None)
    other = engine.tick(run.id, steps, force=True)
    result = engine.tick(run.id, steps, claimed=claim)

    assert run.status == "running"
    assert run.lease_holder == claim.holder
    assert run.steps[0].checks == 1
    assert other.ran_step is False
    assert "busy" in other.reason
    assert result.run.status == "succeeded"
    assert result.run.steps[0].checks == 1
    assert Context(CloudWright.vault(), run.id, "poll", 1, {}).get("seen") == [1]


def test_started_run_taken_over_after_lease(engine, clock):
    specs = step_specs([polls(1)])
    steps = {spec.name: spec for spec in specs}
    run, _ = engine.start(specs, inputs={}, interval=10, timeout=None, script=None, budget=30)
    clock.advance(31)

    result = engine.tick(run.id, steps)

    assert result.run.status == "succeeded"
    assert result.run.steps[0].checks == 2


def test_changed_run_read_afresh_on_kept_check(engine, clock):
    run_id, steps = start(engine, polls(3), interval=10)
    first = engine.tick(run_id, steps, keep_lease=True)
    # Another process renews the lease from outside: the stored run no longer matches what
    # this runner wrote, so the next check must use the run as stored, not its own copy.
    stored = engine.store.get_run(engine.app, run_id)
    engine.store.transact(
        lambda transaction: transaction.put_run(
            replace(stored, lease_expires_at=stored.lease_expires_at + 5)
        )
    )
    clock.advance(10)

    second = engine.tick(run_id, steps, keep_lease=True, kept=first.kept)

    assert second.ran_step is True
    assert second.run.steps[0].checks == 3
    assert Context(CloudWright.vault(), run_id, "poll", 3, {}).get("seen") == [1, 2]


def test_idle_keeper_sleeps_through_new_leases(monkeypatch) -> None:
    # Steps one after another each take a lease renewed every 20 s. The keeper, idle between
    # them, must not be woken for each, but still renews a lease due sooner than it looks.
    from cloudwright_nb.flow.lease import LeaseKeeper

    keeper = LeaseKeeper()
    wakes = []
    wait = threading.Condition.wait

    def counted_wait(condition, timeout=None):
        woken = wait(condition, timeout)
        if condition is keeper._wake:
            wakes.append(timeout)
        return woken

    monkeypatch.setattr(threading.Condition, "wait", counted_wait)
    keeper.release(keeper.keep(lambda: True, 20.0))
    time.sleep(0.05)
    wakes.clear()
    for _ in range(100):
        keeper.release(keeper.keep(lambda: True, 20.0))
    time.sleep(0.05)

    assert wakes == []

    renewed = threading.Event()
    ticket = keeper.keep(lambda: renewed.set() or True, 0.05)
    assert renewed.wait(2)
    keeper.release(ticket)
