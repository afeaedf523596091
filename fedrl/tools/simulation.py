"""A private SuperLink in simulation mode on a free loopback port.

Tests and benchmarks use it instead of the shared local SuperLink that ``flwr run``
starts on a fixed port: it has its own FLWR_HOME, never installs dependencies at run
time, and is stopped (with everything it spawned) when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from fedrl.tools.processes import descendants, free_port, sigterm_exits, stop_pids, wait_for_port

CONNECTION = "fedrl-test"


@contextlib.contextmanager
def simulation_superlink(tmp: Path, bindir: Path | None = None) -> Iterator[dict[str, str]]:
    """Start ``flower-superlink --simulation`` with its own FLWR_HOME under ``tmp``.

    Yields the environment under which ``flwr`` commands reach it as the connection
    :data:`CONNECTION`. The SuperLink and everything it spawned are stopped by
    process group on exit. ``bindir`` holds the Flower commands (default: this
    interpreter's), so another environment's Flower and app can be run.
    """
    home = tmp / "flwr-home"
    home.mkdir(parents=True)
    port = free_port()  # Flower 1.42 serves the Control, Fleet and Runtime APIs on one HTTP port
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "FLWR_DISABLE_UPDATE_CHECK": "1"}
    bindir = bindir or Path(sys.executable).parent
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    log = tmp / "superlink.log"
    cmd = [str(bindir / "flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
           "--disable-runtime-dependency-installation", "--host", "127.0.0.1", "--port", str(port),
           "--database", str(home / "state.db")]
    with open(log, "w") as out:
        # Ray puts its driver's working directory on its workers' path: one of our own, so that a
        # checkout there cannot stand in for the app's installed copy.
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp)
    with sigterm_exits():
        try:
            wait_for_port(port, proc, log)
            yield env
        finally:
            stop_pids({"superlink": proc.pid}, grace_s=20)
            proc.wait()


def kill_superlink(env: dict[str, str]) -> None:
    """SIGKILL the SuperLink that ``env``'s FLWR_HOME belongs to, and everything it started: a crash, for tests."""
    database = str(Path(env["FLWR_HOME"]) / "state.db").encode()
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if database in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
    if not pids:
        raise RuntimeError(f"no SuperLink with the database {database.decode()} is running")
    for pid in pids + descendants(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
