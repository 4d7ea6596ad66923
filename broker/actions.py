"""What the broker's core decides: actions its loop (or cluster shell) carries out.

Kept apart from :mod:`broker.core` so that every part of the core (rooms,
ledger, directory) can make them without importing the core itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol import Broadcast, PrivateMessage, Reply

__all__ = ["Action", "Forward", "Publish", "Send"]


# Not frozen: a frozen dataclass's __init__ goes through object.__setattr__
# and costs 0.2 µs more per action, two actions per line (docs/PERFORMANCE.md).
# Treat them as read-only all the same; unsafe_hash keeps them hashable.
@dataclass(slots=True, unsafe_hash=True)
class Send:
    """Send ``message`` privately to the client with this ROUTER identity."""

    identity: bytes
    message: Reply


@dataclass(slots=True, unsafe_hash=True)
class Publish:
    """Publish ``message`` on its room's PUB topic."""

    message: Broadcast


@dataclass(slots=True, unsafe_hash=True)
class Forward:
    """Cluster mode: hand the private ``line`` to the session ``token`` on
    ``broker`` (its inbox). The shell does it; if it cannot, the sender
    (``identity``) gets ``unavailable`` instead of its copy and its ack."""

    identity: bytes
    broker: str
    token: str
    line: PrivateMessage


Action = Send | Publish
