"""The live progress panel of a run, built only from standard ipywidgets.

Almost everything the panel shows is one HTML widget, so an update costs one comm message
(two when the progress bar moves). Updates are throttled to one per `MIN_UPDATE_SECONDS` per
panel, and the countdown to the next check moves once a second, so hundreds of runs at once
send a few messages a second each. Where no widget front end renders the panel (nbconvert, a
notebook reopened without its kernel), its text form is a readable summary of the run, brought
up to date when the run ends.
"""

from __future__ import annotations

import asyncio
import html
import logging
import math
import time
from datetime import datetime, timezone
from typing import Any

import ipywidgets as widgets
from IPython.display import display

from ..durations import format_duration
from ..flow.model import FlowRun, time_spent
from ..flow.runners.kernel import KernelRunner, LiveRun
from .summary import TextSummary

log = logging.getLogger("cloudwright_nb")

MIN_UPDATE_SECONDS = 0.5
OUTPUT_LINES_SHOWN = 8
_BAR_STYLES = {"succeeded": "success", "failed": "danger", "cancelled": "warning"}
_COLUMNS = ("step", "state", "checks", "time")
_CELL = ' style="padding:2px 14px 2px 0"'
_COLORS = {
    "done": "#2e7d32",
    "succeeded": "#2e7d32",
    "running": "#1565c0",
    "waiting": "#ef6c00",
    "failed": "#c62828",
    "cancelled": "#757575",
}


