"""Stand-in for CloudWright's ``data_engine`` module that runs CSV jobs as child processes.

A job lives in its own folder under ``DATA_ENGINE_HOME``, and its state lives in files there
(see ``job_files``), so every process that reads the same folder gets the same job states. This
module needs POSIX because it locks files with ``fcntl.flock`` and starts jobs in a new session.
"""

import fcntl
import logging
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cloudwright_examples.crunch import JobSettings
from cloudwright_examples.job_files import (
    LOCK_FILE,
    LOG_FILE,
    RESULT_FILE,
    SETTINGS_FILE,
    STATUS_FILE,
    read_json,
    update_status,
    utc_now,
    write_json_atomic,
)

DEFAULT_HOME = "data_engine_jobs"
JOB_ID_PATTERN = re.compile(r"[0-9a-f]{12}")

JobStatus = Literal["running", "complete", "failed"]

logger = logging.getLogger(__name__)


class JobNotFoundError(KeyError):
    """No job with the requested id exists in the data-engine folder."""

    def __str__(self) -> str:
        # KeyError.__str__ would print the message as a quoted repr.
        return str(self.args[0])


@dataclass(frozen=True)
class Job:
    """Snapshot of a job's state, read from its folder."""

    id: str
    status: JobStatus
    # Summary from result.json when the status is "complete", else None.
    result: dict[str, Any] | None
    # Reason for the failure when the status is "failed", else None.
    error: str | None
    folder: Path


class DataEngine:
    """Client that starts CSV jobs and reads their state.

    Jobs live in the folder named by the environment variable ``DATA_ENGINE_HOME``, read
    when the object is created, or in ``./data_engine_jobs`` when it is unset. Relative
    paths are resolved against the working directory at that time.
    """

    def __init__(self) -> None:
        self.home = Path(os.environ.get("DATA_ENGINE_HOME") or DEFAULT_HOME).resolve()

    def start_job(self, inputs: Mapping[str, str] | None = None) -> str:
        """Start a job in a detached child process and return its id.

        The inputs ``rows`` (default 300000), ``seed`` (default 1) and ``fail`` (``true``
        makes the job fail on purpose) set the job, and other keys are ignored. Raises
        ValueError for an invalid input before anything is started.

        The job runs in a new session, so it keeps running after this Python process exits
        and doesn't receive the Ctrl-C of the terminal that started it.
        """
        settings = JobSettings.from_inputs(inputs)
        job_id, folder = self._create_job_folder()

        # The lock is taken before status.json exists, so no reader finds a running job
        # without a lock holder. The job process inherits this locked file description and
        # keeps it until it exits. The kernel releases the lock however the process ends,
        # which is how get_job detects a dead job.
        with (folder / LOCK_FILE).open("w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            write_json_atomic(folder / SETTINGS_FILE, settings.to_dict())
            first_status = {
                "status": "running",
                "pid": None,
                "started_at": utc_now(),
                "ended_at": None,
                "error": None,
            }
            write_json_atomic(folder / STATUS_FILE, first_status)

            with (folder / LOG_FILE).open("wb") as log_file:
                try:
                    process = subprocess.Popen(
                        [sys.executable, "-m", "cloudwright_examples.crunch", str(folder)],
                        stdin=subprocess.DEVNULL,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        cwd=folder,
                        pass_fds=(lock_file.fileno(),),
                        start_new_session=True,
                    )
                except OSError as error:
                    message = f"Could not start the job process: {error}"
                    update_status(folder, status="failed", ended_at=utc_now(), error=message)
                    raise

        # A daemon thread waits for the process so that it doesn't linger as a zombie after
        # it exits and so that Python doesn't warn about a Popen object of a running process.
        threading.Thread(target=process.wait, name=f"data-engine-job-{job_id}", daemon=True).start()
        logger.info("Started job %s with pid %d in %s", job_id, process.pid, folder)
        return job_id

    def get_job(self, job_id: str) -> Job:
        """Read the job's current state from its folder.

        A job whose status.json still records ``running`` but whose process has exited is
        reported as ``failed``. Raises JobNotFoundError for an unknown id.
        """
        folder = self._find_job_folder(job_id)

        status = read_json(folder / STATUS_FILE)
        if status["status"] == "running" and not _job_process_running(folder):
            # The process may have written its final status just before it exited.
            status = read_json(folder / STATUS_FILE)
            if status["status"] == "running":
                error = (
                    f"The job process (pid {status['pid']}) died before it wrote a final status, "
                    f"so it was killed or crashed. Its output is in {folder / LOG_FILE}."
                )
                return Job(id=job_id, status="failed", result=None, error=error, folder=folder)

        result = read_json(folder / RESULT_FILE) if status["status"] == "complete" else None
        return Job(
            id=job_id, status=status["status"], result=result, error=status["error"], folder=folder
        )

    def _create_job_folder(self) -> tuple[str, Path]:
        self.home.mkdir(parents=True, exist_ok=True)
        while True:
            job_id = secrets.token_hex(6)
            folder = self.home / job_id
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            return job_id, folder

    def _find_job_folder(self, job_id: str) -> Path:
        # The pattern check also keeps ids such as "../x" from reaching outside the home folder.
        valid_id = isinstance(job_id, str) and JOB_ID_PATTERN.fullmatch(job_id) is not None
        if not (valid_id and (self.home / job_id / STATUS_FILE).is_file()):
            raise JobNotFoundError(
                f"Job {job_id!r} was not found in {self.home}, so check the id or set "
                f"DATA_ENGINE_HOME to the folder where the job was started."
            )
        return self.home / job_id


def _job_process_running(folder: Path) -> bool:
    """Return whether a process still holds the job's lock.

    Unlike a check of the pid, this can't mistake a zombie or a process that reused the
    job's pid for the job.
    """
    with (folder / LOCK_FILE).open("r") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False
