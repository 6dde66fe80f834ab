"""Keeping what a step prints, per step, even when many steps run at once in threads."""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Iterable
from typing import TextIO

_capture: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "cloudwright_step_output", default=None
)
# False while a deployed function's step runs: its lines go to the log with the run id and
# step name instead of straight to stdout.
_echo: contextvars.ContextVar[bool] = contextvars.ContextVar("cloudwright_echo", default=True)
_install_lock = threading.Lock()


class _Tee:
    """Writes through to the real stream and also to the running step's buffer, if any.

    Everything else (fileno, encoding, isatty, buffer) is the real stream's, so code that
    hands sys.stdout to a subprocess or checks for a terminal works as without capture.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        buffer = _capture.get()
        if buffer is not None:
            buffer.append(text)
            if not _echo.get():
                return len(text)
        return self.stream.write(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _install() -> None:
    # Installed on the first step, never at import, and only once: the context variable
    # decides per thread or task whose buffer a write lands in.
    if isinstance(sys.stdout, _Tee) and isinstance(sys.stderr, _Tee):
        return
    with _install_lock:
        if not isinstance(sys.stdout, _Tee):
            sys.stdout = _Tee(sys.stdout)
        if not isinstance(sys.stderr, _Tee):
            sys.stderr = _Tee(sys.stderr)


class CapturedOutput:
    """Collect the text printed inside the block; `with` gives a list that fills with lines.

    With `echo`, the text also reaches the real stdout or stderr as it is printed. A class
    rather than a generator, because every check of every step enters it.
    """

    __slots__ = ("_chunks", "_echo", "_echo_token", "_lines", "_token")

    def __init__(self, echo: bool = True) -> None:
        self._echo = echo
        self._chunks: list[str] = []
        self._lines: list[str] = []

    def __enter__(self) -> list[str]:
        _install()
        self._token = _capture.set(self._chunks)
        self._echo_token = _echo.set(self._echo)
        return self._lines

    def __exit__(self, *exc_info: object) -> None:
        _capture.reset(self._token)
        _echo.reset(self._echo_token)
        if self._chunks:
            text = "".join(self._chunks)
            self._lines.extend(line for line in text.splitlines() if line.strip())
