"""fedrl ServerApp: validate the run config, pick the method, run its scheduler (synchronous or asynchronous)."""

from __future__ import annotations

import logging
import sys

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedrl.config import ConfigError, FedRLConfig
from fedrl.federation.asynchronous import AsyncScheduler
from fedrl.federation.sync import SyncScheduler
from fedrl.runtime import set_torch_threads
from fedrl.transport import compat, simpoll
from strategies.registry import make_aggregator, make_rule

# At import: the simulation engine starts its poll thread after importing this module,
# and on a deployment the replies' objects are pulled in this process.
PATCHES = compat.apply(["sim-poll", "object-pulls"])

app = ServerApp()


def build_scheduler(cfg: FedRLConfig, grid: Grid, run_id: int | str, out: bool = True
                    ) -> SyncScheduler | AsyncScheduler:
    """The scheduler for ``cfg``: asynchronous for A3C, IMPALA and the NIGT family, else synchronous.

    Torch's threads are set first: the initial model's orthogonal init goes through a QR
    whose last bits depend on the thread count, and a resumed run must start from the same.
    """
    set_torch_threads()
    if cfg.is_async:
        return AsyncScheduler(cfg, grid, make_rule, run_id, out=out, extra={"patches": PATCHES})
    return SyncScheduler(cfg, grid, make_aggregator(cfg), run_id, out=out, extra={"patches": PATCHES})


def _logger() -> logging.Logger:
    log = logging.getLogger("fedrl")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(levelname)s fedrl: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Validate the run config, then train (``num-server-rounds`` rounds, or until ``time-budget``)."""
    log = _logger()
    log.info("fedrl: Flower patches: %s", compat.describe(PATCHES))
    try:
        cfg = FedRLConfig.from_run_config(context.run_config)
        cfg.check_outdir()
        if cfg.sim_poll_max_ms > 0:
            compat.require("sim-poll", "sim-poll-max-ms", cfg.sim_poll_max_ms, "0 (Flower's own 100 ms poll)")
    except ConfigError as exc:
        log.error("%s", exc)
        raise
    simpoll.set_max_wait(cfg.sim_poll_max_ms / 1000)
    try:
        build_scheduler(cfg, grid, context.run_id).run()
    except ConfigError as exc:  # a value that only the connected nodes show to be wrong (a list of times)
        log.error("%s", exc)
        raise
