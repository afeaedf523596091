"""Shorter retry waits for Flower's object pulls.

A Flower 1.42 message travels as a small header plus its objects (the arrays), and
the header can be seen before its objects have arrived: the ServerApp pushes the
header to the SuperLink first, and a SuperNode stores it before it has pulled the
objects. Whoever pulls in between gets "object unavailable" and retries after 1 s,
doubling to 10 s. A PPO round makes dozens of exchanges, so on a deployment those
retries alone cost seconds per exchange. :func:`install` makes them start at 1 ms
and double to 50 ms; the total patience stays Flower's own (``max_time``, 2 h),
because the retry count limit that would end it sooner is lifted. Applied through
:mod:`fedrl.transport.compat` (patch ``object-pulls``).
"""

from __future__ import annotations

INITIAL_BACKOFF_S = 0.001
BACKOFF_CAP_S = 0.05


def install() -> None:
    """Patch the pull defaults in this process."""
    from flwr.supercore.inflatable import inflatable_utils

    for fn in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        fn.__kwdefaults__.update(initial_backoff=INITIAL_BACKOFF_S, backoff_cap=BACKOFF_CAP_S,
                                 max_tries_per_object=None)
