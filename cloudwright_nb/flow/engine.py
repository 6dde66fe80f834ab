"""One tick of a run: take the lease, run the step, commit its outcome and context together.

A tick is three phases so that every runner (blocking, kernel, function) can supply its own way
of executing a step between them:

1. `claim` checks the run in a transaction: ended, busy, early, or over a limit; if none of
   these, it takes the lease and counts the check durably.
2. the runner executes the step (`execute` does it for plain Python callers).
3. `commit` applies the outcome and the step's context writes in one transaction, but only if
   the lease is still ours; a CONTINUE with time left in the budget claims the next step too.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import secrets
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from ..durations import format_duration
from ..errors import (
    RunNotFoundError,
    RunStateError,
    StateDecryptionError,
    StepMismatchError,
)
from ..state.stores import Record, RunRow, Store, Transaction
from ..state.stores.base import END_STATUSES, LIVE_STATUSES, now
from ..state.vault import Vault
from .context import Context
from .lease import Renewing, holder_alive, new_holder
from .model import FlowRun, RunDetails, StepRecord, ended_word
from .outcomes import CONTINUE, FAIL, RERUN, Outcome, StepOptions
from .output import CapturedOutput
from .recording import NeedsTransaction, RecordingTransaction
from .steps import StepSpec, check_run_id, new_run_id

log = logging.getLogger("cloudwright_nb")
step_log = logging.getLogger("cloudwright_nb.step")

DEFAULT_BUDGET_SECONDS = 60.0
# A runner keeps a rerunning step's lease through waits up to this long. Longer waits release
# it, so a runner that vanishes cannot block a run for long.
MAX_KEPT_WAIT_SECONDS = 600.0
RETENTION_SECONDS = 30 * 86400


@dataclass
class Claim:
    """A step this tick holds the lease for and must execute, then commit."""

    run_id: str
    holder: str
    step_index: int
    step_name: str
    attempt: int
    inputs: dict[str, Any]
    tick_started: float
    budget: float
    events: list[str] = field(default_factory=list)
    # Set by the lease keeper's thread when a renewal finds the lease taken.
    lease_lost: bool = False
    # A runner that loops keeps the lease while a step waits to be checked again (see _wait).
    keep_lease: bool = False
    # True for a check made on a kept lease: the check was counted when the wait began.
    rechecked: bool = False
    # The run as last written or read before the step ran: the commit writes only if the
    # stored run is still exactly this.
    expected: RunRow | None = None
    # The run as this runner last wrote it, with its details, so that a check or a commit
    # that finds the run unchanged needs no decryption. The details serve one commit.
    written: RunRow | None = None
    details: RunDetails | None = None


@dataclass
class TickResult:
    """The outcome of a tick: whether it ran a step, the reason if not, and the run afterwards.

    `row` is the run as stored after the tick. `run` shows it, built when first read: the
    kernel's runner, checking thousands of runs a second, needs only the row.
    """

    row: RunRow
    engine: Engine = field(repr=False)
    ran_step: bool
    reason: str
    busy_until: datetime | None = None
    events: list[str] = field(default_factory=list)
    kept: Claim | None = None

    @functools.cached_property
    def run(self) -> FlowRun:
        return self.engine.view(self.row)

    @property
    def done(self) -> bool:
        return self.row.status in END_STATUSES


@dataclass
class StepResult:
    value: Any
    error: BaseException | None
    seconds: float
    output: list[str]
    context: Context


class Engine:
    """Runs, ticks and run management for one application."""

    def __init__(
        self,
        vault: Vault,
        flow: Any = None,
        *,
        clock: Callable[[], float] = now,
    ) -> None:
        self.vault = vault
        self.store = vault.store
        self.app = vault.namespace
        self.flow = flow
        self.clock = clock
        self._runs_namespace = f"{self.app}/runs"
        # Deployed, a step's printed lines become log records carrying the run and step.
        self.log_output = False
        self._reads: _BatchedReads | None = None

    # Sealing run details.

    def _seal(self, run_id: str, details: RunDetails) -> bytes:
        return self.vault.cipher.seal(self._runs_namespace, run_id, run_id, details.to_json())

    def _open(self, row: RunRow) -> RunDetails:
        try:
            name, data = self.vault.cipher.open(
                self._runs_namespace, row.run_id, row.blob, check_id=False
            )
        except StateDecryptionError as error:
            raise StateDecryptionError(
                f"cannot decrypt run {row.run_id} of application {self.vault.app!r}: {error}"
            ) from None
        if name != row.run_id:
            raise StateDecryptionError(
                f"run record {row.run_id} contains the details of run {name}"
            )
        return RunDetails.from_json(data)

    def _view(self, row: RunRow, details: RunDetails) -> FlowRun:
        return FlowRun(row, details, self.flow, self.clock())

    def _put(
        self, transaction: Transaction, row: RunRow, details: RunDetails, **changes: Any
    ) -> RunRow:
        row = replace(row, updated_at=self.clock(), blob=self._seal(row.run_id, details), **changes)
        transaction.put_run(row)
        return row

    # Reading and managing runs.

    def _row(self, transaction: Transaction | None, run_id: str) -> RunRow:
        check_run_id(run_id)
        source = transaction if transaction is not None else self.store
        row = source.get_run(self.app, run_id)
        if row is not None and row.expires_at is not None and row.expires_at <= self.clock():
            row = None
        if row is None:
            raise RunNotFoundError(
                f"no run {run_id!r} in application {self.vault.app!r}; "
                "list the runs with `cloudwright runs`, or `%cloudflow list` in a notebook"
            )
        return row

    def get(self, run_id: str) -> FlowRun:
        self.vault.reading_keys()
        return self.view(self._row(None, run_id))

    def view(self, row: RunRow) -> FlowRun:
        """Return the run a stored row holds, as users see it."""
        return self._view(row, self._open(row))

    def list(self, status: str | None = None, limit: int | None = None) -> list[FlowRun]:
        """Return runs newest first; `status` may also be "stalled"."""
        self.vault.reading_keys()
        statuses = LIVE_STATUSES if status == "stalled" else (status,) if status else None
        rows = self.store.list_runs(self.app, statuses, None if status == "stalled" else limit)
        runs = [self._view(row, self._open(row)) for row in rows]
        if status == "stalled":
            runs = [run for run in runs if run.stalled][:limit]
        return runs

    def create(
        self,
        specs: Sequence[StepSpec],
        *,
        inputs: Mapping[str, Any],
        interval: float,
        timeout: float | None,
        script: str | None,
        run_id: str | None = None,
    ) -> FlowRun:
        """Create a run that waits for its first tick."""
        run, _ = self._create(specs, inputs, interval, timeout, script, run_id, None)
        return run

    def start(
        self,
        specs: Sequence[StepSpec],
        *,
        inputs: Mapping[str, Any],
        interval: float,
        timeout: float | None,
        script: str | None,
        run_id: str | None = None,
        budget: float = DEFAULT_BUDGET_SECONDS,
    ) -> tuple[FlowRun, Claim]:
        """Create a run already holding the lease for its first step, in one transaction.

        Pass the claim to `tick` as `claimed`: the first step then runs with no transaction
        of its own to take the lease.
        """
        run, claim = self._create(specs, inputs, interval, timeout, script, run_id, budget)
        assert claim is not None
        return run, claim

    def _create(
        self,
        specs: Sequence[StepSpec],
        inputs: Mapping[str, Any],
        interval: float,
        timeout: float | None,
        script: str | None,
        run_id: str | None,
        budget: float | None,
    ) -> tuple[FlowRun, Claim | None]:
        """Write a new run; with a `budget`, also take its first step's lease for that long."""
        moment = self.clock()
        details = RunDetails(
            steps=[StepRecord(spec.name, spec.source_hash) for spec in specs],
            inputs=dict(inputs),
            interval=interval,
            timeout=timeout,
            script=script,
        )

        def work(transaction: Transaction) -> tuple[RunRow, Claim | None]:
            chosen = check_run_id(run_id) if run_id else new_run_id(moment)
            while transaction.get_run(self.app, chosen) is not None:
                if run_id:
                    raise RunStateError(f"run {run_id!r} already exists")
                chosen = new_run_id(moment)
            self.vault.register(transaction)
            row = RunRow(
                app=self.app,
                run_id=chosen,
                status="pending",
                step_index=0,
                next_check_at=moment,
                lease_holder=None,
                lease_expires_at=None,
                created_at=moment,
                updated_at=moment,
                expires_at=None,
                blob=b"",
            )
            if budget is None:
                return self._put(transaction, row, details), None
            holder = new_holder(secrets.token_hex(4))
            claim = self._take(transaction, row, details, holder, moment, moment, budget, [])
            return claim.written, claim

        row, claim = self.store.transact(work)
        log.debug("run %s created with steps %s", row.run_id, ", ".join(details.step_names))
        return self._view(row, details), claim

    def attach(self, run_id: str, specs: Sequence[StepSpec]) -> FlowRun:
        """Check that `specs` are the steps the run started with, and return the run."""
        run = self.get(run_id)
        names = [spec.name for spec in specs]
        if names != run.step_names:
            raise StepMismatchError(
                f"run {run_id} has the steps [{', '.join(run.step_names)}] but was resumed with "
                f"[{', '.join(names)}]; resume it with the same steps in the same order"
            )
        row = self._row(None, run_id)
        stored = self._open(row).steps
        changed = [
            spec.name
            for spec, record in zip(specs, stored, strict=True)
            if spec.source_hash and record.source_hash and spec.source_hash != record.source_hash
        ]
        if changed:
            message = (
                f"the source of step {', '.join(changed)} changed since run {run_id} started; "
                "resuming with the new code"
            )
            warnings.warn(message, stacklevel=3)
        return run

    def cancel(self, run_id: str) -> FlowRun:
        """Stop a run: it starts no further check; a step already running is not moved on."""

        def work(transaction: Transaction) -> tuple[RunRow, RunDetails]:
            row = self._row(transaction, run_id)
            details = self._open(row)
            if row.status in END_STATUSES:
                raise RunStateError(f"run {run_id} has already {ended_word(row.status)}")
            moment = self.clock()
            details.ended_at = moment
            # The step the run was on shows why it will not go on, instead of "waiting".
            details.steps[row.step_index].status = "cancelled"
            row = self._end(transaction, row, details, "cancelled", moment)
            return row, details

        row, details = self.store.transact(work)
        log.debug("run %s cancelled", run_id)
        return self._view(row, details)

    def retry(self, run_id: str) -> FlowRun:
        """Restart a failed run at the step that failed, keeping its context."""

        def work(transaction: Transaction) -> tuple[RunRow, RunDetails]:
            row = self._row(transaction, run_id)
            details = self._open(row)
            if row.status != "failed":
                state = ended_word(row.status) if row.status in END_STATUSES else "not failed"
                raise RunStateError(f"run {run_id} has {state}; only a failed run can be retried")
            index = min(row.step_index, len(details.steps) - 1)
            failed = details.steps[index]
            details.steps[index] = StepRecord(failed.name, failed.source_hash, output=failed.output)
            details.ended_at = None
            details.error = None
            moment = self.clock()
            transaction.set_expiry(self.vault.context_namespace(run_id), None)
            row = self._put(
                transaction,
                row,
                details,
                status="waiting",
                step_index=index,
                next_check_at=moment,
                expires_at=None,
                lease_holder=None,
                lease_expires_at=None,
            )
            return row, details

        row, details = self.store.transact(work)
        log.debug("run %s retried from step %s", run_id, details.steps[row.step_index].name)
        return self._view(row, details)

    def purge(self, older_than: float) -> list[str]:
        """Delete ended runs whose last update is more than `older_than` seconds ago."""
        cutoff = self.clock() - older_than
        rows = self.store.list_runs(self.app, END_STATUSES)
        doomed = [row.run_id for row in rows if row.updated_at < cutoff]
        if doomed:
            self.store.delete_runs(self.app, doomed)
        return doomed

    def _end(
        self, transaction: Transaction, row: RunRow, details: RunDetails, status: str, moment: float
    ) -> RunRow:
        expires_at = moment + RETENTION_SECONDS
        details.ended_at = moment
        transaction.set_expiry(self.vault.context_namespace(row.run_id), expires_at)
        return self._put(
            transaction,
            row,
            details,
            status=status,
            next_check_at=None,
            lease_holder=None,
            lease_expires_at=None,
            expires_at=expires_at,
        )

    # The tick.

    def tick(
        self,
        run_id: str,
        steps: Mapping[str, StepSpec],
        *,
        force: bool = False,
        budget: float = DEFAULT_BUDGET_SECONDS,
        echo: Callable[[str], None] | None = None,
        keep_lease: bool = False,
        kept: Claim | None = None,
        claimed: Claim | None = None,
    ) -> TickResult:
        """Execute the run's current step, and the next ones while they CONTINUE and time allows.

        `echo` receives each step transition as it happens. With `keep_lease`, a step that
        reruns keeps the lease until its next check and the result carries it as `kept`; pass
        that to the next tick to skip taking the lease again. `claimed` is the claim `start`
        returned, for the run's first tick.
        """
        show = _EventEcho(echo)
        claim: Claim | TickResult | None = claimed
        if claimed is not None:
            claimed.keep_lease = keep_lease
        elif kept is not None:
            claim = self._reclaim(kept, steps, force, self.store.get_run(self.app, run_id))
        if claim is None:
            claim = self.claim(run_id, steps, force=force, budget=budget, keep_lease=keep_lease)
        while isinstance(claim, Claim):
            show(claim.events)
            result = self.execute(steps[claim.step_name], claim)
            claim = self.commit(claim, steps, result)
        show(claim.events)
        return claim

    async def tick_async(
        self,
        run_id: str,
        steps: Mapping[str, StepSpec],
        *,
        force: bool = False,
        budget: float = DEFAULT_BUDGET_SECONDS,
        echo: Callable[[str], None] | None = None,
        keep_lease: bool = False,
        kept: Claim | None = None,
        claimed: Claim | None = None,
    ) -> TickResult:
        """Do what `tick` does on an event loop, blocking it only for a local store's reads.

        Plain steps run in worker threads. Commits go through the store's `transact_async`, so
        a store can group the commits of many runs. A local store's check of a kept lease reads
        on the loop's thread, in one query with the other runs due in the same turn of the
        loop. Other stores read in worker threads.
        """
        show = _EventEcho(echo)
        claim: Claim | TickResult | None = claimed
        if claimed is not None:
            claimed.keep_lease = keep_lease
        elif kept is not None:
            if self.store.reads_are_local:
                row = await self._batched_reads().read(kept.written)
            else:
                row = await asyncio.to_thread(self.store.get_run, self.app, run_id)
            claim = self._reclaim(kept, steps, force, row)
        if claim is None:
            work = self._claim_work(run_id, steps, force, budget, keep_lease)
            claim = await self.store.transact_async(work)
        while isinstance(claim, Claim):
            show(claim.events)
            result = await self.execute_async(steps[claim.step_name], claim)
            claim = await self.commit_async(claim, steps, result)
        show(claim.events)
        return claim

    def claim(
        self,
        run_id: str,
        steps: Mapping[str, StepSpec],
        *,
        force: bool = False,
        budget: float = DEFAULT_BUDGET_SECONDS,
        keep_lease: bool = False,
    ) -> Claim | TickResult:
        """Take the run's lease for its current step, or return why no step may run now."""
        return self.store.transact(self._claim_work(run_id, steps, force, budget, keep_lease))

    def _claim_work(
        self,
        run_id: str,
        steps: Mapping[str, StepSpec],
        force: bool,
        budget: float,
        keep_lease: bool,
    ) -> Callable[[Transaction], Claim | TickResult]:
        holder = new_holder(secrets.token_hex(4))
        tick_started = self.clock()

        def work(transaction: Transaction) -> Claim | TickResult:
            row = self._row(transaction, run_id)
            moment = self.clock()
            if row.status in END_STATUSES:
                return self._skip(row, f"run {run_id} has already {ended_word(row.status)}")

            if row.lease_holder and (row.lease_expires_at or 0) > moment:
                if holder_alive(row.lease_holder):
                    until = datetime.fromtimestamp(row.lease_expires_at, timezone.utc)
                    return self._skip(
                        row,
                        f"run {run_id} is busy: {row.lease_holder} holds its lease until "
                        f"{until.isoformat(timespec='seconds')}",
                        busy_until=until,
                    )
                log.info(
                    "run %s: taking over the lease of %s, whose process is gone",
                    run_id,
                    row.lease_holder,
                )

            if not force and row.next_check_at is not None and row.next_check_at > moment:
                when = datetime.fromtimestamp(row.next_check_at, timezone.utc)
                return self._skip(
                    row,
                    f"run {run_id} is not due: its next check is at "
                    f"{when.isoformat(timespec='seconds')}",
                )

            details = self._open(row)
            events: list[str] = []
            row, ended = self._apply_limits(transaction, row, details, steps, moment, events)
            if ended is not None:
                return ended
            claim = self._take(
                transaction, row, details, holder, moment, tick_started, budget, events
            )
            claim.keep_lease = keep_lease
            return claim

        return work

    def _batched_reads(self) -> _BatchedReads:
        loop = asyncio.get_running_loop()
        if self._reads is None or self._reads.loop is not loop:
            self._reads = _BatchedReads(self.store, self.app, loop)
        return self._reads

    def _reclaim(
        self, kept: Claim, steps: Mapping[str, StepSpec], force: bool, row: RunRow | None
    ) -> Claim | TickResult | None:
        """Check a kept lease against the run as just read. None sends the tick down the
        transactional path.

        The read catches a cancel or a takeover that happened while the runner waited, so no
        step starts on a run that has ended.
        """
        moment = self.clock()
        if (
            row is None
            or row.status != "waiting"
            or row.lease_holder != kept.holder
            or row.step_index != kept.step_index
            or (row.lease_expires_at or 0) <= moment
        ):
            return None
        unchanged = kept.details is not None and row == kept.written
        details = kept.details if unchanged else self._open(row)
        if not force and row.next_check_at is not None and row.next_check_at > moment:
            when = datetime.fromtimestamp(row.next_check_at, timezone.utc)
            result = self._skip(
                row,
                f"run {kept.run_id} is not due: its next check is at "
                f"{when.isoformat(timespec='seconds')}",
            )
            result.kept = kept
            return result
        step = details.steps[row.step_index]
        options = _options(steps, step.name)
        step_timed_out = (
            options.timeout is not None
            and step.first_check_at is not None
            and moment - step.first_check_at >= options.timeout
        )
        run_timed_out = details.timeout is not None and moment - row.created_at >= details.timeout
        if step_timed_out or run_timed_out:
            return None
        # The kept claim serves this one check, so it becomes the claim instead of a copy.
        kept.tick_started = moment
        kept.rechecked = True
        kept.expected = row
        kept.details = details
        kept.events.clear()
        kept.lease_lost = False
        return kept

    def release(self, claim: Claim) -> None:
        """Give up a kept lease, for a runner that stops while a step waits."""

        def work(transaction: Transaction) -> None:
            row = transaction.get_run(self.app, claim.run_id)
            if row is not None and row.lease_holder == claim.holder:
                transaction.put_run(
                    replace(row, lease_holder=None, lease_expires_at=None, updated_at=self.clock())
                )

        self.store.transact(work)

    def _skip(
        self,
        row: RunRow,
        reason: str,
        busy_until: datetime | None = None,
        events: list[str] | None = None,
    ) -> TickResult:
        return TickResult(row, self, False, reason, busy_until, events or [])

    def _take(
        self,
        transaction: Transaction,
        row: RunRow,
        details: RunDetails,
        holder: str,
        moment: float,
        tick_started: float,
        budget: float,
        events: list[str],
    ) -> Claim:
        step = details.steps[row.step_index]
        if step.checks == 0:
            events.append(f"{step.name}: started")
        step.checks += 1
        step.status = "running"
        step.first_check_at = step.first_check_at or moment
        step.last_check_at = moment
        row = self._put(
            transaction,
            row,
            details,
            status="running",
            lease_holder=holder,
            lease_expires_at=moment + budget,
        )
        return Claim(
            run_id=row.run_id,
            holder=holder,
            step_index=row.step_index,
            step_name=step.name,
            attempt=step.checks,
            inputs=details.inputs,
            tick_started=tick_started,
            budget=budget,
            events=events,
            written=row,
            # This process just wrote the run, so the commit can be one write that checks the
            # run is still this, and the details need no decrypting.
            expected=row,
            details=details,
        )

    def _apply_limits(
        self,
        transaction: Transaction,
        row: RunRow,
        details: RunDetails,
        steps: Mapping[str, StepSpec],
        moment: float,
        events: list[str],
    ) -> tuple[RunRow, TickResult | None]:
        """End the run, or move past a timed-out step, when a timeout is hit.

        Returns the run as it now is, and a result when the run ended.
        """
        if details.timeout is not None and moment - row.created_at >= details.timeout:
            details.error = _error_record(
                details.steps[row.step_index].name,
                "RunTimeout",
                f"run {row.run_id} timed out: it has been going for "
                f"{format_duration(moment - row.created_at)}, longer than its timeout of "
                f"{format_duration(details.timeout)}",
            )
            details.steps[row.step_index].status = "failed"
            row = self._end(transaction, row, details, "failed", moment)
            events.append(f"run failed: {details.error['message']}")
            return row, self._skip(row, details.error["message"], events=events)

        while True:
            step = details.steps[row.step_index]
            options = _options(steps, step.name)
            if options.timeout is None or step.first_check_at is None:
                return row, None
            if moment - step.first_check_at < options.timeout:
                return row, None
            message = (
                f"step {step.name!r} timed out: it has been checking for "
                f"{format_duration(moment - step.first_check_at)} since its first check, "
                f"reaching its timeout of {format_duration(options.timeout)}"
            )
            if options.on_timeout is not CONTINUE:
                return row, self._fail(
                    transaction, row, details, step, "StepTimeout", message, moment, events
                )
            events.append(f"{message}; moving on as on_timeout=CONTINUE says")
            row = self._advance(row, details, step, moment, events)
            if row.status == "succeeded":
                row = self._end(transaction, row, details, "succeeded", moment)
                return row, self._skip(row, "run succeeded", events=events)

    def _fail(
        self,
        transaction: Transaction,
        row: RunRow,
        details: RunDetails,
        step: StepRecord,
        kind: str,
        message: str,
        moment: float,
        events: list[str],
        trace: str | None = None,
    ) -> TickResult:
        step.status = "failed"
        details.error = _error_record(step.name, kind, message, trace)
        row = self._end(transaction, row, details, "failed", moment)
        events.append(f"{step.name}: failed: {message}")
        return self._skip(row, message, events=events)

    def _advance(
        self, row: RunRow, details: RunDetails, step: StepRecord, moment: float, events: list[str]
    ) -> RunRow:
        step.status = "done"
        step.finished_at = moment
        # A retried step that now succeeds leaves no error behind on the run.
        details.error = None
        index = row.step_index + 1
        checks = f"{step.checks} check{'s' if step.checks != 1 else ''}"
        took = f"done after {checks}, {format_duration(max(moment - step.first_check_at, 0.001))}"
        if index >= len(details.steps):
            events.append(f"{step.name}: {took}; run succeeded")
            return replace(row, step_index=row.step_index, status="succeeded")
        events.append(f"{step.name}: {took} -> {details.steps[index].name}")
        return replace(row, step_index=index, status="waiting", next_check_at=moment)

    def execute(self, spec: StepSpec, claim: Claim) -> StepResult:
        """Run a step in this thread, renewing the lease while it runs; `async def` steps too."""
        context = Context(self.vault, claim.run_id, claim.step_name, claim.attempt, claim.inputs)
        started = time.perf_counter()
        error = None
        value = None
        with CapturedOutput(echo=not self.log_output) as output, self.renewing(claim):
            try:
                value = spec.function(context)
                if inspect.isawaitable(value):
                    value = asyncio.run(_awaited(value))
            except (Exception, SystemExit) as raised:
                # sys.exit() in a step fails its run; it must not end every run in the process.
                error = raised
        return self._step_result(claim, value, error, started, output, context)

    def _step_result(
        self,
        claim: Claim,
        value: Any,
        error: BaseException | None,
        started: float,
        output: list[str],
        context: Context,
    ) -> StepResult:
        if self.log_output:
            labels = {"run_id": claim.run_id, "step": claim.step_name}
            for line in output:
                step_log.info("%s", line, extra=labels)
        # Microseconds are plenty, and the shorter numbers make the sealed run smaller.
        return StepResult(value, error, round(time.perf_counter() - started, 6), output, context)

    async def execute_async(self, spec: StepSpec, claim: Claim) -> StepResult:
        """Run a step without blocking the event loop.

        An `async def` step runs on the loop; a plain step runs in a worker thread, so a slow
        step never freezes the loop (or a notebook's widgets) while it works.
        """
        if not inspect.iscoroutinefunction(spec.function):
            return await asyncio.to_thread(self.execute, spec, claim)

        context = Context(self.vault, claim.run_id, claim.step_name, claim.attempt, claim.inputs)
        started = time.perf_counter()
        error = None
        value = None
        with CapturedOutput(echo=not self.log_output) as output, self.renewing(claim):
            try:
                value = await spec.function(context)
            except (Exception, SystemExit) as raised:
                error = raised
        return self._step_result(claim, value, error, started, output, context)

    def renewing(self, claim: Claim) -> Renewing:
        """Extend the lease every third of the budget until the block ends."""
        return Renewing(functools.partial(self.renew, claim), claim.budget / 3)

    def renew(self, claim: Claim) -> bool:
        """Extend the claim's lease; return False (and mark the claim) if it was lost."""

        def work(transaction: Transaction) -> bool:
            row = transaction.get_run(self.app, claim.run_id)
            if row is None or row.lease_holder != claim.holder:
                return False
            transaction.put_run(replace(row, lease_expires_at=self.clock() + claim.budget))
            return True

        held = self.store.transact(work)
        if not held:
            claim.lease_lost = True
        return held

    def commit(
        self, claim: Claim, steps: Mapping[str, StepSpec], result: StepResult
    ) -> Claim | TickResult:
        """Record the step's outcome and context writes, if the lease is still ours."""
        work = self._commit_work(claim, steps, result)
        outcome = None
        if claim.expected is not None:
            recorded = self._record_one_write(claim, work)
            if recorded is not None and self.store.commit_run(*recorded[1]):
                outcome = recorded[0]
        if outcome is None:
            outcome = self.store.transact(work)
        return _ran_step(outcome)

    async def commit_async(
        self, claim: Claim, steps: Mapping[str, StepSpec], result: StepResult
    ) -> Claim | TickResult:
        """Do what `commit` does, through the store's calls for an event loop."""
        work = self._commit_work(claim, steps, result)
        outcome = None
        if claim.expected is not None:
            recorded = self._record_one_write(claim, work)
            if recorded is not None and await self.store.commit_run_async(*recorded[1]):
                outcome = recorded[0]
        if outcome is None:
            outcome = await self.store.transact_async(work)
        return _ran_step(outcome)

    def _commit_work(
        self, claim: Claim, steps: Mapping[str, StepSpec], result: StepResult
    ) -> Callable[[Transaction], Claim | TickResult]:
        # A partial, not a closure: thousands of commits may wait at once, and a closure would
        # add a cell object per captured name for the garbage collector to walk.
        puts, deletes = result.context.pending_writes()
        events_before = len(claim.events)
        return functools.partial(
            self._commit_in, claim, steps, result, puts, deletes, events_before
        )

    def _commit_in(
        self,
        claim: Claim,
        steps: Mapping[str, StepSpec],
        result: StepResult,
        puts: list[Record],
        deletes: list[str],
        events_before: int,
        transaction: Transaction,
    ) -> Claim | TickResult:
        """Apply a step's outcome in `transaction`: the work of `_commit_work`.

        The work may run more than once: as one conditional write first, then in a transaction,
        and again if the transaction is retried. Each run drops the events of the one before.
        """
        events = claim.events
        del events[events_before:]
        row = self._row(transaction, claim.run_id)
        details, claim.details = claim.details, None
        if details is None or row is not claim.expected:
            details = self._open(row)
        moment = self.clock()
        if claim.rechecked:
            # The check was counted when the wait began, and this is when it ran.
            details.steps[claim.step_index].last_check_at = claim.tick_started
        if row.status == "cancelled":
            return self._skip(
                row,
                f"run {claim.run_id} was cancelled while step {claim.step_name!r} ran; "
                "its outcome was discarded",
                events=events,
            )
        if row.lease_holder != claim.holder or row.step_index != claim.step_index:
            return self._skip(
                row,
                f"the lease on run {claim.run_id} was lost while step {claim.step_name!r} "
                "ran, so its outcome was discarded and the step will run again",
                events=events,
            )
        step = details.steps[row.step_index]
        step.seconds_spent = round(step.seconds_spent + result.seconds, 6)
        step.keep_output(result.output)

        options = _options(steps, step.name)
        outcome = result.value
        if result.error is not None:
            return self._after_error(
                transaction, row, details, step, options, result, moment, events
            )
        if not isinstance(outcome, Outcome):
            step.remember(moment, "invalid", result.seconds)
            return self._fail(
                transaction,
                row,
                details,
                step,
                "InvalidOutcome",
                f"step {step.name!r} returned {outcome!r}; a step must return "
                "cloudflow.CONTINUE, cloudflow.RERUN or cloudflow.FAIL",
                moment,
                events,
            )

        context_namespace = self.vault.context_namespace(claim.run_id)
        for record in puts:
            transaction.put(context_namespace, record)
        for record_id in deletes:
            transaction.delete(context_namespace, record_id)
        step.remember(moment, outcome.kind, result.seconds)

        if outcome.kind == FAIL.kind:
            return self._fail(
                transaction,
                row,
                details,
                step,
                "StepFailed",
                f"step {step.name!r} returned cloudflow.FAIL",
                moment,
                events,
            )

        if outcome.kind == RERUN.kind:
            step.reruns += 1
            if options.max_checks is not None and step.reruns > options.max_checks:
                message = (
                    f"step {step.name!r} returned RERUN {step.reruns} times, more than "
                    f"its max_checks of {options.max_checks}"
                )
                if options.on_timeout is not CONTINUE:
                    return self._fail(
                        transaction,
                        row,
                        details,
                        step,
                        "MaxChecksExceeded",
                        message,
                        moment,
                        events,
                    )
                events.append(f"{message}; moving on as on_timeout=CONTINUE says")
            else:
                return self._wait(
                    claim, transaction, row, details, step, options, outcome, moment, events
                )

        row = self._advance(row, details, step, moment, events)
        if row.status == "succeeded":
            row = self._end(transaction, row, details, "succeeded", moment)
            return self._skip(row, "run succeeded", events=events)

        row, ended = self._apply_limits(transaction, row, details, steps, moment, events)
        if ended is not None:
            return ended
        if moment - claim.tick_started < claim.budget / 2 and not claim.lease_lost:
            chained = self._take(
                transaction,
                row,
                details,
                claim.holder,
                moment,
                claim.tick_started,
                claim.budget,
                events,
            )
            chained.keep_lease = claim.keep_lease
            return chained
        row = self._put(transaction, row, details, lease_holder=None, lease_expires_at=None)
        return self._skip(row, "the tick's time budget is spent", events=events)

    def _record_one_write(
        self, claim: Claim, work: Callable[[Transaction], Claim | TickResult]
    ) -> tuple[Claim | TickResult, tuple[Any, ...]] | None:
        """Prepare a commit as one conditional write against the run last written or read.

        Returns the outcome and the arguments of `commit_run`, or None when one write cannot
        do (the outcome ends the run, for example), and the caller commits in a transaction.
        If `commit_run` then finds the run changed meanwhile, the caller does the same.
        """
        assert claim.expected is not None
        recorder = RecordingTransaction(claim.expected, self.vault.context_namespace(claim.run_id))
        try:
            outcome = work(recorder)
        except NeedsTransaction:
            return None
        if recorder.run is None:
            return None
        return outcome, (
            claim.expected,
            recorder.run,
            recorder.namespace,
            recorder.puts,
            recorder.deletes,
        )

    def _wait(
        self,
        claim: Claim,
        transaction: Transaction,
        row: RunRow,
        details: RunDetails,
        step: StepRecord,
        options: StepOptions,
        outcome: Outcome,
        moment: float,
        events: list[str],
    ) -> TickResult:
        delay = outcome.delay or _grown_delay(options, details.interval, step.reruns)
        next_check = moment + delay
        if options.timeout is not None and step.first_check_at is not None:
            next_check = min(next_check, step.first_check_at + options.timeout)
        if details.timeout is not None:
            next_check = min(next_check, row.created_at + details.timeout)
        if step.reruns == 1:
            events.append(f"{step.name}: waiting, next check in {format_duration(delay)}")
        step.status = "waiting"
        step.next_delay = delay
        reason = f"step {step.name!r} will be checked again"
        if not claim.keep_lease or next_check - moment > MAX_KEPT_WAIT_SECONDS:
            row = self._put(
                transaction,
                row,
                details,
                status="waiting",
                next_check_at=next_check,
                lease_holder=None,
                lease_expires_at=None,
            )
            return self._skip(row, reason, events=events)

        # Keep the lease through the wait and take the next check now, counted durably, so
        # the next tick needs no transaction of its own to start the step.
        step.checks += 1
        row = self._put(
            transaction,
            row,
            details,
            status="waiting",
            next_check_at=next_check,
            lease_holder=claim.holder,
            lease_expires_at=next_check + claim.budget,
        )
        result = self._skip(row, reason, events=events)
        result.kept = Claim(
            run_id=row.run_id,
            holder=claim.holder,
            step_index=row.step_index,
            step_name=step.name,
            attempt=step.checks,
            inputs=details.inputs,
            tick_started=moment,
            budget=claim.budget,
            keep_lease=True,
            written=row,
            details=details,
        )
        return result

    def _after_error(
        self,
        transaction: Transaction,
        row: RunRow,
        details: RunDetails,
        step: StepRecord,
        options: StepOptions,
        result: StepResult,
        moment: float,
        events: list[str],
    ) -> TickResult:
        error = result.error
        assert error is not None
        step.failures += 1
        step.remember(moment, "error", result.seconds)
        message = f"step {step.name!r} raised {type(error).__name__}: {error}"
        trace = "".join(traceback.format_exception(error))
        if step.failures <= options.retries:
            delay = _grown_delay(options, details.interval, step.failures)
            details.error = _error_record(step.name, type(error).__name__, str(error), trace)
            step.status = "waiting"
            events.append(
                f"{step.name}: raised {type(error).__name__}, retry {step.failures} of "
                f"{options.retries} in {format_duration(delay)}"
            )
            row = self._put(
                transaction,
                row,
                details,
                status="waiting",
                next_check_at=moment + delay,
                lease_holder=None,
                lease_expires_at=None,
            )
            return self._skip(row, message, events=events)
        return self._fail(
            transaction, row, details, step, type(error).__name__, message, moment, events, trace
        )


