"""fedrl.tools.processes: a SIGTERM still stops what a block started."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from fedrl.tools.processes import sigterm_exits


def test_sigterm_inside_the_block_runs_its_cleanup():
    script = textwrap.dedent("""
        import time
        from fedrl.tools.processes import sigterm_exits
        with sigterm_exits():
            try:
                print("started", flush=True)
                time.sleep(30)
            finally:
                print("stopped what it started", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "started"
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=20)
    assert "stopped what it started" in out and child.returncode == 128 + signal.SIGTERM


def test_sigterm_handling_is_restored_after_the_block_and_a_handler_of_someone_elses_is_left_alone():
    before = signal.getsignal(signal.SIGTERM)  # an earlier test's entry point may have set one
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with sigterm_exits():
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

        def theirs(signum, frame):
            return None

        signal.signal(signal.SIGTERM, theirs)
        with sigterm_exits():
            assert signal.getsignal(signal.SIGTERM) is theirs
        assert signal.getsignal(signal.SIGTERM) is theirs
    finally:
        signal.signal(signal.SIGTERM, before)
