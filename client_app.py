"""fedrl ClientApp: one gymnasium environment and a PPO learner per SuperNode."""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedrl.federation.client import handle_actor, handle_gradient, handle_local, handle_pg, handle_rollout

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


@app.train("pg")
def pg(msg: Message, context: Context) -> Message:
    """A3C / NIGT job: play job-steps steps and return the policy gradient at the parameters sent."""
    return handle_pg(msg, context)


@app.train("actor")
def actor(msg: Message, context: Context) -> Message:
    """IMPALA job: play job-steps steps and return the trajectory with the behaviour log-probabilities."""
    return handle_actor(msg, context)
