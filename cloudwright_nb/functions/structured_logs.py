"""Log lines as Cloud Logging reads them from a function's stdout: one JSON object each.

`run_id` and `step`, when a record carries them, become labels that Cloud Logging indexes, so
`labels.run_id="..."` finds every line of one run, including what its steps printed.
"""

from __future__ import annotations

import json
import logging
import sys

_LABELS = ("run_id", "step")


class StructuredFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"severity": record.levelname, "message": record.getMessage()}
        labels = {name: getattr(record, name) for name in _LABELS if hasattr(record, name)}
        if labels:
            entry["logging.googleapis.com/labels"] = labels
        if record.exc_info:
            entry["message"] += "\n" + self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _StdoutHandler(logging.StreamHandler):
    """Writes to the `sys.stdout` of the moment, as the function's log collector reads it."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def install() -> None:
    """Send the library's log records to stdout as structured JSON, once per process."""
    logger = logging.getLogger("cloudwright_nb")
    if any(isinstance(handler, _StdoutHandler) for handler in logger.handlers):
        return
    handler = _StdoutHandler()
    handler.setFormatter(StructuredFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
