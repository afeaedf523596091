"""A private SuperLink in simulation mode on a free loopback port.

Tests and benchmarks use it instead of the shared local SuperLink that ``flwr run``
starts on a fixed port: it has its own FLWR_HOME, never installs dependencies at run
time, and is stopped (with everything it spawned) when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

CONNECTION = "fedrl-test"


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
def simulation_superlink(tmp: Path) -> Iterator[dict[str, str]]:
    """Start ``flower-superlink --simulation`` with its own FLWR_HOME under ``tmp``.

    Yields the environment under which ``flwr`` commands reach it as the connection
    :data:`CONNECTION`. The SuperLink and everything it spawned are stopped by
    process group on exit.
    """
    home = tmp / "flwr-home"
    home.mkdir(parents=True)
    port = free_port()  # Flower 1.41 serves the Control, Fleet and Runtime APIs on one HTTP port
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "FLWR_DISABLE_UPDATE_CHECK": "1"}
    bindir = Path(sys.executable).parent
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    log = tmp / "superlink.log"
    cmd = [str(bindir / "flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
           "--disable-runtime-dependency-installation", "--host", "127.0.0.1", "--port", str(port),
           "--database", str(home / "state.db")]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, proc, log)
        yield env
    finally:
        stop_pids({"superlink": proc.pid}, grace_s=20)
        proc.wait()
