"""fedrl-supernode: adaptive polls, arguments, and the Flower patches it relies on."""

from __future__ import annotations

import base64
from types import SimpleNamespace

import pytest

from fedrl.transport import pulls, supernode
from fedrl.transport.supernode import MIN_WAIT_S, Backoff


def test_backoff_doubles_to_its_cap_and_resets_on_activity(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(supernode.time, "monotonic", lambda: now[0])
    b = Backoff(0.004, tiers=((1.0, 0.1), (60.0, 3.0)))
    waits = [b.next_wait() for _ in range(6)]
    assert waits == pytest.approx([MIN_WAIT_S, 0.001, 0.002, 0.004, 0.004, 0.004])
    now[0] += 2.0  # idle past the first tier: the wait may grow to 100 ms
    assert max(b.next_wait() for _ in range(20)) == pytest.approx(0.1)
    now[0] += 60.0  # a minute idle: Flower's own 3 s
    assert max(b.next_wait() for _ in range(20)) == pytest.approx(3.0)
    b.activity()
    assert b.next_wait() == pytest.approx(MIN_WAIT_S)


def test_default_backoff_slows_down_soon_after_a_node_runs_out_of_work(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(supernode.time, "monotonic", lambda: now[0])
    b = Backoff(0.005)
    assert max(b.next_wait() for _ in range(20)) == pytest.approx(0.005)
    now[0] += 0.5  # e.g. waiting for a slower node's rollout
    assert max(b.next_wait() for _ in range(20)) == pytest.approx(0.02)


def test_backoff_refuses_a_non_positive_cap():
    with pytest.raises(ValueError, match="poll max must be > 0"):
        Backoff(0)


def test_clock_maps_only_flowers_two_poll_sleeps(monkeypatch):
    slept = []
    monkeypatch.setattr(supernode.time, "sleep", slept.append)
    clock = supernode._Clock(Backoff(0.004), Backoff(0.002, tiers=()))
    clock.sleep(3)
    clock.sleep(0.5)
    clock.sleep(1.25)
    assert slept == pytest.approx([MIN_WAIT_S, MIN_WAIT_S, 1.25])
    assert clock.monotonic is supernode.time.monotonic


def test_forget_modules_under_drops_only_that_directory(tmp_path, monkeypatch):
    import sys

    (tmp_path / "fedrl_probe_mod.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fedrl_probe_mod  # noqa: F401

    supernode._forget_modules_under(tmp_path)
    assert "fedrl_probe_mod" not in sys.modules
    assert str(tmp_path) not in sys.path
    assert "pytest" in sys.modules


class Stop(Exception):
    """Ends Flower's SuperNode loop, which otherwise runs for ever."""


def drive_flowers_node_loop(monkeypatch, patched: bool) -> list[float]:
    """Flower's own ``start_client_internal`` loop for 8 pulls, on fake connections and a fake clock.

    The instruction arrives at the 4th pull. Returns every sleep the loop asked for.
    """
    import contextlib

    from flwr.supernode import start_client_internal as loop

    slept: list[float] = []
    clock = SimpleNamespace(sleep=slept.append, monotonic=lambda: float(len(slept)))
    pulls_seen = []

    def pull(**kwargs):
        pulls_seen.append(1)
        if len(pulls_seen) > 8:
            raise Stop
        return 7 if len(pulls_seen) == 4 else None

    @contextlib.contextmanager
    def connection(**kwargs):
        yield (5, *(None for _ in range(7)))

    monkeypatch.setattr(loop, "_pull_and_store_message", pull)
    monkeypatch.setattr(loop, "_push_messages", lambda **kwargs: None)
    monkeypatch.setattr(loop, "_init_connection", connection)
    monkeypatch.setattr(loop, "register_signal_handlers", lambda **kwargs: None)
    monkeypatch.setattr(loop, "time", clock)
    monkeypatch.setattr(supernode, "time", clock)
    if patched:
        supernode.install_polls(0.005)
    node_state = SimpleNamespace(set_node_id=lambda node_id: None)
    factory = SimpleNamespace(objectstore_factory=SimpleNamespace(store=lambda: None), state=lambda: node_state)
    with pytest.raises(Stop):
        loop.start_client_internal(state_factory=factory, server_address="127.0.0.1:1", node_config={},
                                   insecure=True, isolation="process")
    return slept


def test_patches_apply_to_this_flower(monkeypatch):
    # Flower's loop sleeps 3 s after every pull that found nothing.
    assert drive_flowers_node_loop(monkeypatch, patched=False) == [3, 3, 3, 3, 3, 3, 3]
    slept = drive_flowers_node_loop(monkeypatch, patched=True)
    # Patched: 0.5 ms doubling while idle; after the reply no learned gap yet (0 s), then 0.5 ms again.
    assert slept == [0.0005, 0.001, 0.002, 0.0, 0.0005, 0.001, 0.002, 0.004]


def test_object_pulls_retry_after_a_millisecond_in_flowers_pull_loop(monkeypatch):
    import threading

    from flwr.supercore.inflatable import inflatable_utils

    waits: list[float] = []

    class RecordingEvent(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout)
            return self.is_set()

    monkeypatch.setattr(inflatable_utils, "threading", SimpleNamespace(Lock=threading.Lock, Event=RecordingEvent))
    monkeypatch.setattr(inflatable_utils.random, "uniform", lambda a, b: 0.0)  # no jitter
    from flwr.supercore import constant

    # Flower's own defaults, even if importing the ServerApp elsewhere in this process patched them.
    stock = {"max_tries_per_object": constant.PULL_MAX_TRIES_PER_OBJECT,
             "initial_backoff": constant.PULL_INITIAL_BACKOFF, "backoff_cap": constant.PULL_BACKOFF_CAP}
    for fn in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        monkeypatch.setattr(fn, "__kwdefaults__", {**fn.__kwdefaults__, **stock})
    tries = []

    def pull(object_id: str) -> bytes:
        tries.append(object_id)
        if len(tries) <= 600:  # more than Flower's 500 tries per object
            raise inflatable_utils.ObjectUnavailableError(object_id)
        return b"content"

    with pytest.raises(inflatable_utils.ObjectPullError):
        inflatable_utils.pull_objects(["a"], pull)
    assert waits[:3] == [1, 2, 4]  # Flower: 1 s, doubling
    waits.clear()
    tries.clear()
    pulls.install()
    assert inflatable_utils.pull_objects(["a"], pull) == {"a": b"content"}
    assert waits[:7] == [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.05] and max(waits) == 0.05
    assert len(tries) == 601


def test_node_sleeps_most_of_the_usual_gap_after_each_reply(monkeypatch):
    from flwr.supernode import start_client_internal as loop

    now, slept, pulls_at = [0.0], [], []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(supernode, "time", SimpleNamespace(monotonic=lambda: now[0], sleep=sleep))
    monkeypatch.setattr(loop, "time", loop.time)
    arrival = [0.0]

    def pull(**kwargs):  # Flower's pull: a run id once the next instruction is there
        pulls_at.append(now[0])
        found = now[0] >= arrival[0]
        now[0] += 0.01
        return 7 if found else None

    monkeypatch.setattr(loop, "_pull_and_store_message", pull)
    monkeypatch.setattr(loop, "_push_messages", lambda **kwargs: None)
    supernode.install_polls(0.005)

    def one_exchange() -> int:
        """Reply, then poll as Flower's loop does until the next instruction (0.1 s later)."""
        loop._push_messages(state=None)
        arrival[0] = now[0] - (slept[-1] if slept else 0.0) + 0.1
        start = len(pulls_at)
        while loop._pull_and_store_message(state=None) is None:
            loop.time.sleep(3)
        return len(pulls_at) - start

    one_exchange()  # start-up: not learned from
    first = one_exchange()
    nap_before = len(slept)
    second = one_exchange()
    # The nap after the second reply is 0.8 x the first gap (0.1 s, seen to within a poll).
    assert 0.08 <= slept[nap_before] <= 0.8 * 0.115
    assert second <= 3 < first


def test_node_signs_one_timestamp_per_reuse_window(monkeypatch):
    from cryptography.hazmat.primitives.asymmetric import ec
    from flwr.supercore.primitives.asymmetric import verify_signature
    from flwr.supernode import node_auth_http_interceptor as auth

    monkeypatch.setattr(auth, "now", auth.now)
    monkeypatch.setattr(auth, "sign_message", auth.sign_message)
    now = [50.0]
    monkeypatch.setattr(supernode.time, "monotonic", lambda: now[0])
    signed = []
    real_sign = auth.sign_message
    monkeypatch.setattr(auth, "sign_message", lambda key, msg: signed.append(msg) or real_sign(key, msg))
    supernode.patch_node_signatures(reuse_s=1.0)

    key = ec.generate_private_key(ec.SECP384R1())
    interceptor = auth.NodeAuthHttpInterceptor(key, key.public_key())

    def headers() -> tuple[str, str]:
        sent = {}
        request = SimpleNamespace(headers={})
        interceptor.intercept(SimpleNamespace(request=request), lambda ctx: sent.update(ctx.request.headers))
        return sent[auth.TIMESTAMP_HEADER], sent[auth.FLEET_HTTP_SIGNATURE_HEADER]

    first = [headers() for _ in range(3)]
    now[0] += 0.5
    first.append(headers())
    assert len(set(first)) == 1 and len(signed) == 1
    now[0] += 0.6  # past the window: a fresh timestamp and signature
    second = headers()
    assert second[0] != first[0][0] and len(signed) == 2
    assert verify_signature(key.public_key(), second[0].encode(), base64.b64decode(second[1]))
