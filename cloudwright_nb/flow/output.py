"""Keeping what a step prints, per step, even when many steps run at once in threads."""

from __future__ import annotations

import contextlib
import contextvars
import io
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

_capture: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "cloudwright_step_output", default=None
)
# False while a deployed function's step runs: its lines go to the log with the run id and
# step name instead of straight to stdout.
_echo: contextvars.ContextVar[bool] = contextvars.ContextVar("cloudwright_echo", default=True)
_install_lock = threading.Lock()


class _Tee(io.TextIOBase):
    """Writes through to the real stream and also to the running step's buffer, if any."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        buffer = _capture.get()
        if buffer is not None:
            buffer.append(text)
            if not _echo.get():
                return len(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _install() -> None:
    # Installed on the first step, never at import, and only once: the context variable
    # decides per thread or task whose buffer a write lands in.
    with _install_lock:
        if not isinstance(sys.stdout, _Tee):
            sys.stdout = _Tee(sys.stdout)
        if not isinstance(sys.stderr, _Tee):
            sys.stderr = _Tee(sys.stderr)


@contextlib.contextmanager
def capture_output(echo: bool = True) -> Iterator[list[str]]:
    """Collect the text printed inside the block; yields a list that fills with lines.

    With `echo`, the text also reaches the real stdout or stderr as it is printed.
    """
    _install()
    chunks: list[str] = []
    token = _capture.set(chunks)
    echo_token = _echo.set(echo)
    lines: list[str] = []
    try:
        yield lines
    finally:
        _capture.reset(token)
        _echo.reset(echo_token)
        lines.extend(line for line in "".join(chunks).splitlines() if line.strip())
