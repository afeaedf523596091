"""Federated PPO on Flower's Message API: the protocol, the client handlers, the schedulers and the recorder."""
