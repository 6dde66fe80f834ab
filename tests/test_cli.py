"""The `cloudwright` command: exit codes, one-line errors, and the same results as the library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudwright_nb import CloudWright
from cloudwright_nb.cli import main
from conftest import new_master_key, subprocess_env

CLOUDWRIGHT = str(Path(sys.executable).parent / "cloudwright")

FLOW_SCRIPT = """
from cloudwright_nb import CloudWright

cloudflow = CloudWright.get_module("cloudflow")

def first(context):
    context.set("seen", CloudWright.inputs.get("who", "nobody"))
    return cloudflow.CONTINUE

def second(context):
    print("hello", context.get("seen"))
    return cloudflow.FAIL if CloudWright.inputs.get("fail") else cloudflow.CONTINUE

cloudflow.run(first, second)
"""


@pytest.fixture
def store(sqlite_url: str, master_key: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CLOUDWRIGHT_STORE", sqlite_url)
    return sqlite_url


@pytest.fixture
def flow_script(tmp_path: Path) -> Path:
    path = tmp_path / "greeter.py"
    path.write_text(FLOW_SCRIPT)
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLOUDWRIGHT, *args], env=subprocess_env(), capture_output=True, text=True, timeout=60
    )


def test_run_drives_the_flow_and_names_the_app_after_the_script(store, flow_script, capsys):
    code = main(["run", str(flow_script), "--input", "who=ada", "--interval", "1s"])

    output = capsys.readouterr().out
    assert code == 0
    assert "hello ada" in output
    assert "run succeeded" in output
    CloudWright.configure(app="greeter")
    (run,) = CloudWright.get_module("cloudflow").list_runs()
    assert run.status == "succeeded"
    assert run.inputs == {"who": "ada"}


def test_run_exits_1_when_the_flow_fails(store, flow_script):
    result = run_cli("run", str(flow_script), "--input", "fail=yes")

    assert result.returncode == 1
    assert "run failed" in result.stdout
    assert "step 'second' returned cloudflow.FAIL" in result.stdout


def test_run_executes_a_script_without_a_flow_once(store, tmp_path, capsys):
    script = tmp_path / "plain.py"
    script.write_text("print('ran once')\n")

    code = main(["run", str(script)])

    assert code == 0
    assert capsys.readouterr().out.count("ran once") == 1


def test_script_error_is_one_line_with_its_line_number(store, tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("x = 1\nraise ValueError('bad input file')\n")

    result = run_cli("run", str(script))

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "cloudwright: error: broken.py line 2 raised ValueError: bad input file "
        "(add --debug for the traceback)"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.py"], "no such script: missing.py"),
        (["run", "x.py", "--interval", "0"], "invalid duration '0'"),
        (["run", "x.py", "--interval", "soon"], "invalid duration 'soon'"),
        (["run", "x.py", "--input", "novalue"], "invalid input 'novalue'"),
        (["state", "list", "--app", ""], "invalid application name ''"),
        (["state", "frobnicate"], "invalid choice: 'frobnicate'"),
        (["runs", "purge"], "--older-than"),
    ],
)
def test_bad_usage_exits_2_with_one_line(store, tmp_path, args, message):
    (tmp_path / "x.py").write_text("")
    result = subprocess.run(
        [CLOUDWRIGHT, *args], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True
    )

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_state_commands_round_trip_values(store, capsys):
    assert main(["state", "set", "count", "41", "--app", "tool"]) == 0
    assert main(["state", "set", "greeting", "hello there", "--app", "tool"]) == 0
    assert main(["state", "set", "doc", '{"a": [1, 2]}', "--app", "tool"]) == 0
    capsys.readouterr()

    assert main(["state", "get", "count", "--app", "tool"]) == 0
    assert json.loads(capsys.readouterr().out) == 41
    assert main(["state", "get", "greeting", "--app", "tool"]) == 0
    assert json.loads(capsys.readouterr().out) == "hello there"
    assert main(["state", "list", "--app", "tool"]) == 0
    listed = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == ["count", "doc", "greeting"]


def test_state_get_and_delete_of_a_missing_key_exit_1(store, capsys):
    assert main(["state", "get", "nothing", "--app", "tool"]) == 1
    assert "key 'nothing' is not set in application 'tool'" in capsys.readouterr().err
    assert main(["state", "delete", "nothing", "--app", "tool"]) == 1


def test_state_commands_without_an_app_say_how_to_name_it(store):
    result = run_cli("state", "list")

    assert result.returncode == 1
    assert "cannot tell the application name" in result.stderr
    assert "--app NAME" in result.stderr


def test_export_then_import_moves_state_between_stores(store, tmp_path, capsys, monkeypatch):
    CloudWright.configure(app="mover")
    source = CloudWright.get_module("state")
    source.set("a", {"nested": [1, "two"]})
    source.set("b", "short-lived", ttl="2d")
    expires_at = source.expires_at("b")
    dump = tmp_path / "mover.jsonl"

    assert main(["state", "export", "--app", "mover", "-o", str(dump)]) == 0
    assert b"nested" in dump.read_bytes()

    other = f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setenv("CLOUDWRIGHT_MASTER_KEY", new_master_key())
    CloudWright.reset()
    assert main(["state", "import", str(dump), "--app", "mover", "--store", other]) == 0
    target = CloudWright.get_module("state")
    assert target.get("a") == {"nested": [1, "two"]}
    assert target.get("b") == "short-lived"
    assert abs(target.expires_at("b").timestamp() - expires_at.timestamp()) < 5


def test_import_of_a_bad_file_writes_nothing(store, tmp_path, capsys):
    dump = tmp_path / "bad.jsonl"
    dump.write_text('{"key": "good", "value": 1, "expires_at": null}\nnot json\n')

    assert main(["state", "import", str(dump), "--app", "careful"]) == 1

    assert "line 2 is not JSON" in capsys.readouterr().err
    CloudWright.configure(app="careful")
    assert CloudWright.get_module("state").get("good") is None


def test_keys_generate_prints_a_usable_key(capsys):
    assert main(["keys", "generate"]) == 0
    key = capsys.readouterr().out.strip()

    os.environ["CLOUDWRIGHT_MASTER_KEY"] = key
    try:
        CloudWright.configure(app="k", store="memory://keys-generate")
        state = CloudWright.get_module("state")
        state.set("x", 1)
        assert state.get("x") == 1
    finally:
        del os.environ["CLOUDWRIGHT_MASTER_KEY"]


def test_keys_rotate_keeps_every_value_readable(store, monkeypatch, capsys):
    old_key = os.environ["CLOUDWRIGHT_MASTER_KEY"]
    CloudWright.configure(app="rotating")
    CloudWright.get_module("state").set_many({"a": 1, "b": [2]})
    new_key = new_master_key()

    monkeypatch.setenv("CLOUDWRIGHT_MASTER_KEY", f"{new_key},{old_key}")
    CloudWright.reset()
    assert main(["keys", "rotate"]) == 0
    assert "re-encrypted 2 record(s)" in capsys.readouterr().out

    monkeypatch.setenv("CLOUDWRIGHT_MASTER_KEY", new_key)
    CloudWright.reset()
    CloudWright.configure(app="rotating")
    assert CloudWright.get_module("state").get_many(["a", "b"]) == {"a": 1, "b": [2]}


def test_status_cancel_and_runs_listing(store, capsys):
    CloudWright.configure(app="manager")
    cloudflow = CloudWright.get_module("cloudflow")

    def wait(context):
        return cloudflow.RERUN

    run = cloudflow.engine.create(
        cloudflow_specs(wait), inputs={}, interval=60, timeout=None, script=None
    )

    assert main(["runs", "--app", "manager"]) == 0
    assert run.id in capsys.readouterr().out
    assert main(["cancel", run.id, "--app", "manager"]) == 0
    assert main(["status", run.id, "--app", "manager"]) == 0
    assert f"run {run.id}: cancelled" in capsys.readouterr().out
    assert main(["cancel", run.id, "--app", "manager"]) == 1
    assert "has already been cancelled" in capsys.readouterr().err
    assert main(["runs", "--app", "manager", "--status", "cancelled", "--quiet"]) == 0
    assert capsys.readouterr().out.split() == [run.id]


def test_runs_purge_deletes_only_old_ended_runs(store, capsys):
    CloudWright.configure(app="purger")
    cloudflow = CloudWright.get_module("cloudflow")

    def done(context):
        return cloudflow.CONTINUE

    finished = cloudflow.run(done, interval="1s")
    capsys.readouterr()

    assert main(["runs", "purge", "--older-than", "1d", "--app", "purger"]) == 0
    assert "deleted 0 ended run(s)" in capsys.readouterr().out
    cloudflow.engine.clock = lambda: finished.updated_at.timestamp() + 2 * 86400
    assert cloudflow.engine.purge(86400) == [finished.id]
    assert cloudflow.list_runs() == []


def test_resume_of_an_unknown_run_is_one_line(store):
    result = run_cli("resume", "no-such-run", "--app", "manager")

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "cloudwright: error: no run 'no-such-run' in application 'manager'; "
        "list the runs with `cloudwright runs`, or `%cloudflow list` in a notebook"
    )


def cloudflow_specs(*functions):
    from cloudwright_nb.flow.steps import step_specs

    return step_specs(functions)
