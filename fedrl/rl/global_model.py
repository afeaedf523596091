"""The server's side of the learner: the global policy, its optimizer and the global statistics."""

from __future__ import annotations

import logging

import numpy as np
import torch

from fedrl.config import FedRLConfig
from fedrl.rl.envs import env_spaces
from fedrl.rl.model import ActorCritic, build_model, count_parameters
from fedrl.rl.normalizer import RunningStats

log = logging.getLogger("fedrl")


class GlobalModel:
    """The global actor-critic and what the server does to it.

    The optimizer (Adam or SGD) lives for the whole run, so its moments carry over from
    one combined gradient to the next; the observation and return statistics are the
    merge of everything the clients have reported.
    """

    def __init__(self, cfg: FedRLConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        # The global initial parameters depend on the seed only.
        torch.manual_seed(cfg.seed)
        obs_space, act_space = env_spaces(cfg.env_id)
        self.obs_shape = (int(np.prod(obs_space.shape)),)
        self.model: ActorCritic = build_model(obs_space, act_space, cfg.model_size, cfg.log_std_init).to(device)
        self.layout = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        if cfg.server_optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.server_lr, eps=1e-5)
        else:
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.server_lr)
        self.obs_stats = RunningStats.empty(self.obs_shape)
        self.return_stats = RunningStats.empty((1,))
        self.num_parameters = count_parameters(self.model)

    def numpy_state(self) -> dict[str, np.ndarray]:
        """The parameters as numpy arrays, in ``state_dict`` order: what is sent to the clients."""
        return {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}

    def merge_stats(self, obs_stats: RunningStats, return_stats: RunningStats) -> None:
        """Pool one client's statistics into the global ones (each only if its normalisation is on)."""
        if self.cfg.normalize_obs:
            self.obs_stats = self.obs_stats.merge(obs_stats)
        if self.cfg.normalize_reward:
            self.return_stats = self.return_stats.merge(return_stats)

    def apply_gradient(self, grads: dict[str, np.ndarray]) -> bool:
        """Set ``.grad``, clip the global norm and step the optimizer; False if the step was skipped."""
        for name, param in self.model.named_parameters():
            param.grad = torch.as_tensor(grads[name], device=self.device).clone()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        if not torch.isfinite(norm):
            log.warning("skipped an optimizer step: combined gradient norm is %s", float(norm))
            self.optimizer.zero_grad(set_to_none=True)
            return False
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def set_parameters(self, params: dict[str, np.ndarray]) -> bool:
        """Load averaged parameters (FedAvg/FedProx); False (and unchanged) if any is non-finite."""
        if not all(np.all(np.isfinite(v)) for v in params.values()):
            log.warning("skipped a parameter update: averaged parameters are not finite")
            return False
        self.model.load_state_dict({k: torch.as_tensor(v, device=self.device) for k, v in params.items()})
        return True
