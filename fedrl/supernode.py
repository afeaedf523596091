"""A SuperNode for RL's many small messages: short polls and the ClientApp run in-process.

    python -m fedrl.supernode [--poll-max-ms 5] [--stock-clientapp] <flower-supernode arguments>
    fedrl-supernode --root-certificates ca.crt --superlink host:9092 \\
        --auth-supernode-private-key node-0 --node-config 'partition-id=0 num-partitions=2'

Flower 1.41's stock path costs seconds per message, which a PPO round pays once per
minibatch exchange:

- the SuperNode sleeps 3 s after every pull that found nothing, and 0.5 s at a time
  while it waits for the ClientApp's reply;
- its SuperExec asks for new tasks once a second, then starts a fresh
  ``flwr-clientapp`` process per message, which installs the FAB and imports torch,
  then fetches the message object by object over HTTP, retrying after 1 s whenever
  an object is not there yet.

This entry point runs Flower's own ``flower-supernode`` with these changes. Its waits
become adaptive (:class:`Backoff`): 0.5 ms after a message, doubling to
``--poll-max-ms`` (default 5 ms) while idle, 20 ms after 0.3 s without messages
(a node that finished its rollout before the others), 100 ms after 1 s and
Flower's 3 s after a minute, so an idle node does not load the SuperLink; after
each reply it first sleeps most of the usual gap before the server's next
instruction (:mod:`fedrl.waits`). And,
unless ``--stock-clientapp`` is given, the node runs with ``--isolation process``
and runs each ClientApp task itself (:class:`InNodeClientApp`) as soon as its message
has arrived, through the node's own Runtime API handlers, with the app imported once.
And object pulls retry after 1 ms instead of 1 s (:mod:`fedrl.pulls`). And the node
signs one timestamp for up to a second of requests instead of one per request
(:func:`patch_node_signatures`; the SuperLink accepts a signed timestamp for 300 s
either way). Everything is
guarded by the Flower version; on another version the stock SuperNode runs unchanged.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flwr

from fedrl import pulls
from fedrl.waits import ExpectedWait

log = logging.getLogger("fedrl")

SUPPORTED_PREFIX = "1.41."
MIN_WAIT_S = 0.0005
DEFAULT_POLL_MAX_MS = 5.0
# (idle seconds, longest wait): how far the wait may grow the longer nothing happens.
IDLE_TIERS = ((0.3, 0.02), (1.0, 0.1), (60.0, 3.0))
STOCK_IDLE_SLEEP_S = 3
STOCK_REPLY_SLEEP_S = 0.5
HEARTBEAT_AFTER_S = 5.0
SIGNATURE_REUSE_S = 1.0


class Backoff:
    """Adaptive wait between polls.

    ``MIN_WAIT_S`` right after :meth:`activity`, doubling on every idle poll up to
    ``max_s``; past each ``IDLE_TIERS`` idle time the cap rises to that tier's wait.
    """

    def __init__(self, max_s: float, tiers: tuple[tuple[float, float], ...] = IDLE_TIERS) -> None:
        if max_s <= 0:
            raise ValueError(f"poll max must be > 0 s, got {max_s}")
        self.max_s = max_s
        self.tiers = tiers
        self.wait = MIN_WAIT_S
        self.last_activity = time.monotonic()

    def activity(self) -> None:
        """A message moved: poll fast again."""
        self.wait = MIN_WAIT_S
        self.last_activity = time.monotonic()

    def next_wait(self) -> float:
        """How long to sleep before the next poll."""
        idle = time.monotonic() - self.last_activity
        cap = self.max_s
        for after_s, tier_cap in self.tiers:
            if idle > after_s:
                cap = max(cap, tier_cap)
        wait = self.wait
        self.wait = min(2 * self.wait, cap)
        return min(wait, cap)


@dataclass
class _SinceReply:
    """When this node's last reply went, how long it slept after it, and the polls since."""

    at: float
    slept: float
    polls: int = 0


