"""The JSON rules: which values may be stored, where a bad one sits, and the size limit.

What `get` returns must equal `json.loads(json.dumps(value))`, so anything Python's json module
would change silently (non-string dict keys) or cannot write back (NaN, datetime) is rejected
before it reaches the store.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import (
    InvalidKeyError,
    InvalidValueError,
    KeyTypeError,
    UnstorableValueError,
    ValueTooLargeError,
)

MAX_VALUE_BYTES = 900 * 1024
MAX_KEY_LENGTH = 1024
# Below about 4,300 digits (Python's default limit on int-to-text conversion) nothing can fail.
_LARGE_INT_BITS = 14_000
# encode_value writes no whitespace or byte order mark around the value, so reads skip the checks
# json.loads makes for them and call raw_decode. For a 100-byte dict that takes 1.2 us instead of
# 1.9 us (Python 3.11 on a 2-core Xeon virtual machine).
_DECODER = json.JSONDecoder()


def check_key(key: object) -> str:
    """Return `key` if it is a usable key name, else raise naming what is wrong with it."""
    if not isinstance(key, str):
        raise KeyTypeError(
            f"invalid key {key!r}: keys are strings, not {type(key).__name__}; use str(key)"
        )
    if not key:
        raise InvalidKeyError("invalid key '': a key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(
            f"invalid key {key[:40]!r}... of {len(key):,} characters: "
            f"keys are at most {MAX_KEY_LENGTH:,} characters"
        )
    return key


def encode_value(key: str, value: Any) -> bytes:
    """Encode `value` as compact UTF-8 JSON after checking every part of it can round-trip."""
    try:
        _check_value(key, value, "", set())
        encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except RecursionError:
        raise InvalidValueError(
            f"cannot store key {key!r}: the value is nested too deeply for JSON; flatten it"
        ) from None
    # Lone surrogates are valid in Python strings and in JSON escapes, so keep them.
    data = encoded.encode("utf-8", "surrogatepass")
    if len(data) > MAX_VALUE_BYTES:
        raise ValueTooLargeError(
            f"value for key {key!r} is {len(data):,} bytes once encoded as JSON; "
            f"the limit is {MAX_VALUE_BYTES:,} bytes (900 KiB): store it in smaller pieces "
            "or keep large data in a file or bucket and store its location"
        )
    return data


def decode_value(data: bytes) -> Any:
    text = data.decode("utf-8", "surrogatepass")
    value, end = _DECODER.raw_decode(text)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _check_value(key: str, value: Any, path: str, seen: set[int]) -> None:
    """Walk `value` depth first; `path` is the subscript chain to it, like `['rows'][3]`."""
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if value.bit_length() > _LARGE_INT_BITS:
            try:
                str(value)
            except ValueError:
                raise InvalidValueError(
                    f"cannot store key {key!r}: {_where(path)}the integer has more digits than "
                    "Python converts to text; store it as a string of digits you build yourself"
                ) from None
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValueError(
                f"cannot store key {key!r}: {_where(path)}{value!r} is not valid JSON; "
                "store None or a string instead of NaN or Infinity"
            )
        return

    if isinstance(value, dict | list | tuple):
        if id(value) in seen:
            raise InvalidValueError(
                f"cannot store key {key!r}: {_where(path)}the value contains itself "
                "(a circular reference)"
            )
        seen.add(id(value))
        if isinstance(value, dict):
            for item_key, item in value.items():
                if not isinstance(item_key, str):
                    raise UnstorableValueError(
                        f"cannot store key {key!r}: {_where(path)}dict key {item_key!r} is "
                        f"a {type(item_key).__name__}, but JSON object keys are strings; "
                        "convert the keys with str() first"
                    )
                _check_value(key, item, f"{path}[{item_key!r}]", seen)
        else:
            for index, item in enumerate(value):
                _check_value(key, item, f"{path}[{index}]", seen)
        seen.discard(id(value))
        return

    raise UnstorableValueError(
        f"cannot store key {key!r}: {path or 'the value'}: {type(value).__name__} is not "
        "JSON; convert it to a string, number, bool, None, list or dict first "
        "(for example a datetime with .isoformat() or .timestamp())"
    )


def _where(path: str) -> str:
    return f"{path}: " if path else ""
