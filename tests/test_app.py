"""The CloudWright facade: modules, the application name, inputs, store URLs and durations."""

from __future__ import annotations

import logging
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from cloudwright_nb import (
    ApplicationNameError,
    CloudWright,
    CloudWrightError,
    InvalidDurationError,
    StoreURLError,
    UnknownModuleError,
)
from cloudwright_nb.durations import parse_duration
from cloudwright_nb.state.stores import open_store
from conftest import PYTHON, new_master_key, subprocess_env


def run_python(*arguments: str, **env: str) -> subprocess.CompletedProcess:
    """Run a child Python with this checkout importable; fail the test if it fails."""
    result = subprocess.run(
        [PYTHON, *arguments],
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result


# Modules


def test_get_module_returns_builtins(app):
    assert CloudWright.get_module("state") is CloudWright.get_module("state")
    assert CloudWright.get_module("cloudflow") is CloudWright.get_module("cloudflow")


def test_unknown_module_error_lists_available_names():
    CloudWright.register_module("reports", object())

    with pytest.raises(UnknownModuleError) as caught:
        CloudWright.get_module("gmial")

    message = str(caught.value)
    assert isinstance(caught.value, CloudWrightError)
    assert "'gmial'" in message
    for name in ("state", "cloudflow", "data_engine", "gmail", "reports"):
        assert name in message, name


def test_registered_object_is_returned_as_is():
    reports = object()

    CloudWright.register_module("reports", reports)

    assert CloudWright.get_module("reports") is reports


def test_registered_factory_is_called_once():
    calls = []

    def make_reports() -> dict:
        calls.append(1)
        return {"kind": "reports"}

    CloudWright.register_module("reports", make_reports)
    first = CloudWright.get_module("reports")
    second = CloudWright.get_module("reports")

    assert first == {"kind": "reports"}
    assert second is first
    assert len(calls) == 1


def test_registered_class_is_instantiated_once():
    class Reports:
        created = 0

        def __init__(self) -> None:
            Reports.created += 1

    CloudWright.register_module("reports", Reports)

    assert isinstance(CloudWright.get_module("reports"), Reports)
    assert CloudWright.get_module("reports") is CloudWright.get_module("reports")
    assert Reports.created == 1


def test_factory_is_not_called_before_first_use():
    calls = []

    CloudWright.register_module("reports", lambda: calls.append(1))

    assert calls == []


def test_registering_again_replaces_module():
    CloudWright.register_module("reports", "first")
    CloudWright.get_module("reports")

    CloudWright.register_module("reports", "second")

    assert CloudWright.get_module("reports") == "second"


def test_registered_module_shadows_entry_point():
    CloudWright.register_module("gmail", "local mailer")

    assert CloudWright.get_module("gmail") == "local mailer"


def test_reset_forgets_registered_modules():
    CloudWright.register_module("reports", object())

    CloudWright.reset()

    with pytest.raises(UnknownModuleError):
        CloudWright.get_module("reports")


def test_entry_point_modules_are_loaded():
    from cloudwright_examples.data_engine import DataEngine
    from cloudwright_examples.gmail import Gmail

    assert isinstance(CloudWright.get_module("data_engine"), DataEngine)
    assert isinstance(CloudWright.get_module("gmail"), Gmail)


def test_entry_point_module_is_created_once():
    assert CloudWright.get_module("data_engine") is CloudWright.get_module("data_engine")


# The application name


def test_configured_name_beats_environment(monkeypatch):
    monkeypatch.setenv("CLOUDWRIGHT_APP", "from-environment")
    assert CloudWright.app == "from-environment"

    CloudWright.configure(app="from-configure")

    assert CloudWright.app == "from-configure"


NAME_SCRIPT = """
import sys
from cloudwright_nb import CloudWright
if len(sys.argv) > 1:
    CloudWright.configure(app=sys.argv[1])
print(CloudWright.app)
"""


@pytest.fixture
def name_script(tmp_path: Path) -> Path:
    script = tmp_path / "quarterly_report.py"
    script.write_text(NAME_SCRIPT)
    return script


def test_script_file_name_names_application(name_script):
    result = run_python(str(name_script))

    assert result.stdout.strip() == "quarterly_report"


def test_environment_beats_script_file_name(name_script):
    result = run_python(str(name_script), CLOUDWRIGHT_APP="from-environment")

    assert result.stdout.strip() == "from-environment"


def test_configure_beats_environment_in_script(name_script):
    result = run_python(str(name_script), "from-configure", CLOUDWRIGHT_APP="from-environment")

    assert result.stdout.strip() == "from-configure"


def test_missing_name_error_says_how_to_set_it():
    code = (
        "from cloudwright_nb import CloudWright, ApplicationNameError\n"
        "try:\n"
        "    CloudWright.app\n"
        "except ApplicationNameError as error:\n"
        "    print(error)\n"
    )

    result = run_python("-c", code)

    assert "CLOUDWRIGHT_APP" in result.stdout
    assert "configure(app=" in result.stdout


def test_application_name_scopes_state(sqlite_url, master_key, monkeypatch):
    monkeypatch.setenv("CLOUDWRIGHT_APP", "reports")
    CloudWright.configure(store=sqlite_url)
    CloudWright.get_module("state").set("last_run", "monday")

    CloudWright.configure(app="reports")
    same = CloudWright.get_module("state").get("last_run")
    CloudWright.configure(app="another")
    other = CloudWright.get_module("state").get("last_run")

    assert same == "monday"
    assert other is None


@pytest.mark.parametrize(
    ("name", "expected_words"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a" * 129, "128"),
        ("line\nbreak", "control"),
        ("tab\there", "control"),
        ("nul\x00byte", "control"),
        ("escape\x1b[31m", "control"),
        ("delete\x7f", "control"),
    ],
    ids=["empty", "blank", "129-chars", "newline", "tab", "nul", "escape", "delete"],
)
def test_invalid_application_name_is_rejected(name, expected_words):
    with pytest.raises(ApplicationNameError, match=expected_words) as caught:
        CloudWright.configure(app=name)

    assert isinstance(caught.value, CloudWrightError)
    assert isinstance(caught.value, ValueError)


def test_non_string_application_name_is_rejected():
    with pytest.raises(ApplicationNameError, match="string"):
        CloudWright.configure(app=42)


def test_invalid_name_from_environment_is_rejected(monkeypatch):
    monkeypatch.setenv("CLOUDWRIGHT_APP", "bad\nname")

    with pytest.raises(ApplicationNameError, match="control"):
        _ = CloudWright.app


def test_rejected_name_keeps_previous_name():
    CloudWright.configure(app="good-name")

    with pytest.raises(ApplicationNameError):
        CloudWright.configure(app="")

    assert CloudWright.app == "good-name"


@pytest.mark.parametrize(
    "name", ["a", "a" * 128, "Quarterly report", "rapport-été ✓", "x.y_z-1"], ids=repr
)
def test_valid_application_name_is_accepted(name):
    CloudWright.configure(app=name)

    assert CloudWright.app == name


# Inputs


def test_inputs_are_readable():
    CloudWright.configure(inputs={"notification_email": "ops@example.com"})

    assert CloudWright.inputs.get("notification_email") == "ops@example.com"
    assert CloudWright.inputs["notification_email"] == "ops@example.com"
    assert CloudWright.inputs.get("missing") is None


def test_inputs_are_empty_by_default():
    assert dict(CloudWright.inputs) == {}


def test_inputs_cannot_be_changed():
    CloudWright.configure(inputs={"notification_email": "ops@example.com"})

    with pytest.raises(TypeError):
        CloudWright.inputs["notification_email"] = "attacker@example.com"
    with pytest.raises(TypeError):
        del CloudWright.inputs["notification_email"]
    with pytest.raises(AttributeError):
        CloudWright.inputs = {}

    assert dict(CloudWright.inputs) == {"notification_email": "ops@example.com"}


def test_inputs_do_not_follow_caller_dict():
    caller_inputs = {"rows": "10"}
    CloudWright.configure(inputs=caller_inputs)

    caller_inputs["rows"] = "99"
    caller_inputs["extra"] = "x"

    assert dict(CloudWright.inputs) == {"rows": "10"}


# Import cost

# Namespace-package .pth files (such as functions-framework's) create empty `google` and
# `google.cloud` modules at interpreter start, so only modules new since then count.
HEAVY_MODULES_SCRIPT = """
import sys
before = set(sys.modules)
import cloudwright_nb
{extra}
heavy = ("IPython", "ipywidgets", "ipykernel", "google", "nest_asyncio", "nest_asyncio2")
loaded = set(sys.modules) - before
print(sorted(name for name in loaded if name.split(".")[0] in heavy))
"""


def test_import_loads_no_notebook_or_google():
    result = run_python("-c", HEAVY_MODULES_SCRIPT.format(extra=""))

    assert result.stdout.strip() == "[]"


def test_state_use_loads_no_notebook_or_google():
    extra = (
        "from cloudwright_nb import CloudWright\n"
        "CloudWright.configure(app='cold-start', store='memory://')\n"
        "state = CloudWright.get_module('state')\n"
        "state.set('a', 1)\n"
        "assert state.get('a') == 1\n"
        "CloudWright.get_module('cloudflow')\n"
    )

    result = run_python(
        "-c", HEAVY_MODULES_SCRIPT.format(extra=extra), CLOUDWRIGHT_MASTER_KEY=new_master_key()
    )

    assert result.stdout.strip() == "[]"


# Store URLs


BAD_STORE_URLS = ["bogus://x", "sqlite:/x", "sqlite://", "firestore://", "no-scheme"]


@pytest.mark.parametrize("url", BAD_STORE_URLS, ids=repr)
def test_bad_store_url_raises_naming_url(url, master_key):
    with pytest.raises(StoreURLError) as caught:
        CloudWright.configure(app="test-app", store=url)
        CloudWright.get_module("state")

    assert isinstance(caught.value, CloudWrightError)
    assert isinstance(caught.value, ValueError)
    assert repr(url) in str(caught.value)


@pytest.mark.parametrize("url", [*BAD_STORE_URLS, ""], ids=repr)
def test_open_store_rejects_bad_url(url):
    with pytest.raises(StoreURLError) as caught:
        open_store(url)

    assert repr(url) in str(caught.value)
    assert "://" in str(caught.value).replace(repr(url), "")


def test_store_url_from_environment_is_used(tmp_path, monkeypatch, master_key):
    database = tmp_path / "from-environment.db"
    monkeypatch.setenv("CLOUDWRIGHT_STORE", f"sqlite:///{database}")
    CloudWright.configure(app="test-app")

    CloudWright.get_module("state").set("a", 1)

    assert database.exists()


def test_default_store_is_created_in_user_data_directory(tmp_path, master_key, caplog):
    CloudWright.configure(app="test-app")
    expected = tmp_path / "data" / "cloudwright-nb" / "store.db"

    with caplog.at_level(logging.INFO, logger="cloudwright_nb"):
        CloudWright.get_module("state").set("a", 1)

    assert expected.exists()
    assert any(str(expected) in record.getMessage() for record in caplog.records)


# Durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (5, 5.0),
        (0.25, 0.25),
        ("5", 5.0),
        ("500ms", 0.5),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        (timedelta(minutes=3), 180.0),
    ],
    ids=repr,
)
def test_parse_duration_accepts(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    [
        0,
        0.0,
        "0s",
        -1,
        "-5s",
        timedelta(0),
        timedelta(seconds=-1),
        "abc",
        "",
        "5 weeks",
        "5x",
        True,
        False,
        None,
        float("nan"),
        float("inf"),
        [5],
        "99999999999d",
        1e300,
        timedelta(days=40000),
    ],
    ids=repr,
)
def test_parse_duration_rejects_with_value_in_message(value):
    with pytest.raises(InvalidDurationError) as caught:
        parse_duration(value)

    assert isinstance(caught.value, CloudWrightError)
    assert isinstance(caught.value, ValueError)
    assert repr(value) in str(caught.value)


