"""Time per sync gradient exchange on a loopback deployment: SuperLink + 2 SuperNodes.

Small model, CartPole-v1, the same workload on each path (``fedrl.deploy local-up
--supernode ... --superlink ...``), one fresh deployment per path:

- ``fedrl``: ``fedrl-superlink`` (idle middleware skipped) and ``fedrl-supernode``
  (adaptive polls, the ClientApp run inside the node), the default;
- ``fedrl-node``: ``fedrl-supernode`` with Flower's ``flower-superlink``;
- ``fedrl-polls``: the SuperNode's polls only, with Flower's per-message ClientApp
  processes and ``flower-superlink``;
- ``stock``: Flower's ``flower-superlink`` and ``flower-supernode``, the default path.

    python -m experiments.bench_deploy [--rounds 3] [--secure] [--paths fedrl fedrl-node fedrl-polls stock]
    python -m experiments.bench_deploy --paths fedrl --count-requests   # requests per exchange, by route
    python -m experiments.bench_deploy --paths fedrl fedrl-node --repeat 3   # paths interleaved, 3 runs each

Every path runs our ServerApp, whose own push/pull loop and object-pull waits
(:mod:`fedrl.pulls`) are part of the app. The stock path is slow (seconds per
exchange), as is ``fedrl-polls``, so they run ``--stock-exchanges`` exchanges in one
round; the others run ``--rounds`` rounds of 16 and skip the first (start-up). The
figure is the mean wall time of one exchange as the server sees it (send to last
reply), from rounds.csv. On a shared 2-core machine the figure of one path moves by up
to 1.5x between runs, so ``--repeat N`` runs the paths in turn N times (a fresh
deployment each) and the target is checked on the median.
"""

from __future__ import annotations

import argparse
import collections
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from experiments.common import ROOT, read_rounds
from fedrl.tools.deploy import CONNECTION, LocalDeployment
from fedrl.tools.launch import flwr_run, to_overrides

WORKLOAD = {"env-id": "CartPole-v1", "aggregator": "baseline-avg", "model-size": "small", "eval-episodes": 0, "min-steps": 256,
            "min-episodes": 1, "update-epochs": 4, "num-minibatches": 4}
TARGET_MS = 100.0
# name: (local-up --supernode, --superlink)
PATHS = {"fedrl": ("fedrl", "fedrl"), "fedrl-node": ("fedrl", "stock"), "fedrl-polls": ("fedrl-polls", "stock"),
         "stock": ("stock", "stock")}
# Seconds per exchange: these run a few exchanges in one round.
SLOW = ("fedrl-polls", "stock")


# A request line in the SuperLink's access log (routine requests are logged at DEBUG only).
REQUEST = re.compile(r'"(?:GET|POST) (/v1/[a-z/-]+)[^"]*" \d+')


def measure(path: str, config: dict, secure: bool,
            count_requests: bool = False) -> tuple[float, float, int, collections.Counter]:
    """(mean exchange ms, mean client compute ms, exchanges timed, SuperLink requests per route
    over the whole run, per gradient exchange) on a fresh deployment; requests only if ``count_requests``."""
    supernode, superlink = PATHS[path]
    with tempfile.TemporaryDirectory(prefix="fedrl-bench-") as tmp:
        outdir = Path(tmp) / "runs"
        dep = LocalDeployment(Path(tmp) / "dep", nodes=2, secure=secure, supernode=supernode, superlink=superlink)
        if count_requests:
            dep.env["FLWR_LOG_LEVEL"] = "DEBUG"  # every process it starts logs each request
        with dep:
            run_id, status, results = flwr_run(str(ROOT), [to_overrides({**config, "outdir": str(outdir)})], [],
                                               CONNECTION, dep.env, echo=False)
            log = (dep.logs / "superlink.log").read_text()
        if status != "finished:completed" or results is None:
            raise RuntimeError(f"{path}: run {run_id} ended {status}; logs were in {dep.logs}")
        rows = read_rounds(results)
    for r in rows:
        print(f"{path:12s} round {int(r['round'])}: {r['exchange_ms_mean']:7.1f} ms per exchange "
              f"(client compute {r['client_compute_ms_mean']:5.1f} ms; {int(r['exchanges'])} exchanges)"
              f"{'  (start-up, not timed)' if r['round'] == 1 and len(rows) > 1 else ''}", flush=True)
    timed = rows[1:] if len(rows) > 1 else rows
    exchanges = sum(int(r["exchanges"]) for r in timed)
    weights = [r["exchanges"] for r in timed]
    requests = collections.Counter(REQUEST.findall(log)) if count_requests else collections.Counter()
    all_exchanges = sum(int(r["exchanges"]) for r in rows)
    per_exchange = collections.Counter({k: v / all_exchanges for k, v in requests.items()})
    return (float(np.average([r["exchange_ms_mean"] for r in timed], weights=weights)),
            float(np.average([r["client_compute_ms_mean"] for r in timed], weights=weights)), exchanges, per_exchange)


def main() -> None:
    """Print the figure of every path, then the target check."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds for the fast paths (first one not timed)")
    parser.add_argument("--stock-exchanges", type=int, default=4,
                        help="exchanges timed on the slow paths (stock, fedrl-polls)")
    parser.add_argument("--secure", action="store_true", help="TLS + SuperNode authentication (default: insecure)")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS))
    parser.add_argument("--count-requests", action="store_true",
                        help="also count the SuperLink's requests per exchange (its debug log on: slower, so the "
                             "times of such a run are not the benchmark's)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per path, the paths taking turns (default 1)")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error(f"--rounds must be >= 2 (the first is not timed), got {args.rounds}")
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    paths = list(dict.fromkeys(args.paths))
    times: dict[str, list[float]] = {path: [] for path in paths}
    for _ in range(args.repeat):
        for path in paths:
            config = {**WORKLOAD, "num-server-rounds": args.rounds}
            if path in SLOW:
                config.update({"num-server-rounds": 1, "update-epochs": 1, "num-minibatches": args.stock_exchanges})
            start = time.time()
            ex, comp, n, requests = measure(path, config, args.secure, args.count_requests)
            times[path].append(ex)
            print(f"{path:12s} {ex:9.1f} ms per exchange  (client compute {comp:5.1f} ms; {n} exchanges; "
                  f"{time.time() - start:.0f} s with start-up)", flush=True)
            if requests:
                print(f"{'':12s} {sum(requests.values()):9.1f} SuperLink requests per exchange (whole run): " +
                      ", ".join(f"{route} {count:.1f}" for route, count in requests.most_common()), flush=True)
    print(f"2 SuperNodes on loopback, {'TLS + node auth' if args.secure else 'insecure'}, small model, CartPole-v1")
    median = {path: float(np.median(values)) for path, values in times.items()}
    if args.repeat > 1:
        for path, values in times.items():
            print(f"{path:12s} median {median[path]:.1f} ms over {len(values)} runs "
                  f"(min {min(values):.1f}, max {max(values):.1f})")
    if "fedrl" in median:
        ex = median["fedrl"]
        line = f"target: <= {TARGET_MS:.0f} ms per exchange -> {ex:.1f} ms, {'met' if ex <= TARGET_MS else 'missed'}"
        for other in ("fedrl-node", "stock"):
            if other in median:
                line += f"; {other}/fedrl {median[other] / ex:.2f}x"
        print(line)


if __name__ == "__main__":
    main()
