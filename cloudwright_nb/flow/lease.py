"""Who holds a run's lease, and whether that holder can still be running."""

from __future__ import annotations

import os
import socket
from pathlib import Path

HOST = socket.gethostname()


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
