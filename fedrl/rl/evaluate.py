"""Evaluate a saved policy: ``python -m fedrl.evaluate <model.pt> --episodes N [--video DIR]``.

Plays the deterministic policy (argmax / Gaussian mean) with the saved observation
statistics and prints the mean and std of the episodic return. ``--video DIR`` records
every episode with gymnasium's RecordVideo (needs ``pip install 'fedrl[video]'``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from fedrl.rl.checkpoint import load_policy
from fedrl.rl.model import ActorCritic
from fedrl.rl.normalizer import RunningStats


@torch.no_grad()
def evaluate(model: ActorCritic, stats: RunningStats, env_id: str, episodes: int, seed: int = 0,
             render_mode: str | None = None, video_dir: Path | None = None) -> list[float]:
    """Returns of ``episodes`` deterministic-policy episodes, seeded ``seed, seed+1, ...``.

    With ``video_dir``, every episode is recorded there (``<env>-episode-<k>.mp4``).
    """
    env = gym.make(env_id, render_mode="rgb_array" if video_dir is not None else render_mode)
    if video_dir is not None:
        try:
            env = gym.wrappers.RecordVideo(env, str(video_dir), episode_trigger=lambda _: True,
                                           name_prefix=env_id.replace(":", "_").replace("/", "_"))
        except gym.error.DependencyNotInstalled as exc:
            env.close()
            raise ValueError(f"--video needs moviepy: pip install 'fedrl[video]' ({exc})") from exc
    space = env.action_space
    returns = []
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            done, total = False, 0.0
            while not done:
                action, _, _ = model.act(torch.as_tensor(stats.normalize(obs[None])), deterministic=True)
                a = action.numpy()[0]
                if isinstance(space, gym.spaces.Box):
                    a = np.clip(a, space.low, space.high)
                obs, reward, terminated, truncated, _ = env.step(a)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return returns


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m fedrl.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a model.pt written by a fedrl run")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to play (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (default 0)")
    parser.add_argument("--render", action="store_true", help="show the episodes in a window")
    parser.add_argument("--video", type=Path, default=None, metavar="DIR",
                        help="record every episode as an mp4 in DIR (gymnasium's RecordVideo; needs moviepy)")
    args = parser.parse_args(argv)
    if args.render and args.video is not None:
        parser.error("--render and --video: choose one (a window, or mp4 files)")
    if args.video is not None and not os.environ.get("DISPLAY"):
        # MuJoCo renders through GLFW, which needs a display, unless told to use EGL (before it loads).
        os.environ.setdefault("MUJOCO_GL", "egl")
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    if not args.model.is_file():
        parser.error(f"no such file: {args.model}")
    try:
        model, stats, cfg = load_policy(args.model)
    except Exception as exc:  # a file that is not a fedrl checkpoint fails in many ways inside torch.load
        parser.error(f"cannot load {args.model} as a fedrl policy: {exc}")
    try:
        returns = evaluate(model, stats, cfg.env_id, args.episodes, args.seed, "human" if args.render else None,
                           args.video)
    except ValueError as exc:
        parser.error(str(exc))
    if args.video is not None:
        print(f"videos in {args.video}")
    print(f"{cfg.env_id}: mean return {np.mean(returns):.2f} ± {np.std(returns):.2f} over {len(returns)} "
          f"episodes (deterministic policy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
