"""The server's processes: one ``serve`` process (granian's) and its workers, with a run dir
of their own for the files they share (metrics, heartbeats)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def run_dir(var_dir: Path, server_pid: int) -> Path:
    """The files of one server process and its workers. Per server, so that two servers on
    one var dir never read each other's metrics or heartbeats."""
    return var_dir / "run" / str(server_pid)


def clear_stale_run_dirs(var_dir: Path) -> None:
    """Remove the run dirs of servers that are gone."""
    root = var_dir / "run"
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if entry.name.isdigit() and not alive(int(entry.name)):
            shutil.rmtree(entry, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True


def parent_of(pid: int) -> int | None:
    """The parent of a live process, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after the last ")".
    return int(stat.rsplit(")", 1)[1].split()[1])
