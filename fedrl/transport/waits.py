"""Poll when a message is due, not all the while it is being made.

On a deployment every poll is a full HTTP request (signed by a SuperNode, checked and
routed by the SuperLink), so a poll that finds nothing costs as much CPU as one that
moves a message, and on a loaded machine that CPU comes out of the work the poll is
waiting for. In a PPO round the waits repeat: a gradient reply takes about as long
each exchange, and so does the gap between a node's reply and the next instruction.
:class:`ExpectedWait` learns that duration, and the waiter sleeps most of it before
its first poll, then polls fast as before. A message that comes earlier than ever
seen is late by at most that first sleep, and the next wait learns from it.

The first wait of each kind is not learned from: it pays for the ClientApps' start-up
(importing torch, building envs), ~10 s against a 0.3 s rollout, and a sleep learned
from it cost the next rounds most of that again, halving each round.
"""

from __future__ import annotations

from collections import deque

FRACTION = 0.8
WINDOW = 16
WARMUP = 1


class ExpectedWait:
    """How long the next wait for a message will last at least, from the last ``window`` waits.

    :meth:`first_sleep` is ``fraction`` × the shortest of them (0 before the first), so
    one fast exchange lowers it at once and only a run of slow ones raises it. A wait
    that ended at the first poll after that sleep only says the message came within
    the sleep: it counts as half the sleep, so a guess that is too long halves each
    wait instead of feeding on itself. The first ``warmup`` waits observed (start-up,
    also after a resume restores the history) are not learned from.
    """

    def __init__(self, fraction: float = FRACTION, window: int = WINDOW, warmup: int = WARMUP) -> None:
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"fraction must be in [0, 1), got {fraction}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.fraction = fraction
        self.warmup = warmup
        self.waits: deque[float] = deque(maxlen=window)

    def first_sleep(self) -> float:
        """Seconds to sleep before the first poll of the next wait."""
        return self.fraction * min(self.waits) if self.waits else 0.0

    def observe(self, seconds: float, slept: float = 0.0, first_poll: bool = False) -> None:
        """A wait that found its message after ``seconds``, ``slept`` of them before the first poll.

        ``first_poll``: the first poll after the sleep found it.
        """
        if self.warmup > 0:
            self.warmup -= 1
            return
        self.waits.append(slept / 2 if first_poll and slept > 0 else max(0.0, seconds))
