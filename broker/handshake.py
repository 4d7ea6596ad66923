"""The sync handshake: one part of the broker's core (docs/PROTOCOL.md §5.1).

A client's ``hello`` or ``join`` waits until its SUB socket subscribes to
``sync/<session>/<n>/``: because a SUB sends its subscriptions in order,
seeing that one proves the room topics subscribed before it are live, so no
broadcast after ``joined`` is lost (the slow-joiner problem). This module
reads those subscriptions, remembers the ones that overtake their request,
expires the ones that never come, and merges the join notices of a turn.
Pure functions over the session's ``pending`` and ``early_syncs``; the time
is a parameter.
"""

from __future__ import annotations

import logging
from typing import Final

from broker.actions import Action, Publish, Send
from broker.sessions import Session
from protocol import SYNC_PREFIX, Error, ErrorCode, JoinNotice, JoinsNotice

__all__ = [
    "EARLY_SYNC_LIMIT",
    "JOINS_PER_NOTICE",
    "coalesce_joins",
    "expire_syncs",
    "overtaken",
    "sync_of",
]

log = logging.getLogger("broker")

#: Sync topics seen before their request, per session, before we forget them.
EARLY_SYNC_LIMIT: Final = 64
#: Most nicknames one ``joins`` notice lists (a 32-character nickname can take
#: 130 bytes of JSON, so 100 of them stay far below any frame limit).
JOINS_PER_NOTICE: Final = 100

_SUBSCRIBED_SYNC: Final = b"\x01" + SYNC_PREFIX


def sync_of(notice: bytes) -> tuple[str, int] | None:
    """(session token, sync number) of an XPUB notice subscribing to a sync
    topic; None for any other notice."""
    if not notice.startswith(_SUBSCRIBED_SYNC):
        return None
    parts = notice[len(_SUBSCRIBED_SYNC) :].split(b"/")
    if len(parts) != 3 or parts[2] != b"" or not parts[1].isdigit():
        return None
    return parts[0].decode("ascii", "replace"), int(parts[1])


def overtaken(session: Session, number: int) -> None:
    """The subscription to sync ``number`` overtook its join request:
    remember it briefly (at most EARLY_SYNC_LIMIT per session)."""
    early = session.early_syncs
    if early is None:
        early = session.early_syncs = set()
    elif len(early) >= EARLY_SYNC_LIMIT:
        early.clear()
    early.add(number)


def expire_syncs(session: Session, now: float, timeout: float, pub: str) -> list[Action]:
    """Errors for ``session``'s syncs older than ``timeout`` (forgotten). A
    session still syncing its hello has only the one; it is then abandoned
    (its ``pending`` left empty: the caller removes it)."""
    actions: list[Action] = []
    for number, (rooms, since) in list(session.pending.items()):
        if now - since <= timeout:
            continue
        del session.pending[number]
        if not session.active:
            log.info("%s never subscribed; join abandoned", session.nick)
            message = f"your SUB socket never subscribed to the sync topic on {pub}; join again"
            error = Error(code=ErrorCode.SYNC_TIMEOUT, message=message, req="hello")
            session.pending.clear()
            return [Send(session.identity, error)]
        error = Error(
            code=ErrorCode.SYNC_TIMEOUT,
            message="your SUB socket never subscribed to the sync topic",
            req="join",
            room=rooms[0],
        )
        actions.append(Send(session.identity, error))
    return actions


def coalesce_joins(actions: list[Action], now: float) -> list[Action]:
    """``actions`` with the join notices of each room merged into ``joins``
    notices, ahead of everything else (a turn of subscriptions publishes
    nothing but join notices, so no broadcast is reordered)."""
    joins: dict[str, list[str]] = {}
    others: list[Action] = []
    for action in actions:
        if type(action) is Publish and type(action.message) is JoinNotice:
            joins.setdefault(action.message.room, []).append(action.message.nick)
        else:
            others.append(action)
    if all(len(nicks) < 2 for nicks in joins.values()):
        return actions
    merged: list[Action] = []
    for room, nicks in joins.items():
        for start in range(0, len(nicks), JOINS_PER_NOTICE):
            chunk = nicks[start : start + JOINS_PER_NOTICE]
            if len(chunk) == 1:
                merged.append(Publish(JoinNotice(room=room, nick=chunk[0], ts=now)))
            else:
                merged.append(Publish(JoinsNotice(room=room, nicks=chunk, ts=now)))
    return merged + others
