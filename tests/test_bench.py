"""The benchmarks in bench/ run end to end at tiny sizes and print their comparisons."""

from __future__ import annotations

import re
import subprocess

import pytest

from conftest import PYTHON, ROOT, subprocess_env

RATIO = re.compile(r"^ratio (?P<comparison>.+): (?P<value>\S+)x$", re.MULTILINE)

EXPECTED_RATIOS = {
    "state_bench.py": [
        f"{operation}, cloudwright-nb / {peer}"
        for operation in ("set", "set, 8 threads", "get", "get_many", "set_many")
        for peer in ("diskcache", "sqlitedict", "diskcache FULL", "sqlite3 FULL")
    ],
    "flow_bench.py": [
        "cloudflow.run / dbos",
        "engine / dbos",
        "cloudflow.run at once / dbos at once",
        "async steps, ticks per second / 50 (one per run per second)",
        "plain steps, ticks per second / 50 (one per run per second)",
    ],
    "cold_start.py": [
        "cold start, cloudwright-nb / functions_framework",
        "imports only, cloudwright-nb / functions_framework",
        "added by the entry point, over functions_framework's imports",
    ],
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("script", sorted(EXPECTED_RATIOS))
def test_benchmark_prints_ratios(script: str) -> None:
    _check_ratios(script, subprocess_env())


@pytest.mark.timeout(120)
def test_first_tick_benchmark_prints_ratio(firestore_emulator: str) -> None:
    _check_ratios(
        "first_tick.py",
        subprocess_env(FIRESTORE_EMULATOR_HOST=firestore_emulator),
        ["first tick / one transaction, both after the imports"],
    )


def _check_ratios(script: str, env: dict[str, str], expected: list[str] | None = None) -> None:
    result = subprocess.run(
        [PYTHON, str(ROOT / "bench" / script), "--quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )

    assert result.returncode == 0, result.stderr
    ratios = {match["comparison"]: match["value"] for match in RATIO.finditer(result.stdout)}
    assert sorted(ratios) == sorted(expected or EXPECTED_RATIOS[script]), result.stdout
    for comparison, value in ratios.items():
        assert float(value) > 0, f"{comparison}: {value}"
