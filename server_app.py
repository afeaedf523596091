"""fedrl ServerApp: federated PPO with the paper's gradient aggregators."""

from __future__ import annotations

import logging
import sys

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedrl import pulls, simpoll
from fedrl.config import ConfigError, FedRLConfig
from fedrl.runtime import set_torch_threads
from fedrl.server import FederatedPPO

# Must happen at import: the simulation engine starts its poll thread after importing us.
simpoll.install()
# On a deployment, replies are pulled from the SuperLink in this process.
pulls.install()

app = ServerApp()


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
    """Validate the run config, then train for ``num-server-rounds`` rounds."""
    log = _logger()
    try:
        cfg = FedRLConfig.from_run_config(context.run_config)
    except ConfigError as exc:
        log.error("%s", exc)
        raise
    simpoll.set_max_wait(cfg.sim_poll_max_ms / 1000)
    set_torch_threads()
    FederatedPPO(cfg, grid, context.run_id).run()
