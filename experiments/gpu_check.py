"""GPU check: a few rounds on the GPU against the same rounds on the CPU.

Runs the synchronous loop in-process (LocalGrid: the ServerApp loop and ClientApp code
without Flower's transport) with ``device = "cpu"`` and then ``device = "cuda"``, same
seed, and prints each round's mean return, loss and seconds side by side, and how far
the final parameters are apart. Then, unless ``--no-simulation``, one run in Flower's
simulation engine with ``device = "cuda"`` and ``client-resources-num-gpus = 0.5`` (two
ClientApps share the GPU), which must complete. Without a visible CUDA device it says so
and exits 2.

    python -m experiments.gpu_check [--rounds 5] [--env CartPole-v1] [--no-simulation]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time

import torch

from experiments.common import simulate
from fedrl.config import FedRLConfig
from fedrl.tools.local_grid import LocalGrid

CLIENTS = 2


def train(device: str, rounds: int, env_id: str) -> tuple[list[dict], dict[str, torch.Tensor], list[float]]:
    """``rounds`` rounds in-process on ``device``; rows, final parameters (on the CPU) and seconds per round."""
    from client_app import app
    from server_app import build_scheduler

    with tempfile.TemporaryDirectory() as tmp:
        rc = {"env-id": env_id, "device": device, "num-server-rounds": rounds, "eval-episodes": 0, "outdir": tmp}
        server = build_scheduler(FedRLConfig.from_run_config(rc), LocalGrid(app, CLIENTS, rc), run_id=0, out=False)
        rows, seconds = [], []
        for server_round in range(1, rounds + 1):
            start = time.perf_counter()
            rows.append(server.run_round(server_round))
            seconds.append(time.perf_counter() - start)
        params = {k: v.detach().cpu() for k, v in server.state.model.state_dict().items()}
    return rows, params, seconds


def main() -> int:
    """Print the comparison; 2 without CUDA, 1 if the simulation run failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--no-simulation", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device is visible to torch; nothing was run on a GPU")
        return 2
    logging.getLogger("fedrl").setLevel(logging.WARNING)
    print(f"{args.env}, {CLIENTS} clients in-process, pyproject defaults; GPU: {torch.cuda.get_device_name(0)}")
    cpu_rows, cpu_params, cpu_s = train("cpu", args.rounds, args.env)
    gpu_rows, gpu_params, gpu_s = train("cuda", args.rounds, args.env)
    print("round   return cpu   return gpu     loss cpu     loss gpu   s cpu   s gpu")
    for c, g, cs, gs in zip(cpu_rows, gpu_rows, cpu_s, gpu_s):
        print(f"{int(c['round']):5d} {c['episodic_return_mean']:12.2f} {g['episodic_return_mean']:12.2f} "
              f"{c['loss_mean']:12.5f} {g['loss_mean']:12.5f} {cs:7.2f} {gs:7.2f}")
    gap = max(float((cpu_params[k] - gpu_params[k]).abs().max()) for k in cpu_params)
    print(f"largest parameter difference after {args.rounds} rounds: {gap:.3g} (float32 kernels differ between "
          "devices, so the runs drift apart; they start from the same parameters)")
    if args.no_simulation:
        return 0
    config = {"env-id": args.env, "device": "cuda", "num-server-rounds": 3, "eval-episodes": 0}
    try:
        (rows,) = simulate([config], clients=CLIENTS, resources="client-resources-num-cpus=1 "
                           "client-resources-num-gpus=0.5")
    except RuntimeError as exc:
        print(f"simulation with client-resources-num-gpus=0.5: FAILED ({exc})")
        return 1
    print(f"simulation with client-resources-num-gpus=0.5, device cuda: completed {len(rows)} rounds, "
          f"last round {rows[-1]['wall_time_s'] - rows[-2]['wall_time_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
