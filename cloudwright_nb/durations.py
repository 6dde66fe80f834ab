"""The one parser for every duration: intervals, timeouts, `RERUN.after`, step limits, ttl."""

from __future__ import annotations

import math
import re
from datetime import timedelta

from .errors import InvalidDurationError

Duration = int | float | str | timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_EXAMPLES = "a number of seconds, '500ms', '5s', '2m', '1h', '1d' or a timedelta"
# Check times are stored as timestamps, and one much further ahead overflows the date types.
MAX_SECONDS = 100 * 365 * 86400.0


def parse_duration(value: Duration, *, name: str = "duration") -> float:
    """Return `value` as a positive number of seconds.

    `name` is the option the value came from, so the error can say which one was wrong.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise InvalidDurationError(f"invalid {name} {value!r}: expected {_EXAMPLES}")
    elif isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            seconds = math.inf
    elif isinstance(value, str):
        match = _PATTERN.match(value.removeprefix("-"))
        if match is None:
            raise InvalidDurationError(f"invalid {name} {value!r}: expected {_EXAMPLES}")
        if value.startswith("-"):
            raise InvalidDurationError(f"invalid {name} {value!r}: it must be greater than zero")
        number, unit = match.groups()
        seconds = float(number) * _UNITS[unit or "s"]
    else:
        raise InvalidDurationError(
            f"invalid {name} {value!r} of type {type(value).__name__}: expected {_EXAMPLES}"
        )

    if math.isnan(seconds) or seconds <= 0:
        raise InvalidDurationError(f"invalid {name} {value!r}: it must be greater than zero")
    if seconds > MAX_SECONDS:
        raise InvalidDurationError(
            f"invalid {name} {value!r:.60}: it must be at most 36500d (100 years)"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds the way the parser reads them back, for messages and panels."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.3g}s"
    if seconds < 7200:
        return f"{seconds / 60:.3g}m"
    if seconds < 172800:
        return f"{seconds / 3600:.3g}h"
    return f"{seconds / 86400:.3g}d"