class _BatchedReads:
    """The reads of runs that tasks on one event loop request in the same turn, made in one query.

    Thousands of runs that each wake once a second check their kept leases. One query per turn
    of the loop instead of one per run saves time, and it saves the loop's thread from giving up
    the GIL thousands of times a second to another thread that may then keep it.
    """

    def __init__(self, store: Store, app: str, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.app = app
        self.loop = loop
        self._waiting: list[tuple[RunRow, asyncio.Future[RunRow | None]]] = []

    def read(self, written: RunRow) -> asyncio.Future[RunRow | None]:
        """Return the run as stored now, given `written`, the run as this process last wrote it."""
        if not self._waiting:
            self.loop.call_soon(self._read_all)
        future = self.loop.create_future()
        self._waiting.append((written, future))
        return future

    def _read_all(self) -> None:
        waiting, self._waiting = self._waiting, []
        try:
            changed = self.store.changed_runs(self.app, [written for written, _ in waiting])
        except Exception as error:
            for _, future in waiting:
                if not future.done():
                    future.set_exception(error)
            return
        for written, future in waiting:
            # A task cancelled while it waited has cancelled its future too.
            if not future.done():
                future.set_result(changed.get(written.run_id, written))


class _EventEcho:
    """Passes each new step transition of a tick to `echo`, once."""

    def __init__(self, echo: Callable[[str], None] | None) -> None:
        self._echo = echo
        self._shown = 0

    def __call__(self, events: list[str]) -> None:
        if self._echo is not None:
            for event in events[self._shown :]:
                self._echo(event)
        self._shown = len(events)


def _options(steps: Mapping[str, StepSpec], name: str) -> StepOptions:
    spec = steps.get(name)
    return spec.options if spec is not None else StepOptions()


def _grown_delay(options: StepOptions, run_interval: float, count: int) -> float:
    delay = (options.interval or run_interval) * options.backoff ** max(count - 1, 0)
    if options.max_interval is not None:
        delay = min(delay, options.max_interval)
    return delay


def _error_record(step: str, kind: str, message: str, trace: str | None = None) -> dict[str, Any]:
    return {"step": step, "type": kind, "message": message, "traceback": trace}


def _ran_step(outcome: Claim | TickResult) -> Claim | TickResult:
    if isinstance(outcome, TickResult):
        outcome.ran_step = True
    return outcome


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
