"""``fedrl-superlink``'s patches: Flower's SuperLink with less work per request.

A sync gradient exchange on a deployment is dozens of small requests, and Flower 1.42
passes each through eight Starlette middleware layers (1.41 had nine) and answers an empty poll at once.
Three patches (each applied through :mod:`fedrl.transport.compat`):

* ``superlink-middleware``: a layer is stepped over for a request exactly when its own
  ``dispatch`` would only call the next one (:func:`pass_through_rules`), and the layers
  that remain run the message and object calls without a streaming task group
  (:func:`_buffered`); same checks, same order.
* ``superlink-auth-cache``: a valid (node key, timestamp, signature) is verified once;
  the timestamp's age and the node's registration are still checked on every request.
* ``superlink-held-pulls``: a pull that finds nothing waits in the SuperLink for the next
  push (up to :data:`HOLD_S`) instead of being asked again over HTTP.

Why each was needed and what it bought: ``docs/transport.md``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

FLEET_PREFIX = "/v1/fleet/"
VERIFIED_CACHE_SIZE = 4096
# Unary calls with small protobuf replies: all a message and its objects need on either API.
MESSAGE_ROUTES = frozenset(f"/v1/{api}/{call}" for api in ("fleet", "runtime") for call in
                           ("pull-messages", "push-messages", "pull-object", "push-object",
                            "confirm-message-received"))
# Longest a pull that found nothing is held. Flower's clients time out after 30 s; a
# ServerApp's reply deadline may be passed by at most this much.
HOLD_S = 0.5
# Pulls held at once. Each holds a thread of the server's pool (anyio: 40), and the
# rest of the pool must stay free for the pushes that end the holds.
MAX_HELD = 16


def pass_through_rules() -> dict[type, Callable[[Any], bool]]:
    """Each skippable middleware class, and when (given the request) its ``dispatch`` only calls the next layer.

    Each predicate restates the condition at the top of that class's ``dispatch`` in Flower 1.42.
    """
    from flwr.superlink.routers.control import middlewares as control
    from flwr.superlink.routers.fleet.middlewares import FleetEventLogMiddleware
    from flwr.superlink.routers.fleet.node_auth import NodeAuthMiddleware

    def not_control(request: Any) -> bool:
        return not control._is_control_path(request.url.path)

    def not_fleet(request: Any) -> bool:
        return not request.url.path.startswith(FLEET_PREFIX)

    return {
        control.ControlSensitiveResponseMiddleware: lambda r: not control._is_control_sensitive_route(r),
        control.ControlAuthenticationMiddleware: not_control,
        control.ControlLicenseMiddleware: not_control,
        control.ControlEventLogMiddleware: not_control,
        NodeAuthMiddleware: not_fleet,
        FleetEventLogMiddleware: lambda r: not_fleet(r) or getattr(r.app.state, "fleet_event_log_plugin", None) is None,
    }


def _skipping(call: Callable[..., Any], idle: Callable[[Any], bool]) -> Callable[..., Any]:
    from starlette.requests import Request

    async def __call__(self: Any, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and idle(Request(scope)):
            await self.app(scope, receive, send)
        else:
            await call(self, scope, receive, send)

    __call__.__wrapped__ = call  # type: ignore[attr-defined]
    __call__.fedrl_patch = "skip"  # type: ignore[attr-defined]
    return __call__


def _buffered(call: Callable[..., Any]) -> Callable[..., Any]:
    """``BaseHTTPMiddleware.__call__`` for :data:`MESSAGE_ROUTES`: ``dispatch`` with a buffered ``call_next``.

    As in Starlette: the request body read by ``dispatch`` is replayed to the inner
    layers; an exception they raise before responding comes out of ``call_next``, and
    one raised after their response is raised once that response has been sent.
    """
    from starlette.middleware.base import _CachedRequest
    from starlette.responses import Response

    async def __call__(self: Any, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] not in MESSAGE_ROUTES:
            await call(self, scope, receive, send)
            return
        request = _CachedRequest(scope, receive)
        late: list[Exception] = []

        async def call_next(_: Any) -> Response:
            sent: list[dict] = []

            async def keep(message: dict) -> None:
                sent.append(message)

            try:
                await self.app(scope, request.wrapped_receive, keep)
            except Exception as exc:
                if not any(m["type"] == "http.response.start" for m in sent):
                    raise
                late.append(exc)
            start = next((m for m in sent if m["type"] == "http.response.start"), None)
            if start is None:
                raise RuntimeError("No response returned.")
            response = Response(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
                                status_code=start["status"])
            response.raw_headers = list(start["headers"])
            return response

        response = await self.dispatch_func(request, call_next)
        await response(scope, request.wrapped_receive, send)
        if late:
            raise late[0]

    __call__.__wrapped__ = call  # type: ignore[attr-defined]
    __call__.fedrl_patch = "buffer"  # type: ignore[attr-defined]
    return __call__


def patch_superlink_middleware() -> None:
    """Make each middleware in :func:`pass_through_rules` step aside when it has nothing to do,
    and every ``BaseHTTPMiddleware`` buffer the calls in :data:`MESSAGE_ROUTES`.

    Patching twice changes nothing more.
    """
    from starlette.middleware.base import BaseHTTPMiddleware

    # First, so that the skipping wrappers below call the buffered version.
    if getattr(BaseHTTPMiddleware.__call__, "fedrl_patch", None) != "buffer":
        BaseHTTPMiddleware.__call__ = _buffered(BaseHTTPMiddleware.__call__)
    for cls, idle in pass_through_rules().items():
        call = cls.__call__
        if getattr(call, "fedrl_patch", None) != "skip":
            cls.__call__ = _skipping(call, idle)


def patch_node_auth_cache(size: int = VERIFIED_CACHE_SIZE) -> None:
    """Fleet node authentication verifies each valid (public key, timestamp, signature) once.

    The ``size`` most recent valid triples are remembered; an invalid one is checked
    every time.
    """
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes
    from flwr.superlink.routers.fleet import node_auth

    verify = node_auth.verify_signature
    if getattr(verify, "fedrl_patch", None) == "cache":
        return
    valid: OrderedDict[tuple[bytes, bytes, bytes], None] = OrderedDict()
    lock = threading.Lock()  # authenticate_node runs in the server's thread pool

    def verify_once(public_key: Any, message: bytes, signature: bytes) -> bool:
        key = (public_key_to_bytes(public_key), message, signature)
        with lock:
            if key in valid:
                valid.move_to_end(key)
                return True
        if not verify(public_key, message, signature):
            return False
        with lock:
            valid[key] = None
            if len(valid) > size:
                valid.popitem(last=False)
        return True

    verify_once.fedrl_patch = "cache"  # type: ignore[attr-defined]
    node_auth.verify_signature = verify_once


class Doorbell:
    """Rung after every push of a message or an object; a pull that found nothing waits for the next ring."""

    def __init__(self, max_held: int = MAX_HELD) -> None:
        self._changed = threading.Condition()
        self._rings = 0
        self.places = threading.BoundedSemaphore(max_held)

    def rings(self) -> int:
        """How often it has rung so far."""
        with self._changed:
            return self._rings

    def ring(self) -> None:
        """Something was pushed: wake every held pull."""
        with self._changed:
            self._rings += 1
            self._changed.notify_all()

    def wait(self, seen: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a ring after the first ``seen``; False if none came."""
        with self._changed:
            return self._changed.wait_for(lambda: self._rings != seen, timeout)


