"""The server's side of the learner: the global policy, its optimizer and the global statistics."""

from __future__ import annotations

import logging

import numpy as np
import torch

from fedrl.config import FedRLConfig
from fedrl.rl.envs import env_spaces
from fedrl.rl.model import ActorCritic, build_model, count_parameters
from fedrl.rl.normalizer import CLIP_OBS, RunningStats

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

    def merge_stats(self, obs_stats: RunningStats, return_stats: RunningStats) -> bool:
        """Pool one client's statistics into the global ones (each only if its normalisation is on).

        False, and nothing changes, when the pooled statistics would not be finite or plausible.
        """
        with np.errstate(over="ignore", invalid="ignore"):
            obs = self.obs_stats.merge(obs_stats) if self.cfg.normalize_obs else self.obs_stats
            ret = self.return_stats.merge(return_stats) if self.cfg.normalize_reward else self.return_stats
            if not (obs.is_plausible() and ret.is_plausible()):
                return False
        self.obs_stats, self.return_stats = obs, ret
        return True

    def apply_gradient(self, grads: dict[str, np.ndarray]) -> bool:
        """Set ``.grad``, clip the global norm and step the optimizer; False if the step was skipped."""
        for name, param in self.model.named_parameters():
            param.grad = torch.as_tensor(grads[name], device=self.device).clone()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        if not torch.isfinite(norm):
            # Finite float32 values whose norm overflows float32: clip in float64 instead.
            total = float(np.sqrt(sum(np.sum(np.square(grads[n].astype(np.float64)))
                                      for n, _ in self.model.named_parameters())))
            if not np.isfinite(total):
                log.warning("skipped an optimizer step: combined gradient norm is %s", total)
                self.optimizer.zero_grad(set_to_none=True)
                return False
            scale = min(1.0, self.cfg.max_grad_norm / (total + 1e-6))
            for name, param in self.model.named_parameters():
                param.grad = torch.as_tensor((grads[name].astype(np.float64) * scale).astype(np.float32),
                                             device=self.device)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    @torch.no_grad()
    def accepts_parameters(self, params: dict[str, np.ndarray]) -> bool:
        """Whether ``params`` give a usable policy: finite, and finite outputs whose squares are too.

        The probe inputs are the normalised observations' extremes (±10) and zero, so a
        parameter that is finite but huge (3e38) shows in the outputs it would give.
        """
        if not all(np.all(np.isfinite(v)) for v in params.values()):
            return False
        probe = build_model(*env_spaces(self.cfg.env_id), self.cfg.model_size, self.cfg.log_std_init)
        probe.load_state_dict({k: torch.as_tensor(v) for k, v in params.items()})
        obs = torch.stack([torch.zeros(self.obs_shape), torch.full(self.obs_shape, CLIP_OBS),
                           torch.full(self.obs_shape, -CLIP_OBS)])
        # The raw actor output: logits, or the Gaussian's mean (a Categorical's .mean is NaN by definition).
        outputs = [probe.value(obs), probe.actor(obs)]
        if not probe.discrete:
            outputs.append(probe.actor_logstd.exp())
        return all(bool(torch.isfinite(o.double() ** 2).all()) for o in outputs)

    def set_parameters(self, params: dict[str, np.ndarray]) -> bool:
        """Load averaged parameters (FedAvg/FedProx); False (and unchanged) if :meth:`accepts_parameters` refuses them."""
        if not self.accepts_parameters(params):
            log.warning("skipped a parameter update: the averaged parameters are not finite or give non-finite outputs")
            return False
        self.model.load_state_dict({k: torch.as_tensor(v, device=self.device) for k, v in params.items()})
        return True

    def state(self) -> dict:
        """Everything a resumed run needs of the server's learner (tensors and plain values only)."""
        return {"model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "obs_stats": self.obs_stats.to_tensors(), "return_stats": self.return_stats.to_tensors()}

    def load_state(self, state: dict) -> None:
        """Restore :meth:`state`."""
        self.model.load_state_dict({k: v.to(self.device) for k, v in state["model"].items()})
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs_stats = RunningStats.from_dict(state["obs_stats"])
        self.return_stats = RunningStats.from_dict(state["return_stats"])
