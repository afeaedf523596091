"""fedrl.transport.superlink: a SuperLink middleware layer is stepped over only for requests it would pass straight on."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from flwr.proto.fleet_pb2 import PullMessagesResponse
from flwr.proto.message_pb2 import Message as MessageProto
from flwr.proto.message_pb2 import PullObjectResponse
from flwr.superlink.routers.control import middlewares as control
from flwr.superlink.routers.fleet.middlewares import FleetEventLogMiddleware
from flwr.superlink.routers.fleet.node_auth import NodeAuthMiddleware
from flwr.superlink.servicer.fleet import fleet_handlers
from flwr.superlink.servicer.runtime import runtime_handlers
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from fedrl.transport import superlink

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
    NodeAuthMiddleware: (RUNTIME, FLEET, {}),
    FleetEventLogMiddleware: (FLEET, FLEET, {"plugin": object()}),
}


@pytest.fixture
def patched(monkeypatch):
    """The patch applied for one test, each class's own ``__call__`` restored after it."""
    monkeypatch.setattr(BaseHTTPMiddleware, "__call__", BaseHTTPMiddleware.__call__)
    for cls in superlink.pass_through_rules():
        monkeypatch.setattr(cls, "__call__", cls.__call__)
    superlink.patch_superlink_middleware()
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
    seen: list[str] = []
    client = _client(cls, seen, patched)

    assert client.request(*idle).text == "ok"
    assert seen == [], f"{cls.__name__} ran for {idle}"

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
    superlink.patch_superlink_middleware()
    assert cls.__call__ is first


def test_every_skippable_layer_is_in_flowers_stack():
    from flwr.superlink.main import _get_middleware

    stack = {m.cls for m in _get_middleware()}
    assert set(superlink.pass_through_rules()) <= stack


def _echo_app(seen: list, middleware: list) -> TestClient:
    """Message routes that echo the body (one fails, one streams), behind ``middleware``."""

    async def echo(request):
        return PlainTextResponse((await request.body()).decode(), headers={"x-inner": "1"})

    async def boom(request):
        raise KeyError("inner failure")

    async def stream(request):
        async def parts():
            for part in ("a", "b"):
                yield part
        return StreamingResponse(parts())

    routes = [Route("/v1/fleet/push-object", echo, methods=["POST"]),
              Route("/v1/runtime/pull-object", boom, methods=["POST"]),
              Route("/v1/control/stream-logs", stream, methods=["POST"])]
    return TestClient(Starlette(routes=routes, middleware=middleware), raise_server_exceptions=False)


def test_message_routes_run_dispatch_with_the_same_body_response_and_errors(patched):
    seen: list = []
    buffered: list[bool] = []

    async def reads_body_and_tags(request, call_next):
        buffered.append("_buffered" in call_next.__qualname__)
        seen.append(("in", await request.body()))  # as ProtobufTranslationMiddleware does
        try:
            response = await call_next(request)
        except KeyError as exc:  # as Flower's error translator does
            seen.append(("caught", str(exc)))
            return JSONResponse({"error": "translated"}, status_code=500)
        seen.append(("out", response.status_code, response.headers.get("x-inner")))
        response.headers["x-outer"] = "1"
        return response

    client = _echo_app(seen, [Middleware(BaseHTTPMiddleware, dispatch=reads_body_and_tags)])
    r = client.post("/v1/fleet/push-object", content=b"payload")
    assert (r.status_code, r.text, r.headers["x-inner"], r.headers["x-outer"]) == (200, "payload", "1", "1")
    assert seen == [("in", b"payload"), ("out", 200, "1")]

    seen.clear()
    r = client.post("/v1/runtime/pull-object", content=b"x")
    assert (r.status_code, r.json()) == (500, {"error": "translated"})
    assert seen == [("in", b"x"), ("caught", "'inner failure'")]

    seen.clear()  # not a message route: Starlette's own streaming path
    assert client.post("/v1/control/stream-logs").text == "ab"
    assert buffered == [True, True, False]


