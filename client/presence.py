"""Room topics and who is away, as the client knows them.

See docs/PROTOCOL.md "Room topics" and "Away".

Sans-I/O like the session that owns it: the session hands in the replies
and broadcasts about topics and away state, and gets events back. Our own
``topic`` and ``away`` requests are answered here too (through the session's
request tracker): asking for a topic is answered by the reply ``topic``,
setting it by our own broadcast, and our away state by the reply ``away``.
"""

from __future__ import annotations

from client import events as ev
from client.outgoing import Outgoing
from client.requests import Purpose
from protocol import Away, AwayNotice, AwayReply, Joined, TopicNotice, TopicReply, nick_key

__all__ = ["Presence"]


class Presence:
    """Topics of our rooms and away messages of the people in them."""

    def __init__(self, sending: Outgoing) -> None:
        self.sending = sending
        #: room -> topic ("" or absent: none).
        self.topics: dict[str, str] = {}
        #: nickname -> away message, for those away (ourselves included).
        self.away: dict[str, str] = {}
        #: Our own away message as the broker last confirmed it ("" : here).
        self.mine = ""
        self._restoring = False

    def restore(self, now: float) -> None:
        """After a reconnect: set our away message again, unless the user's own
        ``/away`` or ``/back`` is being resent anyway.

        A restarted broker has forgotten it (away state lives in the session);
        its confirmation is not shown again as news.
        """
        if self.sending.requests.waiting("away"):
            return
        self._restoring = bool(self.mine)
        if self.mine:
            self.sending.track(Away(text=self.mine), now, Purpose.RESTORE)

    def joined(self, reply: Joined) -> None:
        """Take the topic and away states a ``joined`` reply carries."""
        self.topics[reply.room] = reply.topic
        for nick in reply.members:
            if nick in reply.away:
                self.away[nick] = reply.away[nick]
            else:
                self.away.pop(nick, None)

    def who(self, members: list[str], away: dict[str, str]) -> None:
        """Take the away states of a ``who`` reply."""
        for nick in members:
            if nick in away:
                self.away[nick] = away[nick]
            else:
                self.away.pop(nick, None)

    def parted(self, room: str) -> None:
        """We left ``room``: its topic is no longer ours to show."""
        self.topics.pop(room, None)

    def renamed(self, old: str, new: str) -> None:
        """``old`` is now ``new``: the away message follows the person."""
        if old in self.away:
            self.away[new] = self.away.pop(old)

    def on_topic_reply(self, reply: TopicReply) -> list[ev.Event]:
        """The answer to our ``topic`` question."""
        if reply.room in self.topics:
            self.topics[reply.room] = reply.text
        event = ev.Topic(room=reply.room, text=reply.text, nick=reply.nick, ts=reply.ts)
        requests = self.sending.requests
        requests.complete(requests.answered("topic", reply.room, setting=False), event)
        return [event]

    def on_away_reply(self, reply: AwayReply, me: str) -> list[ev.Event]:
        """Our own away state confirmed, or someone's away message after our private line."""
        own = nick_key(reply.nick) == nick_key(me)
        self._set(reply.nick, reply.text)
        if not own:  # someone we wrote to is away: no answer of ours
            return [ev.Away(nick=reply.nick, text=reply.text, auto=True)]
        self.mine = reply.text
        event = ev.Away(nick=reply.nick, text=reply.text)
        requests = self.sending.requests
        requests.complete(requests.answered("away", None), event)
        if self._restoring:
            self._restoring = False
            return []
        return [event]

    def on_notice(self, notice: TopicNotice | AwayNotice, me: str) -> list[ev.Event]:
        """A topic change in a room, or a member going away or coming back.

        An away notice comes once per room we share with that person; only
        the first (the one that changes what we know) becomes an event, and
        our own is left out (the ``away`` reply told us already).
        """
        if isinstance(notice, TopicNotice):
            self.topics[notice.room] = notice.text
            event = ev.Topic(
                room=notice.room, text=notice.text, nick=notice.nick, ts=notice.ts, changed=True
            )
            if nick_key(notice.nick) == nick_key(me):
                # Setting a topic has no reply: our own broadcast answers it.
                requests = self.sending.requests
                pending = requests.answered("topic", notice.room, setting=True)
                requests.complete(pending, event)
            return [event]
        if self.away.get(notice.nick, "") == notice.text:
            return []
        self._set(notice.nick, notice.text)
        if nick_key(notice.nick) == nick_key(me):
            return []
        return [ev.Away(nick=notice.nick, text=notice.text)]

    def _set(self, nick: str, text: str) -> None:
        if text:
            self.away[nick] = text
        else:
            self.away.pop(nick, None)
