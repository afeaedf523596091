"""fedrl-superlink and fedrl-supernode: their arguments, and what they say about the patches."""

from __future__ import annotations

import importlib
import sys

import pytest

from fedrl.transport import cli, compat


def test_arguments_pass_through_and_isolation_is_ours():
    args, flower = cli.parse_supernode(["--insecure", "--superlink", "h:9092", "--port", "9100", "--poll-max-ms", "3"])
    assert args.poll_max_ms == 3 and not args.stock_clientapp
    assert flower == ["--insecure", "--superlink", "h:9092", "--port", "9100"]
    with pytest.raises(SystemExit):
        cli.parse_supernode(["--isolation", "subprocess"])
    with pytest.raises(SystemExit):
        cli.parse_supernode(["--poll-max-ms", "0"])
    args, flower = cli.parse_supernode(["--stock-clientapp", "--isolation", "subprocess"])
    assert flower == ["--isolation", "subprocess"]
    assert cli.parse_supernode([])[0].poll_max_ms is None  # the default is not "asked for"


def test_an_explicit_poll_max_on_another_flower_stops_the_supernode(monkeypatch, capsys):
    started = []
    monkeypatch.setattr(compat, "_outcomes", {})
    monkeypatch.setattr(compat.flwr, "__version__", "9.0.0")
    module = importlib.import_module("flwr.supernode.cli.flower_supernode")
    monkeypatch.setattr(sys.modules[module.__name__], "flower_supernode", lambda: started.append(1))
    with pytest.raises(SystemExit, match="--poll-max-ms = 3.0; allowed: leave it out, because the 'supernode-polls'"):
        cli.supernode(["--insecure", "--poll-max-ms", "3"])
    assert "supernode-polls skipped: Flower 9.0.0 is installed" in capsys.readouterr().err
    assert started == []
    monkeypatch.setattr(compat, "_outcomes", {})
    cli.supernode(["--insecure"])  # without it, Flower's stock SuperNode runs
    assert started == [1]
