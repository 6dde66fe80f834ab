"""Lease holder names, whether a holder can still be running, and lease renewal."""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

HOST = socket.gethostname()
log = logging.getLogger("cloudwright_nb")


def new_holder(token: str) -> str:
    """Return a lease holder name: this host, this process, and a token for the tick."""
    return f"{HOST}:{os.getpid()}:{token}"


def holder_alive(holder: str) -> bool:
    """Return whether a lease holder may still run; only processes on this host can be checked."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != HOST or not pid_text.isdigit():
        return True
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """Return whether a process has exited but its parent has not reaped it yet (Linux only)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may contain spaces.
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] == "Z"


# How long the keeper sleeps with no lease to renew. A lease kept for a step is renewed every
# 20 s by default, so keep() wakes the sleeping keeper only for a shorter period. With a longer
# idle wait, every step that starts after the last one ended would wake it.
_IDLE_WAIT_SECONDS = 5.0


class LeaseKeeper:
    """One thread that renews the leases of all running steps, each every third of its budget.

    A thread per step would cost a thread start on every check, which dominates short steps.
    """

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._due: dict[int, tuple[float, Callable[[], bool], float]] = {}
        self._thread: threading.Thread | None = None
        # When the thread will next look at the tickets, so keep() wakes it only if sooner.
        self._next_look = float("inf")

    def keep(self, renew: Callable[[], bool], period: float) -> int:
        """Call `renew()` every `period` seconds until it returns False or `release` is called."""
        with self._wake:
            ticket = next(_tickets)
            due_at = time.monotonic() + period
            self._due[ticket] = (due_at, renew, period)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="cloudwright-nb leases", daemon=True
                )
                self._thread.start()
            if due_at < self._next_look:
                self._wake.notify()
            return ticket

    def release(self, ticket: int) -> None:
        with self._wake:
            self._due.pop(ticket, None)

    def _run(self) -> None:
        while True:
            with self._wake:
                now = time.monotonic()
                due = [(ticket, renew) for ticket, (at, renew, _) in self._due.items() if at <= now]
                if not due:
                    soonest = min((at for at, _, _ in self._due.values()), default=None)
                    wait = (soonest if soonest is not None else now + _IDLE_WAIT_SECONDS) - now
                    self._next_look = now + max(wait, 0.01)
                    self._wake.wait(max(wait, 0.01))
                    # Awake, it looks at every ticket before it waits again: no need to wake it.
                    self._next_look = float("-inf")
                    continue
            for ticket, renew in due:
                try:
                    held = renew()
                except Exception as error:
                    # A store hiccup: keep the ticket and try again next period.
                    log.warning("renewing a lease failed: %s", error)
                    held = True
                with self._wake:
                    if ticket in self._due:
                        _, _, period = self._due[ticket]
                        if held:
                            self._due[ticket] = (time.monotonic() + period, renew, period)
                        else:
                            del self._due[ticket]


_tickets = itertools.count()
KEEPER = LeaseKeeper()


class Renewing:
    """While its block runs, the shared keeper calls `renew()` every `period` seconds."""

    __slots__ = ("_period", "_renew", "_ticket")

    def __init__(self, renew: Callable[[], bool], period: float) -> None:
        self._renew = renew
        self._period = period

    def __enter__(self) -> None:
        self._ticket = KEEPER.keep(self._renew, self._period)

    def __exit__(self, *exc_info: object) -> None:
        KEEPER.release(self._ticket)
