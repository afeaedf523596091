"""fedrl: federated PPO on Flower with loss- and reward-weighted gradient aggregation."""

__version__ = "0.1.0"