def held(pull: Callable[..., Any], found_nothing: Callable[[Any], bool], bell: Doorbell,
         hold_s: float = HOLD_S) -> Callable[..., Any]:
    """``pull``, looked again after each ring of ``bell`` while ``found_nothing`` (up to ``hold_s``).

    The count of rings is read before each look, so a push that lands between a look
    and the wait ends the wait at once. When every place is taken, it answers at once.
    """

    def held_pull(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + hold_s
        seen = bell.rings()
        response = pull(*args, **kwargs)
        if not found_nothing(response) or not bell.places.acquire(blocking=False):
            return response
        try:
            while found_nothing(response):
                left = deadline - time.monotonic()
                if left <= 0 or not bell.wait(seen, left):
                    break
                seen = bell.rings()
                response = pull(*args, **kwargs)
        finally:
            bell.places.release()
        return response

    held_pull.__wrapped__ = pull  # type: ignore[attr-defined]
    held_pull.fedrl_patch = "held"  # type: ignore[attr-defined]
    return held_pull


def ringing(push: Callable[..., Any], bell: Doorbell) -> Callable[..., Any]:
    """``push``, then ``bell`` rung (also when it raised: a ring only makes pulls look again)."""

    def push_and_ring(*args: Any, **kwargs: Any) -> Any:
        try:
            return push(*args, **kwargs)
        finally:
            bell.ring()

    push_and_ring.__wrapped__ = push  # type: ignore[attr-defined]
    push_and_ring.fedrl_patch = "ring"  # type: ignore[attr-defined]
    return push_and_ring


def _no_messages(response: Any) -> bool:
    return len(response.messages_list) == 0


def _object_not_there_yet(response: Any) -> bool:
    # Found but empty: announced by its message and not pushed yet. An unknown object never comes.
    return response.object_found and not response.object_available


def patch_held_pulls(bell: Doorbell | None = None, hold_s: float = HOLD_S) -> None:
    """Hold the Fleet and Runtime pulls of messages and objects that find nothing (see the module docstring).

    Patching twice changes nothing more.
    """
    from flwr.superlink.servicer.fleet import fleet_handlers
    from flwr.superlink.servicer.runtime import runtime_handlers

    bell = bell or Doorbell()
    for handlers in (fleet_handlers, runtime_handlers):
        if getattr(handlers.pull_messages, "fedrl_patch", None) == "held":
            continue
        handlers.pull_messages = held(handlers.pull_messages, _no_messages, bell, hold_s)
        handlers.pull_object = held(handlers.pull_object, _object_not_there_yet, bell, hold_s)
        handlers.push_messages = ringing(handlers.push_messages, bell)
        handlers.push_object = ringing(handlers.push_object, bell)
