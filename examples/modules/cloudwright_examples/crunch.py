"""Data-engine job process: ``python -m cloudwright_examples.crunch JOB_FOLDER``.

The job generates a CSV of random sales rows, reads it back with the ``csv`` module and
writes the count, sum and mean of the amounts per category to result.json. It records its
progress in status.json, which ``DataEngine.get_job`` reads. DataEngine starts this module
after it has written settings.json and the first status.json into JOB_FOLDER.
"""

import csv
import logging
import os
import random
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cloudwright_examples.job_files import (
    DATA_FILE,
    RESULT_FILE,
    SETTINGS_FILE,
    read_json,
    update_status,
    utc_now,
    write_json_atomic,
)

# 300,000 rows make a CSV of about 6 MB. The whole job took 0.7 s with CPython 3.11 on a
# 2-core Xeon VM, so pass a larger input rows to make a job run longer.
DEFAULT_ROWS = 300_000
DEFAULT_SEED = 1
CATEGORIES = ("books", "games", "garden", "music", "tools")

logger = logging.getLogger("cloudwright_examples.crunch")


class RequestedFailure(RuntimeError):
    """Failure that the job raises on purpose because its input ``fail`` is ``true``."""


@dataclass(frozen=True)
class JobSettings:
    """Settings of one job, parsed from the app's string inputs."""

    rows: int = DEFAULT_ROWS
    seed: int = DEFAULT_SEED
    fail: bool = False

    @classmethod
    def from_inputs(cls, inputs: Mapping[str, str] | None) -> "JobSettings":
        """Parse the inputs ``rows``, ``seed`` and ``fail`` and ignore all other keys.

        Raises ValueError that names the invalid input and a valid example.
        """
        inputs = inputs or {}
        rows = _parse_int(inputs, "rows", DEFAULT_ROWS, example="300000")
        if rows < 1:
            raise ValueError(
                f"Input rows={rows} is invalid because a job needs at least 1 row, "
                f"so pass e.g. --input rows=300000."
            )

        seed = _parse_int(inputs, "seed", DEFAULT_SEED, example="1")

        fail_text = str(inputs.get("fail", "")).strip().lower()
        if fail_text not in ("", "true", "false"):
            raise ValueError(
                f"Input fail={inputs['fail']!r} is invalid, so pass --input fail=true "
                f"to make the job fail or leave it out."
            )

        return cls(rows=rows, seed=seed, fail=fail_text == "true")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "JobSettings":
        return cls(rows=int(data["rows"]), seed=int(data["seed"]), fail=bool(data["fail"]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parse_int(inputs: Mapping[str, str], name: str, default: int, example: str) -> int:
    text = str(inputs.get(name, "")).strip()
    if not text:
        return default

    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"Input {name}={inputs[name]!r} is not a whole number, "
            f"so pass e.g. --input {name}={example}."
        ) from None


def generate_csv(path: Path, rows: int, seed: int) -> None:
    """Write ``rows`` random rows with the columns id, category and amount.

    The same seed always produces the same file. Amounts have two decimals.
    """
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "category", "amount"])
        for row_id in range(rows):
            writer.writerow([row_id, rng.choice(CATEGORIES), f"{rng.uniform(1, 500):.2f}"])


def summarize_csv(path: Path) -> dict[str, dict[str, float]]:
    """Return the count, sum and mean of the amounts per category, sorted by category.

    Sums and means are rounded to two decimals.
    """
    counts: dict[str, int] = {}
    totals: dict[str, float] = {}
    with path.open(newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            category = row["category"]
            counts[category] = counts.get(category, 0) + 1
            totals[category] = totals.get(category, 0.0) + float(row["amount"])

    return {
        category: {
            "count": counts[category],
            "sum": round(totals[category], 2),
            "mean": round(totals[category] / counts[category], 2),
        }
        for category in sorted(counts)
    }


def run_job(folder: Path) -> None:
    """Generate the CSV, summarize it and write result.json."""
    settings = JobSettings.from_dict(read_json(folder / SETTINGS_FILE))
    logger.info(
        "Job settings: rows=%d seed=%d fail=%s", settings.rows, settings.seed, settings.fail
    )

    data_path = folder / DATA_FILE
    generate_csv(data_path, settings.rows, settings.seed)
    logger.info("Wrote %d rows to %s", settings.rows, data_path)

    # Fail after the CSV is written, so that a flow that polls the job usually reads
    # "running" at least once before "failed".
    if settings.fail:
        raise RequestedFailure("Job failed on purpose because its input fail is true.")

    categories = summarize_csv(data_path)
    result = {"rows": settings.rows, "seed": settings.seed, "categories": categories}
    write_json_atomic(folder / RESULT_FILE, result)
    logger.info("Wrote the summary of %d categories to %s", len(categories), folder / RESULT_FILE)


def main(arguments: list[str]) -> int:
    """Run the job in the folder named by ``arguments`` and return the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if len(arguments) != 1:
        logger.error(
            "Expected one argument, the job folder, but got %r. "
            "Usage: python -m cloudwright_examples.crunch JOB_FOLDER",
            arguments,
        )
        return 2

    folder = Path(arguments[0])
    update_status(folder, pid=os.getpid())
    logger.info("Job %s started with pid %d", folder.name, os.getpid())
    started = time.monotonic()

    try:
        run_job(folder)
    except Exception as error:
        logger.exception("Job %s failed", folder.name)
        message = str(error) or type(error).__name__
        update_status(folder, status="failed", ended_at=utc_now(), error=message)
        return 1

    update_status(folder, status="complete", ended_at=utc_now())
    logger.info("Job %s complete in %.2f s", folder.name, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