class _Clock:
    """Stands in for the ``time`` module inside Flower's SuperNode loop: only ``sleep`` differs."""

    def __init__(self, idle: Backoff, reply: Backoff) -> None:
        self.idle = idle
        self.reply = reply

    def sleep(self, seconds: float) -> None:
        if seconds == STOCK_IDLE_SLEEP_S:
            seconds = self.idle.next_wait()
        elif seconds == STOCK_REPLY_SLEEP_S:
            seconds = self.reply.next_wait()
        time.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def patch_supernode_polls(max_s: float, executor: InNodeClientApp | None = None) -> bool:
    """Make Flower's SuperNode loop poll adaptively, and run ClientApp tasks with ``executor``.

    False (and nothing changed) on other Flower versions.
    """
    if not flwr.__version__.startswith(SUPPORTED_PREFIX):
        return False
    from flwr.supernode import start_client_internal as loop

    idle, reply = Backoff(max_s), Backoff(max_s, tiers=())
    pull, push = loop._pull_and_store_message, loop._push_messages
    # The gap between this node's reply and the server's next instruction.
    gap = ExpectedWait()
    since_reply: _SinceReply | None = None

    def pull_and_note(*args: Any, **kwargs: Any) -> int | None:
        nonlocal since_reply
        start = time.monotonic()
        run_id = pull(*args, **kwargs)
        if since_reply is not None:
            since_reply.polls += 1
        if run_id is not None:
            if since_reply is not None:
                gap.observe(start - since_reply.at, since_reply.slept, since_reply.polls == 1)
                since_reply = None
            idle.activity()
            reply.activity()
            if executor is not None:
                executor.run_pending(kwargs["state"])
        return run_id

    def push_and_rest(*args: Any, **kwargs: Any) -> None:
        nonlocal since_reply
        push(*args, **kwargs)
        since_reply = _SinceReply(at=time.monotonic(), slept=gap.first_sleep())
        time.sleep(since_reply.slept)

    loop._pull_and_store_message = pull_and_note
    loop._push_messages = push_and_rest
    loop.time = _Clock(idle, reply)
    return True


def patch_node_signatures(reuse_s: float = SIGNATURE_REUSE_S) -> bool:
    """Sign a fresh timestamp for Fleet requests at most every ``reuse_s`` seconds.

    Flower signs the current time for every request (an ECDSA signature on each
    side, the SuperLink's check the dearer); the same signed time serves the node's
    requests for ``reuse_s``, and fedrl-superlink checks it once
    (:func:`fedrl.fastlink.patch_node_auth_cache`). False (and nothing changed) on
    other Flower versions.
    """
    if not flwr.__version__.startswith(SUPPORTED_PREFIX):
        return False
    from flwr.supernode import node_auth_http_interceptor as auth

    if getattr(auth.now, "fedrl_patch", None) == "reuse":
        return True
    now, sign = auth.now, auth.sign_message
    lock = threading.Lock()  # object pushes and pulls run in several threads
    stamp: list[Any] = [float("-inf"), None]  # (monotonic time taken, datetime)
    last: list[Any] = [None, b"", b""]  # (private key, message, signature)

    def recent_now() -> Any:
        with lock:
            t = time.monotonic()
            if t - stamp[0] >= reuse_s:
                stamp[:] = [t, now()]
            return stamp[1]

    def sign_once(private_key: Any, message: bytes) -> bytes:
        with lock:
            if last[0] is private_key and last[1] == message:
                return last[2]
        signature = sign(private_key, message)
        with lock:
            last[:] = [private_key, message, signature]
        return signature

    recent_now.fedrl_patch = "reuse"  # type: ignore[attr-defined]
    auth.now, auth.sign_message = recent_now, sign_once
    return True


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="fedrl-supernode", description=__doc__.splitlines()[0],
                                     epilog="Every other argument goes to flower-supernode unchanged.")
    parser.add_argument("--poll-max-ms", type=float, default=DEFAULT_POLL_MAX_MS,
                        help=f"longest wait between polls while a run is active (default {DEFAULT_POLL_MAX_MS})")
    parser.add_argument("--stock-clientapp", action="store_true",
                        help="keep Flower's one-process-per-message ClientApp (only the polls change)")
    args, rest = parser.parse_known_args(argv)
    if not args.poll_max_ms > 0:
        parser.error(f"--poll-max-ms must be > 0, got {args.poll_max_ms}")
    if not args.stock_clientapp and any(a == "--isolation" or a.startswith("--isolation=") for a in rest):
        parser.error("--isolation is chosen by fedrl-supernode (process: it runs the ClientApp itself); "
                     "add --stock-clientapp to keep Flower's subprocess isolation")
    return args, rest


def main(argv: list[str] | None = None) -> None:
    """``fedrl-supernode``: Flower's SuperNode with adaptive polls and the ClientApp run in-process."""
    args, flower_args = _parse(sys.argv[1:] if argv is None else argv)
    from flwr.supernode.cli.flower_supernode import flower_supernode

    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s fedrl-supernode: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)

    executor = None if args.stock_clientapp else InNodeClientApp()
    patched = patch_supernode_polls(args.poll_max_ms / 1000, executor) and pulls.install() and patch_node_signatures()
    if not patched:
        print(f"fedrl-supernode: Flower {flwr.__version__} is not {SUPPORTED_PREFIX}x; running the stock SuperNode",
              file=sys.stderr)
    elif executor is not None:
        # Nothing else may take the node's ClientApp tasks: no SuperExec is started.
        flower_args += ["--isolation", "process"]
    sys.argv = ["flower-supernode", *flower_args]
    flower_supernode()


# ---------------------------------------------------------------- the ClientApp inside the node


