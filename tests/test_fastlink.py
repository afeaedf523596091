"""fedrl.fastlink: a SuperLink middleware layer is stepped over only for requests it would pass straight on."""

from __future__ import annotations

import pytest
from flwr.supercore.routers.runtime.tracing import RuntimeTracingMiddleware
from flwr.superlink.routers.control import middlewares as control
from flwr.superlink.routers.fleet.middlewares import FleetEventLogMiddleware
from flwr.superlink.routers.fleet.node_auth import NodeAuthMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from fedrl import fastlink

FLEET = ("POST", "/v1/fleet/pull-messages")
RUNTIME = ("POST", "/v1/runtime/pull-messages")
CONTROL = ("POST", "/v1/control/list-runs")
SENSITIVE = min(control.CONTROL_SENSITIVE_ROUTE_KEYS)

# class: (a request it has nothing to do for, a request it must see, settings for the second)
CASES = {
    control.ControlSensitiveResponseMiddleware: (CONTROL, SENSITIVE, {}),
    control.ControlAuthenticationMiddleware: (FLEET, CONTROL, {}),
    control.ControlLicenseMiddleware: (RUNTIME, CONTROL, {}),
    control.ControlEventLogMiddleware: (FLEET, CONTROL, {}),
    RuntimeTracingMiddleware: (RUNTIME, RUNTIME, {"env": "1"}),
    NodeAuthMiddleware: (RUNTIME, FLEET, {}),
    FleetEventLogMiddleware: (FLEET, FLEET, {"plugin": object()}),
}


@pytest.fixture
def patched(monkeypatch):
    """The patch applied for one test, each class's own ``__call__`` restored after it."""
    for cls in fastlink.pass_through_rules():
        monkeypatch.setattr(cls, "__call__", cls.__call__)
    assert fastlink.patch_superlink_middleware()
    return monkeypatch


def _client(cls: type, seen: list, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    """An app with ``cls`` in front of every route of CASES, its dispatch replaced by one that records the request."""

    async def dispatch(self, request, call_next):
        seen.append(request.url.path)
        return await call_next(request)

    async def ok(request):
        return PlainTextResponse("ok")

    routes = {(m, p) for case in CASES.values() for m, p in case[:2]}
    app = Starlette(routes=[Route(p, ok, methods=[m]) for m, p in routes], middleware=[Middleware(cls)])
    app.state.fleet_event_log_plugin = None
    monkeypatch.setattr(cls, "dispatch", dispatch)
    return TestClient(app)


@pytest.mark.parametrize("cls", list(CASES), ids=lambda c: c.__name__)
def test_a_layer_is_skipped_exactly_when_it_has_nothing_to_do(cls, patched):
    idle, busy, settings = CASES[cls]
    patched.delenv("FLWR_TRACING_ENABLED", raising=False)
    seen: list[str] = []
    client = _client(cls, seen, patched)

    assert client.request(*idle).text == "ok"
    assert seen == [], f"{cls.__name__} ran for {idle}"

    if "env" in settings:
        patched.setenv("FLWR_TRACING_ENABLED", settings["env"])
    if "plugin" in settings:
        client.app.state.fleet_event_log_plugin = settings["plugin"]
    assert client.request(*busy).text == "ok"
    assert seen == [busy[1]], f"{cls.__name__} was skipped for {busy}"


def test_without_the_patch_every_layer_runs(monkeypatch):
    seen: list[str] = []
    assert _client(control.ControlAuthenticationMiddleware, seen, monkeypatch).request(*FLEET).text == "ok"
    assert seen == [FLEET[1]]


def test_control_requests_are_still_authenticated(patched):
    # No account authentication is set up: Flower's own dispatch refuses the Control request.
    app = Starlette(routes=[Route(p, lambda r: PlainTextResponse("ok"), methods=[m]) for m, p in (FLEET, CONTROL)],
                    middleware=[Middleware(control.ControlAuthenticationMiddleware)])
    client = TestClient(app, raise_server_exceptions=False)
    assert client.request(*FLEET).status_code == 200
    assert client.request(*CONTROL).status_code == 500


def test_patching_twice_wraps_once(patched):
    cls = NodeAuthMiddleware
    first = cls.__call__
    assert fastlink.patch_superlink_middleware()
    assert cls.__call__ is first


def test_every_skippable_layer_is_in_flowers_stack():
    from flwr.superlink.main import _get_middleware

    stack = {m.cls for m in _get_middleware()}
    assert set(fastlink.pass_through_rules()) <= stack
