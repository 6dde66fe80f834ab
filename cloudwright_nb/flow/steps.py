"""Step functions as runs know them, and the ids runs get."""

from __future__ import annotations

import functools
import hashlib
import inspect
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..errors import InvalidRunIdError, InvalidStepError
from .outcomes import StepOptions, name_of, options_of

MAX_RUN_ID_LENGTH = 128
_RUN_ID_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True)
class StepSpec:
    """A step as a runner needs it: its name, its function and its options."""

    name: str
    function: Callable[..., Any]
    options: StepOptions
    source_hash: str


def step_specs(functions: Sequence[Callable[..., Any]]) -> list[StepSpec]:
    """Check the functions given to `cloudflow.run` and describe each as a step."""
    if not functions:
        raise InvalidStepError("cloudflow.run needs at least one step function")
    specs = []
    for position, function in enumerate(functions, start=1):
        if isinstance(function, list | tuple):
            raise InvalidStepError(
                "pass the steps as separate arguments, cloudflow.run(first, second), "
                "not as one list; unpack it with cloudflow.run(*steps)"
            )
        if not callable(function):
            raise InvalidStepError(
                f"step {position} is {function!r}, not a function; pass the step functions "
                "themselves, without calling them"
            )
        specs.append(
            StepSpec(name_of(function), function, options_of(function), _source_hash(function))
        )
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidStepError(
            f"step names must be unique, but {', '.join(duplicates)} appears more than once; "
            "give the second one another name with @cloudflow.step(name=...)"
        )
    return specs


def _source_hash(function: Callable[..., Any]) -> str:
    try:
        return _cached_source_hash(function)
    except TypeError:  # an unhashable callable object
        return _hash_source(function)


def _hash_source(function: Callable[..., Any]) -> str:
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return ""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


# Reading source is slow (a file read and a parse per call); a function object's source does
# not change, and a redefined function is a new object.
_cached_source_hash = functools.lru_cache(maxsize=1024)(_hash_source)


def check_run_id(run_id: object) -> str:
    if (
        not isinstance(run_id, str)
        or not run_id
        or len(run_id) > MAX_RUN_ID_LENGTH
        or not set(run_id) <= _RUN_ID_CHARACTERS
    ):
        raise InvalidRunIdError(
            f"invalid run id {run_id!r}: use 1 to {MAX_RUN_ID_LENGTH} letters, digits, "
            "dots, dashes or underscores"
        )
    return run_id


def new_run_id(moment: float) -> str:
    stamp = datetime.fromtimestamp(moment, timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"