def test_a_valid_signature_is_verified_once_and_an_invalid_one_every_time(monkeypatch):
    from cryptography.hazmat.primitives.asymmetric import ec
    from flwr.supercore.primitives.asymmetric import sign_message
    from flwr.superlink.routers.fleet import node_auth

    calls = []
    real = node_auth.verify_signature

    def counting(public_key, message, signature):
        calls.append(message)
        return real(public_key, message, signature)

    monkeypatch.setattr(node_auth, "verify_signature", counting)
    superlink.patch_node_auth_cache(size=2)
    superlink.patch_node_auth_cache(size=2)  # twice: still one cache
    key = ec.generate_private_key(ec.SECP384R1())
    good = {m: sign_message(key, m) for m in (b"t1", b"t2", b"t3")}
    verify = node_auth.verify_signature
    assert all(verify(key.public_key(), b"t1", good[b"t1"]) for _ in range(3))
    assert calls == [b"t1"]
    assert not verify(key.public_key(), b"t1", good[b"t2"]) and not verify(key.public_key(), b"t1", good[b"t2"])
    assert calls == [b"t1", b"t1", b"t1"]
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    assert not verify(other, b"t1", good[b"t1"])  # a remembered signature, but not this key's
    verify(key.public_key(), b"t2", good[b"t2"])
    verify(key.public_key(), b"t3", good[b"t3"])  # size 2: t1 is forgotten
    calls.clear()
    assert verify(key.public_key(), b"t1", good[b"t1"]) and calls == [b"t1"]


class _Inbox:
    """A pull handler over a list: answers what has been pushed so far (a list), counting its looks."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.looks = 0

    def pull(self) -> list[str]:
        self.looks += 1
        out, self.items = self.items, []
        return out

    def push(self, item: str) -> None:
        self.items.append(item)


def _empty(response: list) -> bool:
    return not response


def test_a_pull_that_finds_nothing_waits_for_the_next_push():
    bell, inbox = superlink.Doorbell(), _Inbox()
    pull = superlink.held(inbox.pull, _empty, bell, hold_s=5.0)
    push = superlink.ringing(inbox.push, bell)
    timer = threading.Timer(0.05, push, args=("m1",))
    timer.start()
    # Held for at most 5 s, it comes back with what the push delivered: it waited for the ring.
    assert pull() == ["m1"]
    assert inbox.looks == 2  # one before the wait, one after the ring
    push("m2")
    assert pull() == ["m2"] and inbox.looks == 3  # something there: answered at once


def test_a_held_pull_answers_nothing_after_the_hold(monkeypatch):
    now, waited = [0.0], []

    class Bell(superlink.Doorbell):
        def wait(self, seen: int, timeout: float) -> bool:  # nobody pushes: the hold runs out
            waited.append(timeout)
            now[0] += timeout
            return False

    monkeypatch.setattr(superlink, "time", SimpleNamespace(monotonic=lambda: now[0]))
    bell, inbox = Bell(), _Inbox()
    assert superlink.held(inbox.pull, _empty, bell, hold_s=0.5)() == []
    assert waited == [0.5] and inbox.looks == 1


def test_a_push_between_the_look_and_the_wait_is_not_missed():
    bell, inbox = superlink.Doorbell(), _Inbox()

    def look_then_someone_pushes() -> list[str]:
        out = inbox.pull()
        if inbox.looks == 1:
            superlink.ringing(inbox.push, bell)("late")
        return out

    pull = superlink.held(look_then_someone_pushes, _empty, bell, hold_s=30.0)
    assert pull() == ["late"] and inbox.looks == 2


def test_a_pull_is_answered_at_once_when_every_place_is_taken_and_a_failed_push_still_rings():
    bell, inbox = superlink.Doorbell(max_held=1), _Inbox()
    assert bell.places.acquire(blocking=False)
    assert superlink.held(inbox.pull, _empty, bell, hold_s=30.0)() == []
    bell.places.release()

    def failing_push(item: str) -> None:
        raise RuntimeError("state refused it")

    seen = bell.rings()
    with pytest.raises(RuntimeError, match="refused"):
        superlink.ringing(failing_push, bell)("x")
    assert bell.rings() == seen + 1


def test_held_pulls_patch_flowers_pull_and_push_handlers_once(monkeypatch):
    for handlers in (fleet_handlers, runtime_handlers):
        for name in ("pull_messages", "pull_object", "push_messages", "push_object"):
            monkeypatch.setattr(handlers, name, getattr(handlers, name))
    superlink.patch_held_pulls()
    superlink.patch_held_pulls()
    for handlers in (fleet_handlers, runtime_handlers):
        assert handlers.pull_messages.fedrl_patch == handlers.pull_object.fedrl_patch == "held"
        assert handlers.push_messages.fedrl_patch == handlers.push_object.fedrl_patch == "ring"
        assert getattr(handlers.pull_messages.__wrapped__, "fedrl_patch", None) is None  # wrapped once


def test_what_counts_as_nothing_found():
    assert superlink._no_messages(PullMessagesResponse())
    assert not superlink._no_messages(PullMessagesResponse(messages_list=[MessageProto()]))
    assert superlink._object_not_there_yet(PullObjectResponse(object_found=True, object_available=False))
    assert not superlink._object_not_there_yet(PullObjectResponse(object_found=True, object_available=True))
    assert not superlink._object_not_there_yet(PullObjectResponse(object_found=False, object_available=False))
