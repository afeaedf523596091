"""Processes that tests, benchmarks and deployments start: free ports, and stopping them by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    """Return once ``proc`` listens on ``port``; raise with the tail of ``log`` if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{log.stem} exited with {proc.returncode}; see {log}:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{log.stem} did not open port {port} within {timeout:.0f} s; see {log}:\n"
                       f"{log.read_text()[-3000:]}")


def _processes() -> list[tuple[int, str, int, int]]:
    """(pid, state, parent pid, process group) of every process (Linux ``/proc``; empty elsewhere)."""
    table = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name may hold spaces and parentheses; the fields follow the last ")".
            state, ppid, pgrp = entry.read_text().rsplit(")", 1)[1].split()[:3]
            table.append((int(entry.parent.name), state, int(ppid), int(pgrp)))
    return table


def descendants(pids: list[int]) -> list[int]:
    """Every live descendant of ``pids``."""
    children: dict[int, list[int]] = {}
    for pid, _, ppid, _ in _processes():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _running(groups: list[int], pids: list[int]) -> bool:
    # A stopped child stays a zombie until its parent reaps it, and signals still reach it:
    # only processes that are not zombies count.
    return any(state != "Z" and (pgrp in groups or pid in pids) for pid, state, _, pgrp in _processes())


def stop_pids(pids: dict[str, int], grace_s: float = 15.0) -> None:
    """SIGTERM each process group in ``pids`` and every descendant, then SIGKILL what is alive after ``grace_s``.

    Descendants are collected first: Flower starts some (the ServerApp process) in
    sessions of their own, where the group signal does not reach them.
    """
    groups = list(pids.values())
    stray = descendants(groups)
    signals = [(p, os.killpg) for p in groups] + [(p, os.kill) for p in stray]
    for pid, kill in signals:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _running(groups, stray) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, kill in signals:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """Within the block, SIGTERM raises SystemExit, so the ``finally`` blocks that stop what was started run.

    Python's default for SIGTERM ends the process at once, and a benchmark or test stopped
    that way left its SuperLink and SuperNodes running. Only the main thread can set a
    handler, and a handler someone else set is left alone.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
