"""The learner: envs, networks, PPO, observation statistics, checkpoints. It never imports Flower."""
