"""The one version gate and the registry of patches."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import flwr
import pytest

from fedrl.config import ConfigError
from fedrl.transport import compat

ROOT = Path(__file__).resolve().parents[3]


def dependencies() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def test_the_gate_is_the_flwr_pin():
    pin = next(d for d in dependencies() if d.startswith("flwr"))
    assert re.fullmatch(r"flwr\[simulation\]==" + re.escape(compat.SUPPORTED_FLOWER) + r"\.\*", pin), pin
    assert compat.unsupported_reason() is None  # the installed Flower is the pinned one
    assert compat.unsupported_reason(compat.SUPPORTED_FLOWER + ".7") is None
    assert "Flower 1.43.0 is installed" in compat.unsupported_reason("1.43.0")
    assert compat.unsupported_reason(compat.SUPPORTED_FLOWER + "1.0") is not None  # 1.421 is not 1.42


def test_every_package_a_patch_reaches_into_is_declared_with_its_checked_versions():
    import starlette

    declared = {re.split(r"[\[=<>~!]", d)[0]: d for d in dependencies()}
    assert "starlette" in declared and "<" in declared["starlette"]
    low, high = re.findall(r"[\d.]+", declared["starlette"].split(">=")[1])
    version = tuple(int(x) for x in starlette.__version__.split(".")[:2])
    assert tuple(int(x) for x in low.split(".")) <= version < tuple(int(x) for x in high.split("."))


def test_on_another_flower_every_patch_is_skipped_with_the_reason(monkeypatch):
    monkeypatch.setattr(compat, "_outcomes", {})
    monkeypatch.setattr(flwr, "__version__", "1.99.0")
    applied = []
    for name, patch in compat.PATCHES.items():
        monkeypatch.setitem(compat.PATCHES, name, compat.Patch(name, patch.process, patch.summary,
                                                                lambda **kw: applied.append(kw)))
    report = compat.apply(list(compat.PATCHES))
    assert applied == []
    assert set(report.values()) == {"skipped: Flower 1.99.0 is installed; the patches are written for "
                                    f"{compat.SUPPORTED_FLOWER}.x"}
    with pytest.raises(ConfigError, match=r"sim-poll-max-ms = 2.0; allowed: 0 .*'sim-poll' patch it needs was skipped"):
        compat.require("sim-poll", "sim-poll-max-ms", 2.0, "0 (Flower's own poll)")


def test_each_patch_is_applied_once_with_its_options(monkeypatch):
    monkeypatch.setattr(compat, "_outcomes", {})
    calls = []
    monkeypatch.setitem(compat.PATCHES, "sim-poll", compat.Patch("sim-poll", "p", "s", lambda **kw: calls.append(kw)))
    assert compat.apply(["sim-poll"], {"sim-poll": {"x": 1}}) == {"sim-poll": "applied"}
    assert compat.apply(["sim-poll"]) == {"sim-poll": "applied"}
    assert calls == [{"x": 1}]
    compat.require("sim-poll", "sim-poll-max-ms", 2.0, "0")
    assert compat.describe({"a": "applied", "b": "skipped: why"}) == "a applied; b skipped: why"
    with pytest.raises(KeyError, match="unknown patch 'nope'"):
        compat.apply(["nope"])


def test_a_run_that_asks_for_a_skipped_patchs_knob_stops_before_any_message(monkeypatch, tmp_path):
    from flwr.app import Context, RecordDict

    import server_app
    from client_app import app
    from fedrl.tools.local_grid import LocalGrid

    monkeypatch.setattr(compat, "_outcomes", {"sim-poll": "skipped: Flower 1.99.0 is installed"})
    grid = LocalGrid(app, 2, {})
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                  run_config={"outdir": str(tmp_path), "sim-poll-max-ms": 2.0})
    with pytest.raises(ConfigError, match="sim-poll-max-ms"):
        server_app.main(grid, ctx)
    assert grid.client_seconds == 0.0 and not any(tmp_path.iterdir())