def test_parse_duration_caps_a_huge_number():
    # Check times are stored as timestamps, which a wait this long would overflow.
    with pytest.raises(InvalidDurationError, match="it must be at most 36500d"):
        parse_duration(10**400, name="interval")


def test_parse_duration_names_the_option():
    with pytest.raises(InvalidDurationError, match="interval"):
        parse_duration("soon", name="interval")


def test_configure_rejects_bad_interval():
    with pytest.raises(InvalidDurationError, match="'-2m'"):
        CloudWright.configure(interval="-2m")


def test_environment_interval_is_parsed(monkeypatch):
    monkeypatch.setenv("CLOUDWRIGHT_INTERVAL", "2m")

    assert CloudWright.environment_interval == 120.0


def test_bad_environment_interval_names_variable(monkeypatch):
    monkeypatch.setenv("CLOUDWRIGHT_INTERVAL", "often")

    with pytest.raises(InvalidDurationError, match="CLOUDWRIGHT_INTERVAL"):
        _ = CloudWright.environment_interval


@pytest.mark.parametrize(
    "value", [-1, "-1", "-5s", "-500ms", "0s", timedelta(seconds=-1)], ids=repr
)
def test_negative_duration_says_greater_than_zero(value):
    with pytest.raises(InvalidDurationError, match="it must be greater than zero"):
        parse_duration(value, name="interval")
