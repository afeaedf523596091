"""Process-level settings shared by the server, the clients and the scripts."""

from __future__ import annotations

import os
import platform
from importlib import metadata

import torch


def set_torch_threads() -> None:
    """Use ``FEDRL_TORCH_THREADS`` threads (default 1).

    Several clients share a few cores and each forward pass is tiny, so one thread per
    process avoids oversubscription; a single-process run may ask for more.
    """
    threads = int(os.environ.get("FEDRL_TORCH_THREADS", "1"))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when available; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on."""
    out = {"python": platform.python_version()}
    for pkg in ("fedrl", "flwr", "torch", "gymnasium", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
