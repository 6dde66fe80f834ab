"""The deployed function: each HTTP request executes the application script and ticks one run.

As in the original product, code outside the step functions runs on every request. The
request body is JSON: `{"run_id": optional, "inputs": optional, "force": optional}` ticks a run
(or starts one), and `{"sweep": true}` ticks every overdue run. Every response is JSON, and errors
are one line, never a stack trace.

| answer | when |
| --- | --- |
| 200 | a tick ran a step, or ran none because it was early, busy, or the run had ended |
| 400 | the body is not JSON, or a field has the wrong type |
| 404 | `run_id` names no run of this application |
| 500 | the application failed to import, or the store failed |
"""

from __future__ import annotations

import logging
import runpy
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..app import CloudWright
from ..errors import CloudWrightError, RunNotFoundError
from ..flow.engine import TickResult
from ..flow.steps import check_run_id
from . import structured_logs
from .tasks import schedule_next_tick

log = logging.getLogger("cloudwright_nb")


@dataclass
class FunctionRequest:
    """One tick asked of the application, and what it did."""

    run_id: str | None
    force: bool
    result: TickResult | None = None


class BadRequest(Exception):
    """A request body the function cannot act on."""


def parse_body(data: bytes) -> dict[str, Any]:
    """Return the request fields, or raise BadRequest naming what is wrong."""
    import json

    if not data.strip():
        return {}
    try:
        body = json.loads(data, parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as error:
        raise BadRequest(f"the request body is not valid JSON: {error}") from None
    except RecursionError:
        raise BadRequest("the request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest('the request body must be a JSON object, like {"run_id": "..."}')
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise BadRequest(
            f"unknown field {', '.join(map(repr, unknown))}; the fields are {', '.join(_FIELDS)}"
        )
    for name, kind in _FIELDS.items():
        if body.get(name) is not None and not isinstance(body[name], kind):
            raise BadRequest(
                f"{name} must be a JSON {_json_kind(kind)}, not {type(body[name]).__name__}"
            )
    if body.get("run_id") is not None:
        try:
            check_run_id(body["run_id"])
        except CloudWrightError as error:
            raise BadRequest(str(error)) from None
    if body.get("sweep") and set(body) - {"sweep"}:
        raise BadRequest('a sweep request takes no other field: send {"sweep": true} alone')
    return body


_FIELDS = {"run_id": str, "inputs": dict, "force": bool, "sweep": bool}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON; send null or a string instead")


def _json_kind(kind: type) -> str:
    return {str: "string", dict: "object", bool: "boolean"}[kind]


class Application:
    """An application script served as a function; one request at a time per process."""

    def __init__(self, script: Path, app: str | None = None) -> None:
        self.script = Path(script).resolve()
        self.app = app
        self._lock = threading.Lock()
        structured_logs.install()

    def handle(self, data: bytes) -> tuple[dict[str, Any], int]:
        """Return the JSON document and HTTP status for one request body."""
        try:
            body = parse_body(data)
        except BadRequest as error:
            return {"error": str(error)}, 400

        with self._lock:
            try:
                if body.get("sweep"):
                    from .sweep import sweep

                    self._configure({})
                    return sweep(self), 200
                return self._tick(body)
            except RunNotFoundError as error:
                return {"error": str(error)}, 404
            except CloudWrightError as error:
                log.error("request failed: %s", error)
                return {"error": str(error)}, 500
            finally:
                CloudWright.request = None

    def _configure(self, inputs: dict[str, Any]) -> None:
        CloudWright.configure(app=self.app, inputs=inputs, deployed=True)
        CloudWright.script = self.script

    def _tick(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        run_id = body.get("run_id")
        inputs = body.get("inputs") or {}
        self._configure(inputs)
        if run_id:
            # A run keeps the inputs it started with for all its ticks.
            run = CloudWright.get_module("cloudflow").get_run(run_id)
            CloudWright.configure(inputs=run.inputs)
        request = FunctionRequest(run_id=run_id, force=bool(body.get("force")))
        CloudWright.request = request

        error = self.execute()
        if error is not None:
            return {"error": error}, 500
        if request.result is None:
            return {
                "run_id": None,
                "ran_step": False,
                "reason": f"{self.script.name} did not call cloudflow.run",
            }, 200
        document = answer(request.result)
        try:
            document["next_task"] = schedule_next_tick(request.result.run)
        except Exception as error:
            # Failing makes Cloud Tasks deliver this request again; that retry finds the run
            # not due, runs no step, and tries the scheduling again.
            log.error("run %s: scheduling the next tick failed: %s", request.result.run.id, error)
            return {"error": f"cannot schedule the next tick: {error}", **document}, 500
        return document, 200

    def execute(self) -> str | None:
        """Execute the script as `__main__`; return a one-line error if it failed."""
        saved_path = sys.path[:]
        sys.path.insert(0, str(self.script.parent))
        try:
            runpy.run_path(str(self.script), run_name="__main__")
        except (RunNotFoundError, CloudWrightError):
            raise
        except SystemExit as exit_:
            if exit_.code not in (None, 0):
                return f"{self.script.name} exited with status {exit_.code}"
        except BaseException as error:
            log.exception("%s failed", self.script.name)
            return f"{self.script.name} failed: {type(error).__name__}: {error}"
        finally:
            sys.path[:] = saved_path
        return None


def answer(result: TickResult) -> dict[str, Any]:
    """Return the JSON response to a tick: the run's state and whether this request ran a step."""
    run = result.run
    return {
        "run_id": run.id,
        "status": run.status,
        "current_step": run.current_step,
        "next_check_at": run.next_check_at.isoformat() if run.next_check_at else None,
        "last_error": run.error["message"] if run.error else None,
        "ran_step": result.ran_step,
        "reason": None if result.ran_step else result.reason,
    }


def http_handler(script: str | Path, app: str | None = None):
    """Return a functions-framework HTTP function that serves `script`."""
    import functions_framework
    from flask import Response

    application = Application(Path(script), app)

    @functions_framework.http
    def cloudwright(request):
        import json

        if request.method != "POST":
            document = {"error": f"use POST with a JSON body, not {request.method}"}
            return Response(
                json.dumps(document),
                status=405,
                headers={"Allow": "POST"},
                mimetype="application/json",
            )
        document, status = application.handle(request.get_data())
        return Response(json.dumps(document), status=status, mimetype="application/json")

    cloudwright.application = application
    return cloudwright
