"""fedrl ClientApp: one gymnasium environment and a PPO learner per SuperNode."""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedrl.federation.client import handle_gradient, handle_local, handle_rollout

app = ClientApp()


@app.train("rollout")
def rollout(msg: Message, context: Context) -> Message:
    """Play this round's episodes with the global policy."""
    return handle_rollout(msg, context)


@app.train("gradient")
def gradient(msg: Message, context: Context) -> Message:
    """Return the PPO gradient of one minibatch at the server's parameters."""
    return handle_gradient(msg, context)


@app.train("local")
def local(msg: Message, context: Context) -> Message:
    """FedAvg/FedProx: train locally and return parameters."""
    return handle_local(msg, context)
