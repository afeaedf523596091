"""Actor-critic networks for discrete and continuous action spaces."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Normal

# Hidden widths per model size, chosen so that actor + critic together come close to
# the paper's section 3.4 counts (about 9k, 45k and 750k parameters on CartPole-sized
# inputs): one small MLP of 2x64 (CleanRL's default), 4 hidden layers and 6 hidden layers.
HIDDEN_SIZES: dict[str, tuple[int, ...]] = {
    "small": (64, 64),
    "medium": (84, 84, 84, 84),
    "large": (272,) * 6,
}


def _layer(n_in: int, n_out: int, std: float = float(np.sqrt(2))) -> nn.Linear:
    """A linear layer with orthogonal weights and zero bias, as in PPO's reference code."""
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, 0.0)
    return layer


def _mlp(n_in: int, hidden: tuple[int, ...], n_out: int, out_std: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [_layer(n_in, width), nn.Tanh()]
        n_in = width
    layers.append(_layer(n_in, n_out, out_std))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs.

    Discrete action spaces get a categorical head; Box action spaces a Gaussian with a
    state-independent log-std that starts at ``log_std_init`` (ignored for discrete
    actions). The module takes already-normalised observations; its state_dict holds
    only parameters, so it is exactly what clients send and receive.
    """

    def __init__(self, obs_dim: int, action_space: gym.spaces.Space, model_size: str = "small",
                 log_std_init: float = 0.0) -> None:
        super().__init__()
        hidden = HIDDEN_SIZES[model_size]
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if self.discrete:
            act_dim = int(action_space.n)
        else:
            act_dim = int(np.prod(action_space.shape))
        self.critic = _mlp(obs_dim, hidden, 1, out_std=1.0)
        self.actor = _mlp(obs_dim, hidden, act_dim, out_std=0.01)
        if not self.discrete:
            self.actor_logstd = nn.Parameter(torch.full((1, act_dim), float(log_std_init)))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """State values, shape ``(batch,)``."""
        return self.critic(obs).squeeze(-1)

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        """The policy's action distribution at ``obs``."""
        out = self.actor(obs)
        if self.discrete:
            return Categorical(logits=out, validate_args=False)
        return Normal(out, self.actor_logstd.expand_as(out).exp(), validate_args=False)

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probabilities, entropies and values of ``actions`` taken at ``obs``."""
        dist = self.distribution(obs)
        if self.discrete:
            return dist.log_prob(actions.long()), dist.entropy(), self.value(obs)
        return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1), self.value(obs)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample (or take the mode of) an action; returns action, log-probability and value."""
        dist = self.distribution(obs)
        if deterministic:
            action = dist.probs.argmax(-1) if self.discrete else dist.mean
        else:
            action = dist.sample()
        logprob = dist.log_prob(action) if self.discrete else dist.log_prob(action).sum(-1)
        return action, logprob, self.value(obs)


def build_model(obs_space: gym.spaces.Box, action_space: gym.spaces.Space, model_size: str,
                log_std_init: float = 0.0) -> ActorCritic:
    """The actor-critic for these spaces."""
    return ActorCritic(int(np.prod(obs_space.shape)), action_space, model_size, log_std_init)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
