"""Layout of a data-engine job folder, shared by DataEngine and the job process.

Each job folder contains:

- ``settings.json``: the validated job settings, written once before the job starts.
- ``status.json``: ``status`` (``running``, ``complete`` or ``failed``), ``pid``,
  ``started_at``, ``ended_at`` and ``error``. Times are ISO 8601 in UTC.
- ``result.json``: the per-category summary, written before the status becomes ``complete``.
- ``data.csv``: the generated rows.
- ``job.log``: the job process's stdout and stderr.
- ``job.lock``: locked by the job process for as long as it runs.
"""

import json
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SETTINGS_FILE = "settings.json"
STATUS_FILE = "status.json"
RESULT_FILE = "result.json"
DATA_FILE = "data.csv"
LOG_FILE = "job.log"
LOCK_FILE = "job.lock"


def utc_now() -> str:
    """Return the current time as an ISO 8601 string in UTC."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def read_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as file:
        return json.load(file)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON so that readers see the old file or the new one, never a partial file.

    The data goes to a temporary file in the same folder, is flushed to disk and then
    replaces ``path`` with ``os.replace``, which is atomic within one file system.
    """
    descriptor, temporary_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=2)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary_name, path)
    except BaseException:
        os.unlink(temporary_name)
        raise


def update_status(folder: Path, **changes: Any) -> None:
    """Merge ``changes`` into the job's status.json.

    Only one process writes at a time, because DataEngine writes the first status before it
    starts the job process and only the job process writes after that.
    """
    status = read_json(folder / STATUS_FILE)
    status.update(changes)
    write_json_atomic(folder / STATUS_FILE, status)
