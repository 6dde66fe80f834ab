"""The seed scripts, run exactly as `make demo` runs them."""

from __future__ import annotations

import email
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, subprocess_env


def test_demo_runs_both_seed_scripts(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    env = subprocess_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    started = time.time()

    result = subprocess.run(
        ["bash", str(ROOT / "examples" / "demo.sh"), str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert result.returncode == 0, result.stderr
    sections = result.stdout.split("== ")
    first_state_run, second_state_run, flow, stored = sections[1:5]
    assert first_state_run.splitlines()[1] == "None"
    stored_timestamp = float(second_state_run.splitlines()[1])
    assert started <= stored_timestamp <= time.time()
    assert "launch_job: done after 1 check" in flow
    assert re.search(r"wait_completion: done after \d+ checks", flow)
    assert "email_user: done after 1 check" in flow
    assert flow.rstrip().endswith("run succeeded")
    assert ": succeeded" in stored

    outbox = list((work / "outbox").glob("*.eml"))
    assert len(outbox) == 1
    message = email.message_from_bytes(outbox[0].read_bytes())
    assert message["To"] == "you@example.com"
    assert re.fullmatch(r"Job Complete: [0-9a-f]+", message["Subject"])
    assert f"outbox: {outbox[0]}" in stored
