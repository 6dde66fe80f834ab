"""The JSON rules of the state module: what may be stored, what comes back, and what is rejected.

A value read back must equal `json.loads(json.dumps(value))`, so anything Python's json module
would change silently or cannot represent is rejected with an error that names the key and
where the bad part sits. A rejected write changes nothing.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from cloudwright_nb import CloudWrightError

LIMIT_BYTES = 900 * 1024


def digits_only(message: str) -> str:
    """Drop thousands separators, so `921,600` and `921600` both match."""
    return re.sub(r"(?<=\d)[,_ ](?=\d{3})", "", message)


# What comes back


def test_tuple_comes_back_as_list(state):
    state.set("point", (1, 2, (3, 4)))

    assert state.get("point") == [1, 2, [3, 4]]
    assert type(state.get("point")) is list


@pytest.mark.parametrize(
    "value",
    [
        {"rows": [{"id": 1, "tags": ("a", "b")}, {"id": 2, "tags": ()}], "total": 2.5},
        [None, True, False, 0, -1, 2**62, 1.5e-300, "", "ünïcödé ✓ 🚀", '\x00\n\t"\\'],
        {"": {"nested": {"deeper": [[[]]]}}, "emoji 🚀": {}},
        "just a string",
        12345678901234567890,
        None,
    ],
    ids=["records", "scalars", "nesting", "string", "big-int", "none"],
)
def test_nested_value_round_trips_like_json(state, value):
    state.set("value", value)

    assert state.get("value") == json.loads(json.dumps(value))


def test_shared_reference_is_not_circular(state):
    shared = {"id": 7}

    state.set("pair", [shared, shared, {"again": shared}])

    assert state.get("pair") == [{"id": 7}, {"id": 7}, {"again": {"id": 7}}]


def test_stored_value_is_a_copy(state):
    value = {"rows": [1, 2]}
    state.set("value", value)

    value["rows"].append(3)

    assert state.get("value") == {"rows": [1, 2]}


def test_read_value_is_a_fresh_copy(state):
    state.set("value", {"rows": [1, 2]})

    state.get("value")["rows"].append(3)

    assert state.get("value") == {"rows": [1, 2]}


# Rejected values


@pytest.mark.parametrize("bad_key", [1, 2.5, None, ("a", "b"), True], ids=repr)
def test_non_string_dict_key_is_rejected(state, bad_key):
    with pytest.raises(TypeError) as caught:
        state.set("config", {"rows": [{"ok": 1}, {bad_key: "x"}]})

    message = str(caught.value)
    assert isinstance(caught.value, CloudWrightError)
    assert "'config'" in message
    assert "['rows'][1]" in message
    assert repr(bad_key) in message


def test_top_level_non_string_dict_key_is_rejected(state):
    with pytest.raises(TypeError, match="'config'") as caught:
        state.set("config", {1: "one"})

    assert isinstance(caught.value, CloudWrightError)


@pytest.mark.parametrize(
    "number", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"]
)
def test_nan_and_infinity_are_rejected(state, number):
    with pytest.raises(ValueError) as caught:
        state.set("reading", {"samples": [1.0, number]})

    assert isinstance(caught.value, CloudWrightError)
    assert "'reading'" in str(caught.value)
    assert "['samples'][1]" in str(caught.value)


def test_datetime_deep_inside_value_is_rejected_with_path(state):
    rows = [{"when": "2024-01-01"} for _ in range(3)]
    rows.append({"when": datetime(2024, 1, 4, tzinfo=timezone.utc)})

    with pytest.raises(TypeError) as caught:
        state.set("report", {"rows": rows})

    message = str(caught.value)
    assert isinstance(caught.value, CloudWrightError)
    assert "'report'" in message
    assert "['rows'][3]['when']" in message
    assert "datetime" in message


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (datetime(2024, 1, 1), "datetime"),
        (date(2024, 1, 1), "date"),
        (Decimal("1.5"), "Decimal"),
        ({1, 2}, "set"),
        (b"bytes", "bytes"),
        (object(), "object"),
    ],
    ids=["datetime", "date", "Decimal", "set", "bytes", "object"],
)
def test_unstorable_type_is_rejected_naming_type(state, value, type_name):
    with pytest.raises(TypeError) as caught:
        state.set("thing", value)

    assert isinstance(caught.value, CloudWrightError)
    assert "'thing'" in str(caught.value)
    assert type_name in str(caught.value)


def test_circular_list_is_rejected(state):
    loop: list = [1]
    loop.append(loop)

    with pytest.raises(ValueError, match="circular") as caught:
        state.set("loop", loop)

    assert isinstance(caught.value, CloudWrightError)


def test_circular_dict_is_rejected(state):
    loop: dict = {"name": "root", "children": []}
    loop["children"].append({"parent": loop})

    with pytest.raises(ValueError, match="circular") as caught:
        state.set("tree", loop)

    assert isinstance(caught.value, CloudWrightError)


# The size limit


def test_value_of_exactly_900_kib_is_accepted(state):
    # A JSON string adds two quote characters to its content.
    value = "x" * (LIMIT_BYTES - 2)
    assert len(json.dumps(value).encode()) == LIMIT_BYTES

    state.set("big", value)

    assert state.get("big") == value


def test_value_one_byte_over_900_kib_is_rejected(state):
    value = "x" * (LIMIT_BYTES - 1)

    with pytest.raises(ValueError) as caught:
        state.set("big", value)

    message = digits_only(str(caught.value))
    assert isinstance(caught.value, CloudWrightError)
    assert "'big'" in message
    assert str(LIMIT_BYTES + 1) in message
    assert str(LIMIT_BYTES) in message.replace(str(LIMIT_BYTES + 1), "")


def test_size_counts_utf8_bytes_not_characters(state):
    # "é" is one character but two bytes of UTF-8.
    value = "é" * (LIMIT_BYTES // 2)

    with pytest.raises(ValueError):
        state.set("accents", value)


def test_size_limit_applies_to_update(state):
    with pytest.raises(ValueError):
        state.update("big", lambda _: "x" * LIMIT_BYTES)

    assert "big" not in state


# Keys


def test_empty_key_is_rejected(state):
    with pytest.raises(ValueError) as caught:
        state.set("", 1)

    assert isinstance(caught.value, CloudWrightError)


def test_key_of_1025_characters_is_rejected(state):
    with pytest.raises(ValueError, match=r"1,?024") as caught:
        state.set("k" * 1025, 1)

    assert isinstance(caught.value, CloudWrightError)
    assert len(state) == 0


def test_key_of_1024_characters_is_accepted(state):
    key = "k" * 1024

    state.set(key, "long")

    assert state.get(key) == "long"
    assert list(state.keys()) == [key]


@pytest.mark.parametrize("bad_key", [1, None, b"bytes", ("a",)], ids=repr)
def test_non_string_key_is_rejected(state, bad_key):
    with pytest.raises(TypeError) as caught:
        state.set(bad_key, 1)

    assert isinstance(caught.value, CloudWrightError)
    assert repr(bad_key) in str(caught.value)


@pytest.mark.parametrize(
    "read",
    [
        lambda state, key: state.get(key),
        lambda state, key: state[key],
        lambda state, key: key in state,
        lambda state, key: state.delete(key),
        lambda state, key: state.expires_at(key),
        lambda state, key: state.get_many(["fine", key]),
        lambda state, key: state.update(key, lambda value: value),
    ],
    ids=["get", "subscript", "in", "delete", "expires_at", "get_many", "update"],
)
@pytest.mark.parametrize("bad_key", ["", "k" * 1025, 7], ids=["empty", "1025-chars", "int"])
def test_invalid_key_is_rejected_by_every_method(state, read, bad_key):
    with pytest.raises(CloudWrightError):
        read(state, bad_key)


SPECIAL_KEYS = [
    "reports/2024/q1",
    "/leading/and/trailing/",
    "__x__",
    "__class__",
    "rocket 🚀",
    "family 👨‍👩‍👧",
    "tab\tand newline\n",
    "nul\x00byte",
    " spaces ",
    "café",
    "cafe\u0301",
    "'quoted\"",
    "%s {0} \\",
]


def test_special_keys_round_trip(state):
    for index, key in enumerate(SPECIAL_KEYS):
        state.set(key, index)

    for index, key in enumerate(SPECIAL_KEYS):
        assert state.get(key) == index, key


def test_special_keys_list_back_exactly(state):
    state.set_many({key: True for key in SPECIAL_KEYS})

    assert sorted(state.keys()) == sorted(SPECIAL_KEYS)
    assert sorted(state) == sorted(SPECIAL_KEYS)
    assert len(state) == len(SPECIAL_KEYS)


def test_keys_with_slash_filter_by_prefix(state):
    state.set_many({"reports/2024/q1": 1, "reports/2024/q2": 2, "reports/2023/q4": 3})

    assert sorted(state.keys("reports/2024/")) == ["reports/2024/q1", "reports/2024/q2"]


def test_composed_and_decomposed_keys_stay_distinct(state):
    state.set("café", "composed")
    state.set("cafe\u0301", "decomposed")

    assert state.get("café") == "composed"
    assert state.get("cafe\u0301") == "decomposed"


# A rejected write changes nothing


@pytest.mark.parametrize(
    "bad_value",
    [
        datetime(2024, 1, 1),
        {1: "int key"},
        float("nan"),
        "x" * LIMIT_BYTES,
    ],
    ids=["datetime", "int-dict-key", "nan", "too-large"],
)
def test_rejected_set_keeps_old_value(state, bad_value):
    state.set("report", {"version": 1})
    before = state.expires_at("report")

    with pytest.raises(CloudWrightError):
        state.set("report", {"version": 2, "payload": bad_value})

    assert state.get("report") == {"version": 1}
    assert state.expires_at("report") == before


def test_rejected_set_many_writes_nothing(state):
    state.set("a", "old")

    with pytest.raises(TypeError):
        state.set_many({"a": "new", "b": "new", "c": datetime(2024, 1, 1)})

    assert state.get("a") == "old"
    assert "b" not in state
    assert "c" not in state


def test_set_many_with_invalid_key_writes_nothing(state):
    with pytest.raises(ValueError):
        state.set_many({"a": 1, "": 2})

    assert len(state) == 0


def test_rejected_update_keeps_old_value(state):
    state.set("report", {"version": 1})

    with pytest.raises(TypeError, match="datetime"):
        state.update("report", lambda report: {**report, "when": datetime(2024, 1, 1)})

    assert state.get("report") == {"version": 1}
