"""The sweep request: tick every overdue run, so a run whose next task was lost carries on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..app import CloudWright
from ..errors import CloudWrightError
from ..state.stores.base import LIVE_STATUSES, now

if TYPE_CHECKING:
    from .entry import Application


def sweep(application: Application) -> dict[str, Any]:
    """Tick each run of the application whose next check has passed and whose lease is free."""
    cloudflow = CloudWright.get_module("cloudflow")
    moment = now()
    due = [
        run
        for run in cloudflow.list_runs()
        if run.status in LIVE_STATUSES
        and run.next_check_at is not None
        and run.next_check_at.timestamp() <= moment
        and (run.lease_expires_at is None or run.lease_expires_at.timestamp() <= moment)
    ]
    answers = []
    for run in due:
        try:
            document, status = application._tick({"run_id": run.id})
        except CloudWrightError as error:
            document, status = {"run_id": run.id, "error": str(error)}, 500
        answers.append({**document, "http_status": status})
    return {"swept": len(due), "runs": answers}
