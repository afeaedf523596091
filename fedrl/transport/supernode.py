"""``fedrl-supernode``'s patches: Flower's SuperNode for RL's many small messages.

Flower 1.42's SuperNode sleeps 3 s after an empty pull and 0.5 s at a time while its
ClientApp works, and starts a fresh ``flwr-clientapp`` process per message; a PPO round
pays that once per minibatch exchange. Two patches (applied through
:mod:`fedrl.transport.compat`):

* ``supernode-polls``: the loop's waits become adaptive (:class:`Backoff`; after a reply
  it first sleeps most of the usual gap, :mod:`fedrl.transport.waits`), and unless
  ``--stock-clientapp`` is given the node runs each ClientApp task itself
  (:class:`InNodeClientApp`) as soon as its message has arrived.
* ``supernode-signatures``: one signed timestamp serves a second of requests.

Why each was needed and what it bought: ``docs/transport.md``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrl.transport.waits import ExpectedWait

log = logging.getLogger("fedrl")

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


def install_polls(max_s: float = DEFAULT_POLL_MAX_MS / 1000, executor: InNodeClientApp | None = None) -> None:
    """Make Flower's SuperNode loop poll adaptively, and run ClientApp tasks with ``executor``."""
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


def patch_node_signatures(reuse_s: float = SIGNATURE_REUSE_S) -> None:
    """Sign a fresh timestamp for Fleet requests at most every ``reuse_s`` seconds.

    Flower signs the current time for every request (an ECDSA signature on each
    side, the SuperLink's check the dearer); the same signed time serves the node's
    requests for ``reuse_s``, and fedrl-superlink checks it once
    (:func:`fedrl.transport.superlink.patch_node_auth_cache`).
    """
    from flwr.supernode import node_auth_http_interceptor as auth

    if getattr(auth.now, "fedrl_patch", None) == "reuse":
        return
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
