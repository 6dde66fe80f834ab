"""Dispatch each tick of a run to a deployed function by HTTP, following the run in the store.

The function executes the steps; this side only decides when to send the next tick and reads
the run from the store it shares with the function, so a panel shows the same live progress as
for a run in the kernel. Failed or timed-out requests are retried with a growing delay, and the
latest failure is kept on the run handle for the panel to show.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from ...errors import ConfigurationError, FlowError, RunNotFoundError

log = logging.getLogger("cloudwright_nb")

REQUEST_TIMEOUT_SECONDS = 600.0
MAX_RETRY_DELAY_SECONDS = 60.0


class DispatchError(FlowError):
    """Raised when a tick request to a function fails; the dispatcher retries it."""


def post_tick(url: str, body: dict[str, Any], timeout: float = REQUEST_TIMEOUT_SECONDS) -> dict:
    """Send one tick request and return the function's JSON answer.

    An `https` URL gets a Google ID token for that URL (the function accepts only callers that
    Cloud Functions IAM allows); a loopback `http` URL, as `cloudwright serve` gives, gets none.
    """
    check_url(url)
    headers = {"Content-Type": "application/json"}
    if url.startswith("https://"):
        headers["Authorization"] = f"Bearer {_id_token(url)}"
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        detail = _error_text(error)
        if error.code == 404:
            raise RunNotFoundError(f"{url} responded 404: {detail}") from None
        raise DispatchError(f"{url} responded {error.code}: {detail}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DispatchError(f"cannot reach {url}: {reason}") from None
    except json.JSONDecodeError:
        raise DispatchError(
            f"{url} did not respond with JSON; is it a cloudwright function?"
        ) from None


def check_url(url: object) -> str:
    """Return `url` if it can name a function, else raise ConfigurationError saying why."""
    if (
        not isinstance(url, str)
        or not url.startswith(("http://", "https://"))
        or url.endswith("//")
    ):
        raise ConfigurationError(
            f"invalid function URL {url!r}: use the https URL of the deployed function, or "
            "http://127.0.0.1:PORT/ from `cloudwright serve`"
        )
    return url


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        return json.loads(error.read()).get("error", error.reason)
    except (json.JSONDecodeError, AttributeError, OSError):
        return str(error.reason)


def _id_token(url: str) -> str:
    try:
        import google.auth.transport.requests
        import google.oauth2.id_token
    except ImportError:
        raise ConfigurationError(
            'calling a deployed function needs google-auth: pip install "cloudwright-nb[functions]"'
        ) from None
    try:
        return google.oauth2.id_token.fetch_id_token(google.auth.transport.requests.Request(), url)
    except Exception as error:
        raise ConfigurationError(
            f"cannot get a Google ID token for {url}: {error}; run `gcloud auth "
            "application-default login` or set GOOGLE_APPLICATION_CREDENTIALS to a service account"
        ) from None


def start_remote(url: str, inputs: dict[str, Any], run_id: str | None) -> dict:
    """Ask the function to start a run (or tick `run_id`) and return its JSON response."""
    body: dict[str, Any] = {"inputs": inputs}
    if run_id:
        body["run_id"] = run_id
    return post_tick(url, body)


async def dispatch(
    url: str,
    run_id: str,
    read_run: Callable[[], Any],
    on_change: Callable[[Any, str | None], None],
    clock: Callable[[], float] = time.time,
) -> Any:
    """Tick `run_id` at `url` whenever it is due, until it ends; return the ended run.

    `read_run` reads the run from the shared store; `on_change(run, problem)` receives each new
    snapshot and the latest dispatch failure, or None once a request succeeds again.
    """
    failures = 0
    while True:
        run = await asyncio.to_thread(read_run)
        if run.done:
            on_change(run, None)
            return run
        wait = run.next_check_at.timestamp() - clock() if run.next_check_at else 0
        if wait > 0:
            on_change(run, None)
            await asyncio.sleep(wait)
        try:
            await asyncio.to_thread(post_tick, url, {"run_id": run_id})
            failures = 0
        except DispatchError as error:
            failures += 1
            delay = min(2.0**failures, MAX_RETRY_DELAY_SECONDS)
            log.info("tick of run %s failed (%s); retrying in %.0fs", run_id, error, delay)
            on_change(run, f"{error}; retrying in {delay:.0f}s")
            await asyncio.sleep(delay)
