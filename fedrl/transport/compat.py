"""The one version gate for Flower's internals, and the registry of fedrl's patches to them.

Every patch reaches into code that Flower does not promise to keep, so each is applied
only on the Flower release it was written and tested against (:data:`SUPPORTED_FLOWER`,
kept equal to the ``flwr`` pin in pyproject.toml by a test). :func:`apply` applies the
named patches once per process and returns, for each, whether it was applied or why it
was skipped; the ServerApp writes that into ``config.json`` and the log, and a run that
asks for a knob whose patch was skipped stops with a :class:`~fedrl.config.ConfigError`
(:func:`require`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import flwr

from fedrl.config import ConfigError
from fedrl.transport import pulls, simpoll, superlink, supernode

log = logging.getLogger("fedrl")

SUPPORTED_FLOWER = "1.42"
"""The Flower release series the patches are written for: ``flwr[simulation]==1.42.*`` in pyproject.toml."""


@dataclass(frozen=True)
class Patch:
    """One change to Flower's internals: where it runs, what it does, and how to apply it."""

    name: str
    process: str
    summary: str
    apply: Callable[..., None]


PATCHES: dict[str, Patch] = {p.name: p for p in (
    Patch("sim-poll", "ServerApp (simulation engine)",
          "the engine's 100 ms message poll becomes adaptive, up to sim-poll-max-ms", simpoll.install),
    Patch("object-pulls", "ServerApp and SuperNode",
          "object pulls retry after 1 ms (doubling to 50 ms) instead of 1 s", pulls.install),
    Patch("superlink-middleware", "fedrl-superlink",
          "middleware with nothing to do is stepped over; message routes run unstreamed",
          superlink.patch_superlink_middleware),
    Patch("superlink-auth-cache", "fedrl-superlink",
          "each valid (node key, timestamp, signature) is verified once", superlink.patch_node_auth_cache),
    Patch("superlink-held-pulls", "fedrl-superlink",
          "a pull that finds nothing waits for the next push (up to 0.5 s)", superlink.patch_held_pulls),
    Patch("supernode-polls", "fedrl-supernode",
          "adaptive polls, and the ClientApp run inside the node", supernode.install_polls),
    Patch("supernode-signatures", "fedrl-supernode",
          "one signed timestamp per second of requests", supernode.patch_node_signatures),
)}

_outcomes: dict[str, str] = {}


def unsupported_reason(version: str | None = None) -> str | None:
    """Why the patches cannot be applied on Flower ``version`` (default: the installed one), or None."""
    version = flwr.__version__ if version is None else version
    if version == SUPPORTED_FLOWER or version.startswith(SUPPORTED_FLOWER + "."):
        return None
    return f"Flower {version} is installed; the patches are written for {SUPPORTED_FLOWER}.x"


def apply(names: list[str], options: dict[str, dict] | None = None) -> dict[str, str]:
    """Apply the named patches (each once per process); returns name -> "applied" or "skipped: <reason>".

    ``options`` holds keyword arguments for a patch's ``apply``, by patch name.
    """
    unknown = [n for n in names if n not in PATCHES]
    if unknown:
        raise KeyError(f"unknown patch {unknown[0]!r}; known: {', '.join(PATCHES)}")
    reason = unsupported_reason()
    for name in names:
        if name in _outcomes:
            continue
        if reason is not None:
            _outcomes[name] = f"skipped: {reason}"
            continue
        PATCHES[name].apply(**(options or {}).get(name, {}))
        _outcomes[name] = "applied"
    return {name: _outcomes[name] for name in names}


def outcomes() -> dict[str, str]:
    """Every patch applied or skipped in this process so far."""
    return dict(_outcomes)


def describe(report: dict[str, str]) -> str:
    """One log line's worth: ``sim-poll applied, object-pulls skipped: ...``."""
    return "; ".join(f"{name} {outcome}" for name, outcome in report.items())


def require(name: str, key: str, value: object, without: str) -> None:
    """Raise :class:`~fedrl.config.ConfigError` unless patch ``name``, which ``key = value`` needs, was applied.

    ``without`` says which value of ``key`` works without the patch.
    """
    outcome = _outcomes.get(name, "skipped: not applied in this process")
    if outcome != "applied":
        raise ConfigError(key, value, f"{without}, because the {name!r} patch it needs was {outcome}")
