"""Normalised momentum with implicit gradient transport (NIGT; Cutkosky & Mehta 2020), the outer loop
of Rennala and Malenia NIGT (Tyurin, Spiridonov & Rudenko, 2025).

    θ̃_t = θ_t + ((1 − η)/η)·(θ_t − θ_{t−1})       the point every gradient of step t is taken at
    d_t = (1 − η)·d_{t−1} + η·g_t                  d_0 = g_0
    θ_{t+1} = θ_t − α·d_t/‖d_t‖                    g is the gradient of a loss, so the step descends

The step length is α whatever the scale of g, so only the actor (the policy, with its
log-std) is moved this way: the critic's gradient would otherwise dominate ‖d‖. The
critic keeps its own Adam on the critic part of g, at θ (it is not extrapolated).
"""

from __future__ import annotations

import numpy as np
import torch

from fedrl.rl.model import ActorCritic


def is_actor(name: str) -> bool:
    """Whether a parameter belongs to the policy (NIGT moves it) rather than the critic."""
    return name.startswith("actor")


class NIGT:
    """The NIGT outer loop on ``model``'s actor parameters, and Adam on its critic."""

    def __init__(self, model: ActorCritic, lr: float, momentum: float, critic_lr: float, max_grad_norm: float) -> None:
        self.model = model
        self.lr = lr
        self.momentum = momentum
        self.max_grad_norm = max_grad_norm
        self.actor = {n: p for n, p in model.named_parameters() if is_actor(n)}
        self.critic = {n: p for n, p in model.named_parameters() if not is_actor(n)}
        self.previous = {n: p.detach().clone() for n, p in self.actor.items()}
        self.direction: dict[str, torch.Tensor] | None = None
        self.critic_optimizer = torch.optim.Adam(self.critic.values(), lr=critic_lr, eps=1e-5)
        self.steps = 0

    @torch.no_grad()
    def query_point(self) -> dict[str, np.ndarray]:
        """θ̃_t for the actor and θ_t for the critic, in ``state_dict`` order: what workers compute at."""
        scale = (1.0 - self.momentum) / self.momentum
        out = {}
        for name, value in self.model.state_dict().items():
            if name in self.actor:
                value = value + scale * (value - self.previous[name])
            out[name] = value.detach().cpu().numpy()
        return out

    @torch.no_grad()
    def step(self, grads: dict[str, np.ndarray]) -> tuple[float, float]:
        """One outer step with the round's gradient ``g``; returns ‖g‖ and ‖d‖ (actor parts, float64)."""
        g = {n: torch.as_tensor(grads[n], dtype=torch.float64) for n in self.actor}
        if self.direction is None:
            self.direction = {n: v.clone() for n, v in g.items()}
        else:
            self.direction = {n: (1.0 - self.momentum) * self.direction[n] + self.momentum * g[n] for n in g}
        g_norm = float(torch.sqrt(sum((v ** 2).sum() for v in g.values())))
        d_norm = float(torch.sqrt(sum((v ** 2).sum() for v in self.direction.values())))
        if d_norm > 0 and np.isfinite(d_norm):
            for name, param in self.actor.items():
                self.previous[name] = param.detach().clone()
                param.sub_((self.lr / d_norm) * self.direction[name].to(param.dtype))
        with torch.enable_grad():
            for name, param in self.critic.items():
                param.grad = torch.as_tensor(grads[name], dtype=param.dtype).clone()
            norm = torch.nn.utils.clip_grad_norm_(list(self.critic.values()), self.max_grad_norm)
            if torch.isfinite(norm):
                self.critic_optimizer.step()
            self.critic_optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        return g_norm, d_norm