class _InNodeRuntime:
    """The node's Runtime API handlers called directly, for one task: what ``flwr-clientapp``
    reaches over HTTP (``client.PullObject(request)`` and so on), without the requests."""

    HANDLERS = {"PullTaskInput": "pull_task_input", "PullMessages": "pull_messages", "PullObject": "pull_object",
                "ConfirmMessageReceived": "confirm_message_received", "PushMessages": "push_messages",
                "PushObject": "push_object", "PushTaskOutput": "push_task_output"}

    def __init__(self, state: Any, task: Any) -> None:
        self.state, self.task = state, task

    def __getattr__(self, method: str) -> Any:
        from flwr.supercore.servicer.runtime import runtime_handlers as core
        from flwr.supernode.servicer.runtime import runtime_handlers as node

        if method == "SendTaskHeartbeat":
            handler = core.send_task_heartbeat
        elif method in self.HANDLERS:
            handler = getattr(node, self.HANDLERS[method])
        else:
            raise AttributeError(method)
        return lambda request: handler(request, self.state, self.task)


class InNodeClientApp:
    """Runs the node's ClientApp tasks in the node process, right after each message arrives.

    Does what ``flwr-clientapp`` does per message (take the task input, run the app,
    store the reply and the context) through the node's own Runtime API handlers, so
    the reply is ready when the node's loop looks for it. The FAB is installed and the
    app imported once; a task for another FAB drops the old app's modules (those
    imported from its project directory) and imports the new one.
    """

    def __init__(self) -> None:
        self.fab_hash: str | None = None
        self.project_dir: Path | None = None
        self.app: Any = None

    def _load(self, fab: Any, run: Any) -> Any:
        from flwr.cli.install import install_from_fab
        from flwr.clientapp.utils import get_load_client_app_fn
        from flwr.common.config import get_project_dir

        if self.app is not None and fab.hash_str == self.fab_hash:
            return self.app
        if self.project_dir is not None:
            log.info("a new app version (FAB %s); reloading the ClientApp", fab.hash_str[:8])
            _forget_modules_under(self.project_dir)
        else:
            # This process imported the installed fedrl to run the node; the app must import
            # the FAB's copy, as a fresh flwr-clientapp process would.
            for name in [m for m in sys.modules if m == "fedrl" or m.startswith("fedrl.")]:
                del sys.modules[name]
        install_from_fab(fab.content, skip_prompt=True)
        self.project_dir = Path(get_project_dir(run.fab_id, run.fab_version, fab.hash_str)).absolute()
        load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
        self.app = load(run.fab_id, run.fab_version, fab.hash_str)
        self.fab_hash = fab.hash_str
        return self.app

    def run_pending(self, state: Any) -> None:
        """Run every ClientApp task waiting in ``state``."""
        from flwr.proto.runtime_pb2 import AcquireTaskRequest
        from flwr.supercore.constant import TaskType
        from flwr.supernode.servicer.runtime import runtime_handlers

        while True:
            res = runtime_handlers.acquire_task(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value]),
                                                state)
            if not (res.HasField("task") and res.token):
                return
            self.run_task(_InNodeRuntime(state, res.task))

    def run_task(self, runtime: _InNodeRuntime) -> None:
        """Run one task end to end; errors become an error reply, as in ``flwr-clientapp``."""
        from flwr.app import Message
        from flwr.app.error import Error
        from flwr.clientapp.client_app import LoadClientAppError
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
        from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(runtime))
        # A gradient task ends in milliseconds, long before the node expects its first heartbeat
        # (Flower sends one every ~20 s): only a task still running after HEARTBEAT_AFTER_S sends them.
        lock, finished = threading.Lock(), [False]

        def start_heartbeat() -> None:
            with lock:
                if not finished[0]:
                    heartbeat.start()

        timer = threading.Timer(HEARTBEAT_AFTER_S, start_heartbeat)
        timer.daemon = True
        message = context = reply = None
        status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
        try:
            timer.start()
            message, context, run, fab = pull_task_input(runtime)
            app = self._load(fab, run)
            reply = app(message=message, context=context)
            status, details = SubStatus.COMPLETED, ""
        except Exception as exc:  # noqa: BLE001 - every failure must reach the server as an error reply
            log.error("ClientApp task failed: %r", exc, exc_info=exc)
            code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION if isinstance(exc, LoadClientAppError) else \
                ErrorCode.CLIENT_APP_RAISED_EXCEPTION
            details = f"{type(exc)}:<'{exc}'>"
            if message is not None:
                reply = Message(Error(code=code, reason=details), reply_to=message)
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(runtime, reply, context)
                push_task_output(client=runtime, context=context, sub_status=status, details=details)
            finally:
                with lock:
                    finished[0] = True
                    timer.cancel()
                    if heartbeat.is_running:
                        heartbeat.stop()


def _forget_modules_under(directory: Path) -> None:
    """Drop the modules imported from ``directory`` and take it off ``sys.path``."""
    prefix = str(directory) + os.sep
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(prefix):
            del sys.modules[name]
    while str(directory) in sys.path:
        sys.path.remove(str(directory))


if __name__ == "__main__":
    main()
