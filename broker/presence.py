"""Topics and away state: the broker's decisions (docs/PROTOCOL.md "Room topics", "Away").

Kept out of :mod:`broker.core` so the core's hot paths stay as they are;
the core calls these with its own state. Like the core, nothing here does
I/O except through the topic store, whose writes are durable on return.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from broker.topics import RoomTopic, TopicsUnavailable
from protocol import (
    Away,
    AwayNotice,
    AwayReply,
    ErrorCode,
    ProtocolError,
    Topic,
    TopicNotice,
    TopicReply,
    validate_away,
    validate_room,
    validate_topic,
)

if TYPE_CHECKING:
    from broker.core import Action, BrokerCore, _Session

__all__ = ["away_notices", "away_reply_once", "topic_request"]

log = logging.getLogger("broker")


def topic_request(core: BrokerCore, session: _Session, request: Topic, now: float) -> list[Action]:
    """Answer a ``topic`` request: show the topic, or set it and tell the room."""
    from broker.core import Publish, Send

    name = validate_room(request.room)
    if request.text is None:
        current = core.topics.get(name)
        return [
            Send(
                session.identity,
                TopicReply(room=name, text=current.text, nick=current.nick, ts=current.ts),
            )
        ]
    if name not in session.rooms:
        raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"you are not in {name}")
    text = validate_topic(request.text)
    try:
        core.topics.set(name, RoomTopic(text=text, nick=session.nick, ts=now))
    except TopicsUnavailable as exc:
        log.error("could not store the topic of %s: %s", name, exc)
        raise ProtocolError(
            ErrorCode.UNAVAILABLE, "the topic could not be stored; try again later"
        ) from None
    log.info("%s set the topic of %s", session.nick, name)
    # The setter is a member, so the broadcast is its answer too.
    return [Publish(TopicNotice(room=name, text=text, nick=session.nick, ts=now))]


def away_notices(session: _Session, request: Away, now: float) -> list[Action]:
    """Mark the sender away (or back), answer it and tell each of its rooms."""
    from broker.core import Publish, Send

    text = validate_away(request.text)
    changed = text != session.away
    session.away = text
    session.away_told = None  # a new away message is news to everyone again
    actions: list[Action] = [Send(session.identity, AwayReply(nick=session.nick, text=text))]
    if changed:
        actions += [
            Publish(AwayNotice(room=name, nick=session.nick, text=text, ts=now))
            for name in sorted(session.rooms)
        ]
    return actions


def away_reply_once(sender: _Session, target: _Session) -> list[Action]:
    """After a private line to ``target``: its away message, the first time
    ``sender`` writes to it while it is away."""
    from broker.core import Send

    told = target.away_told
    if not target.away or (told is not None and sender.token in told):
        return []
    if told is None:
        told = target.away_told = set()
    told.add(sender.token)
    return [Send(sender.identity, AwayReply(nick=target.nick, text=target.away))]