class RunPanel(TextSummary, widgets.VBox):
    """A run's id, status, steps, countdown, last error and output, with Cancel and Retry."""

    def __init__(self, run: LiveRun) -> None:
        self.run = run
        self._body = widgets.HTML()
        self._progress = widgets.IntProgress(
            value=0, min=0, max=len(run.step_names), layout=widgets.Layout(width="100%")
        )
        self._cancel = widgets.Button(description="Cancel", icon="stop", tooltip="Cancel the run")
        self._retry = widgets.Button(description="Retry", icon="redo", tooltip="Retry the run")
        self._cancel.add_class("cw-cancel")
        self._retry.add_class("cw-retry")
        self._cancel.on_click(lambda _: self._in_background(self._cancel_run))
        self._retry.on_click(lambda _: self._in_background(self._retry_run))
        super().__init__([self._progress, self._body, widgets.HBox([self._cancel, self._retry])])
        self.add_class("cw-panel")

        self._last_render = 0.0
        self._pending: asyncio.TimerHandle | None = None
        self._display_handle: Any = None
        self._render()
        run.subscribe(self._changed)
        _Countdown.shared().add(self)

    # Text form, for outputs without a widget front end.

    def summary(self) -> str:
        text = self.run.summary()
        if self.run.runner_error:
            text += "\nthe runner stopped: " + self.run.runner_error.strip().splitlines()[-1]
        return text

    # Updates.

    def _changed(self, run: LiveRun) -> None:
        if run.done or run.runner_error:
            self._flush()
            return
        wait = MIN_UPDATE_SECONDS - (time.monotonic() - self._last_render)
        if wait <= 0:
            self._flush()
        elif self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(wait, self._flush)

    def _flush(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self._render()
        if (self.run.done or self.run.runner_error) and self._display_handle is not None:
            # Refresh the saved output too, so a reopened notebook shows how the run ended.
            self._display_handle.update(self)

    def _render(self) -> None:
        self._last_render = time.monotonic()
        run = self.run
        done_steps = sum(step.status == "done" for step in run.steps)
        failed = run.status == "failed" or bool(run.runner_error)
        body = _render_body(run, self.summary())
        with self.hold_sync():
            self._body.value = body
        with self._progress.hold_sync():
            self._progress.value = done_steps
            self._progress.bar_style = "danger" if failed else _BAR_STYLES.get(run.status, "info")
        self._cancel.disabled = run.done
        self._retry.disabled = run.status != "failed"

    def tick_countdown(self) -> None:
        if not self.run.done and self._pending is None:
            self._render()

    # Buttons.

    def _in_background(self, action: Any) -> None:
        asyncio.get_running_loop().create_task(action())

    async def _cancel_run(self) -> None:
        try:
            await asyncio.to_thread(self.run.engine.cancel, self.run.id)
        except Exception as error:
            log.warning("cancelling run %s failed: %s", self.run.id, error)
        self.run.wake()
        self.run.update(await asyncio.to_thread(self.run.engine.get, self.run.id))

    async def _retry_run(self) -> None:
        try:
            snapshot = await asyncio.to_thread(self.run.engine.retry, self.run.id)
        except Exception as error:
            log.warning("retrying run %s failed: %s", self.run.id, error)
            return
        self.run.runner_error = None
        self.run.update(snapshot)
        if not self.run.running:
            KernelRunner.shared().start(self.run)
            _Countdown.shared().add(self)


def show_panel(run: LiveRun) -> RunPanel:
    """Display a live panel for `run` in the current cell's output."""
    panel = RunPanel(run)
    panel._display_handle = display(panel, display_id=True)
    return panel


def _render_body(run: FlowRun, summary: str) -> str:
    status = run.status + (" (stalled)" if run.stalled else "")
    rows = []
    for index, step in enumerate(run.steps):
        state = step.status
        marker = "▶ " if index == run.step_index and not run.done else ""
        rows.append(
            f'<tr class="cw-step" data-step="{html.escape(step.name)}" data-state="{state}">'
            f"<td{_CELL}>{marker}{index + 1}. {html.escape(step.name)}</td>"
            f'<td class="cw-state"{_CELL}><span style="color:{_COLORS.get(state, "inherit")}">'
            f"{state}</span></td>"
            f'<td{_CELL} align="right">{step.checks}</td>'
            f'<td{_CELL} align="right">{time_spent(step.seconds_spent)}</td></tr>'
        )

    header = "".join(f'<th{_CELL} align="left">{name}</th>' for name in _COLUMNS)
    parts = [
        f'<div class="cw-run" data-status="{run.status}" title="{html.escape(summary)}">',
        f'<div class="cw-header"><b>run {html.escape(run.id)}</b> · '
        f'<span class="cw-status" style="color:{_COLORS.get(run.status, "inherit")}">'
        f"{html.escape(status)}</span></div>",
        f'<table class="cw-steps" style="border-collapse:collapse"><tr>{header}</tr>',
        *rows,
        "</table>",
    ]

    countdown = _countdown(run)
    if countdown:
        parts.append(f'<div class="cw-next">{countdown}</div>')

    dispatch_error = getattr(run, "dispatch_error", None)
    if dispatch_error:
        parts.append(f'<div class="cw-dispatch-error">{html.escape(dispatch_error)}</div>')

    runner_error = getattr(run, "runner_error", None)
    if run.error or runner_error:
        error = run.error or {"step": run.current_step, "message": "the runner stopped"}
        trace = error.get("traceback") or runner_error or ""
        parts.append(
            f'<details class="cw-error"><summary>error in step {html.escape(str(error["step"]))}: '
            f"{html.escape(str(error['message']))}</summary><pre>{html.escape(trace)}</pre>"
            "</details>"
        )

    current = min(run.step_index, len(run.steps) - 1)
    lines = run.steps[current].output[-OUTPUT_LINES_SHOWN:]
    if lines:
        parts.append(f'<pre class="cw-output">{html.escape(chr(10).join(lines))}</pre>')

    parts.append("</div>")
    return "".join(parts)


def _countdown(run: FlowRun) -> str:
    if run.done or run.next_check_at is None:
        return ""
    seconds = (run.next_check_at - datetime.now(timezone.utc)).total_seconds()
    if seconds <= 0:
        return "checking now" if run.status == "running" else "next check due"
    if seconds < 120:
        return f"next check in {math.ceil(seconds)}s"
    return f"next check in {format_duration(seconds)}"


class _Countdown:
    """One task for all panels: moves each waiting run's countdown once a second."""

    _instance: _Countdown | None = None

    def __init__(self) -> None:
        self._panels: set[RunPanel] = set()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def shared(cls) -> _Countdown:
        if cls._instance is None:
            cls._instance = _Countdown()
        return cls._instance

    def add(self, panel: RunPanel) -> None:
        self._panels.add(panel)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._panels:
            await asyncio.sleep(1.0)
            for panel in list(self._panels):
                if panel.run.done or panel.run.runner_error:
                    self._panels.discard(panel)
                else:
                    panel.tick_countdown()
