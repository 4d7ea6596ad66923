"""The broker's memory of idempotency keys (docs/PROTOCOL.md §5.5).

A keyed line or private line is acknowledged once; a resend with the same key
gets the same ``ack`` again and is never published twice. The broker keeps
the acks of the newest ``limit`` keys, oldest first, rebuilt from the
history store at start so a restart does not forget them.

In cluster mode the engine de-duplicates lines across brokers
(docs/CLUSTER.md); this memory then serves private lines only.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from broker.history import HistoryStore
from protocol import Ack

__all__ = ["KEY_MEMORY", "KeyMemory"]

#: How many recent idempotency keys the broker remembers.
KEY_MEMORY: Final = 100_000


class KeyMemory:
    """Acks by idempotency key, the newest ``limit`` of them."""

    def __init__(self, limit: int = KEY_MEMORY) -> None:
        self.limit = limit
        #: key -> ack, oldest first. The broker's hot path reads and extends
        #: it inline (docs/PERFORMANCE.md); everything else goes through methods.
        self.acks: OrderedDict[str, Ack] = OrderedDict()

    @classmethod
    def of(cls, history: HistoryStore, limit: int = KEY_MEMORY) -> KeyMemory:
        """The keys of the newest stored lines (raises StorageError if the
        store cannot be read)."""
        memory = cls(limit)
        for key, line in history.recent_keys(limit):
            memory.acks[key] = Ack(key=key, id=line.id, room=line.room, seq=line.seq)
        return memory

    def get(self, key: str) -> Ack | None:
        """The ack a key was given, if it is remembered."""
        return self.acks.get(key)

    def remember(self, ack: Ack) -> Ack:
        """Remember an ack under its key (forgetting the oldest beyond the limit)."""
        self.acks[ack.key] = ack
        if len(self.acks) > self.limit:
            self.acks.popitem(last=False)
        return ack

    def forget(self, key: str, line_id: str) -> None:
        """Forget a key if it still names that line (it was not stored after
        all: the resend must be stored)."""
        ack = self.acks.get(key)
        if ack is not None and ack.id == line_id:
            del self.acks[key]
