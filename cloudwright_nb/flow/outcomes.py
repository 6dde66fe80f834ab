"""Step outcomes (CONTINUE, RERUN, FAIL) and the `@cloudflow.step` options."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..durations import Duration, parse_duration
from ..errors import InvalidStepError


@dataclass(frozen=True)
class Outcome:
    """The value a step returns; `delay` is set only by `RERUN.after(...)`."""

    kind: str
    delay: float | None = None

    def after(self, delay: Duration) -> Outcome:
        """Return RERUN with its own delay before the next check."""
        if self.kind != "rerun":
            raise InvalidStepError(f"only RERUN takes a delay; {self} does not")
        return Outcome("rerun", parse_duration(delay, name="RERUN.after delay"))

    def __repr__(self) -> str:
        name = f"cloudflow.{self.kind.upper()}"
        return f"{name}.after({timedelta(seconds=self.delay)})" if self.delay else name

    __str__ = __repr__


CONTINUE = Outcome("continue")
RERUN = Outcome("rerun")
FAIL = Outcome("fail")

_STEP_ATTRIBUTE = "__cloudflow_step__"


@dataclass(frozen=True)
class StepOptions:
    """Limits and retries of one step; all durations in seconds."""

    retries: int = 0
    backoff: float = 1.0
    timeout: float | None = None
    max_checks: int | None = None
    max_interval: float | None = None
    interval: float | None = None
    on_timeout: Outcome = FAIL
    name: str | None = None


def step(
    function: Callable[..., Any] | None = None,
    *,
    retries: int = 0,
    backoff: float = 1.0,
    timeout: Duration | None = None,
    max_checks: int | None = None,
    max_interval: Duration | None = None,
    interval: Duration | None = None,
    on_timeout: Outcome = FAIL,
    name: str | None = None,
) -> Any:
    """Declare a step's retries and limits; usable as `@step` or `@step(retries=3, ...)`.

    - `retries`: how many times a step that raised runs again before the run fails.
    - `backoff`: the factor by which the delay grows after each rerun or retry (1 keeps it).
    - `timeout`: the longest the step may keep checking, from its first check.
    - `max_checks`: how many times the step may return RERUN.
    - `max_interval`: the cap on the growing delay.
    - `interval`: this step's delay between checks, instead of the run's.
    - `on_timeout`: FAIL (the default) ends the run when a limit is hit; CONTINUE moves on.
    """
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise InvalidStepError(f"invalid retries={retries!r}: use a whole number, 0 or more")
    if isinstance(backoff, bool) or not isinstance(backoff, int | float) or backoff < 1:
        raise InvalidStepError(f"invalid backoff={backoff!r}: use a factor of 1 or more, like 2")
    if max_checks is not None and (
        not isinstance(max_checks, int) or isinstance(max_checks, bool) or max_checks < 0
    ):
        raise InvalidStepError(f"invalid max_checks={max_checks!r}: use a whole number, 0 or more")
    if on_timeout not in (FAIL, CONTINUE):
        raise InvalidStepError(
            f"invalid on_timeout={on_timeout!r}: use cloudflow.FAIL or cloudflow.CONTINUE"
        )
    options = StepOptions(
        retries=retries,
        backoff=float(backoff),
        timeout=parse_duration(timeout, name="timeout") if timeout is not None else None,
        max_checks=max_checks,
        max_interval=(
            parse_duration(max_interval, name="max_interval") if max_interval is not None else None
        ),
        interval=parse_duration(interval, name="interval") if interval is not None else None,
        on_timeout=on_timeout,
        name=name,
    )

    def decorate(target: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(target):
            raise InvalidStepError(f"@cloudflow.step decorates a function, not {target!r}")
        setattr(target, _STEP_ATTRIBUTE, options)
        return target

    return decorate(function) if function is not None else decorate


def options_of(function: Callable[..., Any]) -> StepOptions:
    return getattr(function, _STEP_ATTRIBUTE, None) or StepOptions()


def name_of(function: Callable[..., Any]) -> str:
    return options_of(function).name or getattr(function, "__name__", repr(function))
