"""V-trace (Espeholt et al., 2018, IMPALA): off-policy value targets and policy-gradient advantages.

Arrays are ``(T, B)``: T steps of B trajectories (one per env of every actor's job). Each
step carries the value of the state it led to (``next_values``), so episodes may end
anywhere inside a trajectory:

    ρ_t = min(ρ̄, π(a_t|x_t)/μ(a_t|x_t)),   c_t = min(c̄, π/μ)            (λ = 1, as in DeepMind's vtrace.py)
    γ_t = γ·(1 − terminated_t)
    δ_t = ρ_t·(r_t + γ_t·V(x'_t) − V(x_t))                               x'_t: the state after step t
    v_t − V(x_t) = δ_t + γ·c_t·(1 − done_t)·(v_{t+1} − V(x_{t+1}))       backward, 0 after the last step
    A_t = min(ρ̄, π/μ)·(r_t + γ_t·v'_{t+1} − V(x_t)),   v'_{t+1} = v_{t+1} inside an episode, else V(x'_t)

On-policy (π = μ, no clipping) v_t is the bootstrapped n-step return to the end of the
trajectory or of the episode. The core paper's Eq. 4 drops λ and misindexes c; this
follows the IMPALA paper and its published code.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class VTrace(NamedTuple):
    """V-trace value targets ``vs``, policy-gradient advantages and the fraction of clipped ρ."""

    vs: torch.Tensor
    pg_advantages: torch.Tensor
    rho_clipfrac: float


@torch.no_grad()
def vtrace(behaviour_logprobs: torch.Tensor, target_logprobs: torch.Tensor, values: torch.Tensor,
           next_values: torch.Tensor, rewards: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor,
           gamma: float, rho_bar: float = 1.0, c_bar: float = 1.0) -> VTrace:
    """The V-trace targets of the module docstring; every input is ``(T, B)``."""
    ratio = (target_logprobs - behaviour_logprobs).exp()
    rho = ratio.clamp(max=rho_bar)
    c = ratio.clamp(max=c_bar)
    discount = gamma * (1.0 - terminated)
    cont = 1.0 - torch.maximum(terminated, truncated)
    delta = rho * (rewards + discount * next_values - values)
    steps = rewards.shape[0]
    acc = torch.zeros_like(values[0])
    corrections = torch.zeros_like(values)
    for t in reversed(range(steps)):
        acc = delta[t] + gamma * c[t] * cont[t] * acc
        corrections[t] = acc
    vs = values + corrections
    # v'_{t+1}: the next target inside an episode and trajectory, else the value of the state reached.
    following = torch.cat([vs[1:], next_values[-1:]], dim=0)
    following = torch.where(cont > 0, following, next_values)
    following[-1] = next_values[-1]
    pg_adv = rho * (rewards + discount * following - values)
    return VTrace(vs, pg_adv, float((ratio > rho_bar).float().mean()))
