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
    for pkg in ("fedrl", "flwr", "torch", "gymnasium", "numpy", "mujoco", "box2d"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def machine(cpuinfo: str = "/proc/cpuinfo") -> dict[str, str | int]:
    """The CPU this process runs on and the instruction sets torch's kernels may use.

    Runs are bit-for-bit repeatable on one kind of CPU, not across kinds: torch and MKL
    pick kernels by instruction set, which changes float rounding, and a PPO run turns
    that into a different trajectory. Recording the CPU says which results should agree.
    """
    info: dict[str, str] = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():  # the first processor's block is enough
                    break
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:  # not Linux
        pass
    isa = sorted(flag for flag in info.get("flags", "").split() if flag.startswith(("avx", "amx", "fma")))
    return {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "cpu_id": " ".join(f"{k} {info[k]}" for k in ("vendor_id", "cpu family", "model", "stepping") if k in info),
        "cpu_isa": " ".join(isa),
        "cpu_count": os.cpu_count() or 0,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
