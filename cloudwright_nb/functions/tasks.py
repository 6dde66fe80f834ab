"""Scheduling the next tick of a waiting run as a Cloud Tasks task, so no notebook is needed.

With `CLOUDWRIGHT_TASKS_QUEUE` (projects/P/locations/L/queues/Q) and
`CLOUDWRIGHT_FUNCTION_URL` set, every tick that leaves a run waiting enqueues the next tick at
the run's next check time. The task is named after the run, its step and the check it will
make, so a duplicate enqueue of the same tick is refused by Cloud Tasks (ALREADY_EXISTS) and
treated here as done. Cloud Tasks accepts schedule times at most 30 days ahead: a longer wait is
bridged by an intermediate tick, which finds the run not yet due and schedules the next one.
"""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from ..flow.model import FlowRun

log = logging.getLogger("cloudwright_nb")

# Cloud Tasks refuses schedule times more than 30 days ahead; keep an hour of margin.
DEFAULT_HORIZON_SECONDS = 30 * 86400 - 3600
# How long Cloud Tasks waits for the function to respond before it retries the task.
DISPATCH_DEADLINE_SECONDS = 600
_QUEUE = re.compile(r"^projects/[^/]+/locations/[^/]+/queues/[^/]+$")


def scheduling() -> tuple[str, str] | None:
    """Return the configured queue and function URL, or None when scheduling is off."""
    queue = os.environ.get("CLOUDWRIGHT_TASKS_QUEUE")
    url = os.environ.get("CLOUDWRIGHT_FUNCTION_URL")
    if not queue or not url:
        return None
    if not _QUEUE.match(queue):
        raise ValueError(
            f"invalid CLOUDWRIGHT_TASKS_QUEUE {queue!r}: use "
            "projects/PROJECT/locations/LOCATION/queues/QUEUE"
        )
    return queue, url


def horizon_seconds() -> float:
    value = os.environ.get("CLOUDWRIGHT_TASKS_HORIZON")
    return float(value) if value else DEFAULT_HORIZON_SECONDS


def task_name(queue: str, run: FlowRun, when: datetime) -> str:
    """Name the tick after the run, its step, the check count and the time it is due."""
    step = run.steps[min(run.step_index, len(run.steps) - 1)]
    stamp = when.strftime("%Y%m%dT%H%M%S")
    return f"{queue}/tasks/{run.id}-s{run.step_index}-c{step.checks}-{stamp}"


def schedule_next_tick(run: FlowRun, client: Any = None) -> str | None:
    """Enqueue the next tick of a waiting run; return the task's name, or None if not needed."""
    configured = scheduling()
    if configured is None or run.done or run.next_check_at is None:
        return None
    queue, url = configured
    now = datetime.now(timezone.utc)
    when = min(run.next_check_at, now + timedelta(seconds=horizon_seconds()))
    name = task_name(queue, run, when)

    from google.api_core import exceptions as google_errors
    from google.cloud import tasks_v2

    http_request: dict[str, Any] = {
        "http_method": tasks_v2.HttpMethod.POST,
        "url": url,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"run_id": run.id}).encode(),
    }
    service_account = os.environ.get("CLOUDWRIGHT_TASKS_SERVICE_ACCOUNT")
    if service_account:
        # Deployed, the function accepts only callers that IAM allows: Cloud Tasks signs the
        # request with an OIDC token of this service account.
        http_request["oidc_token"] = {"service_account_email": service_account, "audience": url}
    task = {
        "name": name,
        "schedule_time": when,
        "dispatch_deadline": timedelta(seconds=DISPATCH_DEADLINE_SECONDS),
        "http_request": http_request,
    }
    try:
        (client or tasks_client()).create_task(parent=queue, task=task)
    except google_errors.AlreadyExists:
        log.info("run %s: task %s already exists", run.id, name.rsplit("/", 1)[-1])
        return name
    log.info("run %s: next tick scheduled at %s", run.id, when.isoformat(timespec="seconds"))
    return name


def tasks_client() -> Any:
    """Return a Cloud Tasks client, talking to the emulator in CLOUD_TASKS_EMULATOR_HOST if set."""
    from google.cloud import tasks_v2

    emulator = os.environ.get("CLOUD_TASKS_EMULATOR_HOST")
    if not emulator:
        return tasks_v2.CloudTasksClient()
    import grpc
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

    return tasks_v2.CloudTasksClient(
        transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(emulator))
    )
