"""The broker's memory of idempotency keys (broker/idempotency.py)."""

from __future__ import annotations

from broker.history import MemoryHistory
from broker.idempotency import KeyMemory
from protocol import Ack


def test_the_newest_keys_are_kept_and_a_key_is_forgotten_only_for_its_own_line() -> None:
    memory = KeyMemory(limit=2)
    memory.remember(Ack(key="a", id="1"))
    memory.remember(Ack(key="b", id="2"))
    memory.remember(Ack(key="c", id="3"))
    assert memory.get("a") is None and memory.get("c") == Ack(key="c", id="3")
    memory.forget("b", "other line")  # a later line reused the key: keep it
    assert memory.get("b") is not None
    memory.forget("b", "2")
    assert memory.get("b") is None


def test_a_store_without_keys_gives_an_empty_memory() -> None:
    assert not KeyMemory.of(MemoryHistory()).acks
