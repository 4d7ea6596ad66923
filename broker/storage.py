"""Taking back the lines a failed commit could not store (docs/PROTOCOL.md §7, §8).

The loop commits a turn's lines before it sends anything (broker/server.py).
When the commit fails (disk full, an I/O error), none of those lines may be
published or acknowledged: each is refused with ``unavailable``, echoing its
key, so the client resends it later and nothing is lost, and nothing is
reported as refused that was in fact stored (the store tells which ones).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from broker.history import Unstored
from protocol import Ack, ChatMessage, Error, ErrorCode

__all__ = ["refuse_unstored"]

A = TypeVar("A")

UNAVAILABLE_MESSAGE = "the broker could not store your line (storage error); send it again later"


def refuse_unstored(
    refused: Unstored,
    actions: list[A],
    sender_of: Callable[[ChatMessage], bytes | None],
    publish: type,
    send: Callable[[bytes, Error], A],
) -> list[A]:
    """``actions`` without the broadcasts and acks of the ``refused`` lines,
    plus an ``unavailable`` error to each one's sender (``sender_of``; None
    when the sender is gone). ``publish`` is the broadcast action type and
    ``send`` makes a private reply action."""
    ids = {line.id for line, _ in refused}
    kept: list[A] = []
    for action in actions:
        message = action.message  # type: ignore[attr-defined]
        kind = type(message)
        ours = (kind is ChatMessage and type(action) is publish) or kind is Ack
        if ours and message.id in ids:
            continue
        kept.append(action)
    for line, key in refused:
        identity = sender_of(line)
        if identity is not None:
            error = Error(
                code=ErrorCode.UNAVAILABLE,
                message=UNAVAILABLE_MESSAGE,
                req="say",
                key=key,
                room=line.room,
            )
            kept.append(send(identity, error))
    return kept
