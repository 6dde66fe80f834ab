"""Runs and steps as stored (sealed details) and as shown to users (`FlowRun`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson

from ..durations import format_duration
from ..state.stores.base import END_STATUSES, RunRow

if TYPE_CHECKING:
    from .module import CloudFlow

STEP_STATUSES = ("pending", "running", "waiting", "done", "failed", "cancelled")
RECENT_OUTCOMES = 5
OUTPUT_LINES = 20
SUMMARY_OUTPUT_LINES = 3
MIN_STALL_GRACE_SECONDS = 30.0
# For the runs orjson cannot encode. json.dumps with separators would build a new encoder on
# every call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


@dataclass
class StepRecord:
    """One step's progress. Counters and a short tail keep it bounded however often it reruns."""

    name: str
    source_hash: str = ""
    status: str = "pending"
    checks: int = 0
    reruns: int = 0
    failures: int = 0
    first_check_at: float | None = None
    last_check_at: float | None = None
    finished_at: float | None = None
    seconds_spent: float = 0.0
    next_delay: float | None = None
    recent: list[dict[str, Any]] = field(default_factory=list)
    output: list[str] = field(default_factory=list)

    def remember(self, at: float, outcome: str, seconds: float) -> None:
        self.recent.append({"at": at, "outcome": outcome, "seconds": seconds})
        del self.recent[:-RECENT_OUTCOMES]

    def keep_output(self, lines: list[str]) -> None:
        self.output += lines
        del self.output[:-OUTPUT_LINES]


@dataclass
class RunDetails:
    """Everything about a run that is sealed: step names, inputs, errors, output."""

    steps: list[StepRecord]
    inputs: dict[str, Any] = field(default_factory=dict)
    interval: float = 60.0
    timeout: float | None = None
    script: str | None = None
    error: dict[str, Any] | None = None
    ended_at: float | None = None

    def to_json(self) -> bytes:
        # A run is sealed on every check, and orjson encodes it about fifteen times faster
        # than json. It refuses what json takes in an input (integers over 64 bits, keys that
        # are not strings, lone surrogates), so those runs are encoded by json.
        try:
            return orjson.dumps(self)
        except TypeError:
            plain = {**vars(self), "steps": [vars(step) for step in self.steps]}
            return _COMPACT.encode(plain).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RunDetails:
        # Decoded by json, not orjson: orjson turns an integer over 64 bits into a float.
        raw = json.loads(data)
        raw["steps"] = [StepRecord(**step) for step in raw["steps"]]
        return cls(**raw)

    @property
    def step_names(self) -> list[str]:
        return [step.name for step in self.steps]


def time_spent(seconds: float) -> str:
    """Render a step's time spent, or "-" for a step that has not run."""
    return format_duration(max(seconds, 0.001)) if seconds > 0 else "-"


def ended_word(status: str) -> str:
    """Return the participle that follows "has already" for an ended status."""
    return {"succeeded": "succeeded", "failed": "failed", "cancelled": "been cancelled"}[status]


def stall_grace(interval: float) -> float:
    """Return how many seconds a run may be overdue before it counts as stalled."""
    return max(MIN_STALL_GRACE_SECONDS, 2 * interval)


def is_stalled(row: RunRow, details: RunDetails, moment: float) -> bool:
    if row.status in END_STATUSES or row.next_check_at is None:
        return False
    lease_live = row.lease_holder is not None and (row.lease_expires_at or 0) > moment
    return not lease_live and moment - row.next_check_at > stall_grace(details.interval)


def _utc(moment: float | None) -> datetime | None:
    return datetime.fromtimestamp(moment, timezone.utc) if moment is not None else None


@dataclass(frozen=True)
class StepView:
    """A step as shown by panels, `status` and `get_run`."""

    name: str
    status: str
    checks: int
    reruns: int
    failures: int
    seconds_spent: float
    first_check_at: datetime | None
    last_check_at: datetime | None
    finished_at: datetime | None
    recent: list[dict[str, Any]]
    output: list[str]


class FlowRun:
    """A snapshot of a run, with methods to refresh it, wait for it and manage it."""

    # What __init__ sets from the stored run; a LiveRun drops these and rebuilds them lazily.
    FIELDS = frozenset(
        (
            "id",
            "status",
            "step_index",
            "step_names",
            "steps",
            "inputs",
            "interval",
            "timeout",
            "script",
            "error",
            "created_at",
            "updated_at",
            "ended_at",
            "next_check_at",
            "lease_holder",
            "lease_expires_at",
            "stalled",
        )
    )

    def __init__(self, row: RunRow, details: RunDetails, flow: CloudFlow | None, moment: float):
        self._flow = flow
        self.id = row.run_id
        self.status = row.status
        self.step_index = row.step_index
        self.step_names = details.step_names
        self.steps = [
            StepView(
                name=step.name,
                status=step.status,
                checks=step.checks,
                reruns=step.reruns,
                failures=step.failures,
                seconds_spent=step.seconds_spent,
                first_check_at=_utc(step.first_check_at),
                last_check_at=_utc(step.last_check_at),
                finished_at=_utc(step.finished_at),
                recent=list(step.recent),
                output=list(step.output),
            )
            for step in details.steps
        ]
        self.inputs = dict(details.inputs)
        self.interval = details.interval
        self.timeout = details.timeout
        self.script = details.script
        self.error = details.error
        self.created_at = _utc(row.created_at)
        self.updated_at = _utc(row.updated_at)
        self.ended_at = _utc(details.ended_at)
        self.next_check_at = _utc(row.next_check_at) if row.status not in END_STATUSES else None
        self.lease_holder = row.lease_holder
        self.lease_expires_at = _utc(row.lease_expires_at)
        self.stalled = is_stalled(row, details, moment)

    @property
    def current_step(self) -> str | None:
        """The name of the step the run is on, or None once it has ended."""
        if self.status in END_STATUSES and self.status != "failed":
            return None
        if self.step_index < len(self.step_names):
            return self.step_names[self.step_index]
        return None

    @property
    def done(self) -> bool:
        return self.status in END_STATUSES

    def refresh(self) -> FlowRun:
        """Return a fresh snapshot of this run from the store."""
        return self._require_flow().get_run(self.id)

    def cancel(self) -> FlowRun:
        return self._require_flow().cancel(self.id)

    def retry(self) -> FlowRun:
        return self._require_flow().retry(self.id)

    def _require_flow(self) -> CloudFlow:
        if self._flow is None:
            raise RuntimeError("this FlowRun is detached from its CloudFlow module")
        return self._flow

    def summary(self) -> str:
        """Render the run as text, one line per step, for terminals and `cloudwright status`."""
        lines = [f"run {self.id}: {self.status}{' (stalled)' if self.stalled else ''}"]
        for index, step in enumerate(self.steps):
            marker = ">" if index == self.step_index and not self.done else " "
            lines.append(
                f" {marker} {index + 1}. {step.name:<24} {step.status:<9} "
                f"checks {step.checks:<4} {time_spent(step.seconds_spent)}"
            )
            lines += [f"       | {line}" for line in step.output[-SUMMARY_OUTPUT_LINES:]]
        if self.next_check_at and not self.done:
            lines.append(f"next check at {self.next_check_at.isoformat(timespec='seconds')}")
        if self.error:
            lines.append(f"error in step {self.error.get('step')}: {self.error.get('message')}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<FlowRun {self.id} {self.status} step {self.current_step!r}>"
