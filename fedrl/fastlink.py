"""A SuperLink for RL's many small requests: middleware with nothing to do is stepped over.

    python -m fedrl.fastlink <flower-superlink arguments>
    fedrl-superlink --ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile server.key \\
        --enable-supernode-auth --isolation subprocess --disable-runtime-dependency-installation

Flower 1.41's SuperLink passes every request (Fleet, Runtime and Control API alike)
through nine Starlette ``BaseHTTPMiddleware`` layers. Such a layer costs a task
group, two memory streams and a wrapped request even when its own rule sends the
request straight on, and a sync gradient exchange on a deployment makes dozens of
requests (instructions, objects, replies and the polls between them). Profiling a
loopback deployment (py-spy on the SuperLink, see the README's Performance section)
found its event loop busy most of the time and under 6% of the SuperLink's CPU in the
handlers themselves.

This entry point runs Flower's own ``flower-superlink`` with one change: a layer is
skipped for a request exactly when its own ``dispatch`` would only call the next one
(:data:`PASS_THROUGH`): the Control API's authentication, licence, event-log and
no-cache layers for every request that is not a Control API request, the Fleet API's
node authentication and event log for every request that is not a Fleet API request
(the event log also while no event-log plugin is installed), and the runtime tracing
layer while ``FLWR_TRACING_ENABLED`` is not ``1``. Every other request, and every
other layer (error translation, protobuf translation), runs as in Flower. Guarded by
the Flower version; on another version the stock SuperLink runs unchanged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import flwr

SUPPORTED_PREFIX = "1.41."
FLEET_PREFIX = "/v1/fleet/"


def pass_through_rules() -> dict[type, Callable[[Any], bool]]:
    """Each skippable middleware class, and when (given the request) its ``dispatch`` only calls the next layer.

    Each predicate restates the condition at the top of that class's ``dispatch`` in Flower 1.41.
    """
    from flwr.supercore.routers.runtime.tracing import RuntimeTracingMiddleware
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
        RuntimeTracingMiddleware: lambda r: os.getenv("FLWR_TRACING_ENABLED") != "1",
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
    return __call__


def patch_superlink_middleware() -> bool:
    """Make each middleware in :func:`pass_through_rules` step aside when it has nothing to do.

    False (and nothing changed) on other Flower versions; patching twice changes nothing more.
    """
    if not flwr.__version__.startswith(SUPPORTED_PREFIX):
        return False
    for cls, idle in pass_through_rules().items():
        call = cls.__call__
        if not hasattr(call, "__wrapped__"):
            cls.__call__ = _skipping(call, idle)
    return True


def main(argv: list[str] | None = None) -> None:
    """``fedrl-superlink``: Flower's SuperLink with idle middleware skipped; every argument goes to it."""
    from flwr.superlink.cli import flower_superlink

    if not patch_superlink_middleware():
        print(f"fedrl-superlink: Flower {flwr.__version__} is not {SUPPORTED_PREFIX}x; running the stock SuperLink",
              file=sys.stderr)
    sys.argv = ["flower-superlink", *(sys.argv[1:] if argv is None else argv)]
    flower_superlink()


if __name__ == "__main__":
    main()
