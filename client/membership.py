"""Who is in each of our rooms, from ``joined``, ``who`` and the notices
(docs/PROTOCOL.md §5): announces each newcomer once, even when a restarted
broker replays the joins of everyone coming back.

Back in a room after a reconnect, the ``joined`` members are compared with
those we knew: who came or went while we were away is told as ``meanwhile``
joins and leaves. A restarted broker only knows those already back, so there
someone missing is told as gone only once they had time to come back too.
"""

from __future__ import annotations

from collections import OrderedDict

from client import events as ev
from protocol import Broadcast, JoinNotice, JoinsNotice, LeaveNotice, NickNotice, nick_key

__all__ = ["Membership"]

#: Nickname-change notices remembered, to show one per change (not per room).
_SEEN_NOTICES = 256


class Membership:
    """Members per room; turns membership notices into events."""

    def __init__(self) -> None:
        #: room -> nicknames, in joining order.
        self.members: dict[str, list[str]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        #: room -> nick -> when they count as gone: missing at our rejoin of a
        #: restarted broker, perhaps only not back yet.
        self._missing: dict[str, dict[str, float]] = {}

    def joined(
        self,
        room: str,
        members: list[str],
        me: str,
        *,
        again: bool,
        grace: float | None,
        now: float,
    ) -> list[ev.Event]:
        """Our ``joined``; ``again``: back in a room after a reconnect, where the
        difference with whom we knew is news. ``grace``: the broker restarted,
        so those missing may still come back within that many seconds (None:
        the broker's list is whole)."""
        known = self.members.get(room, [])
        self.members[room] = list(members)
        self._missing.pop(room, None)
        if not again:
            return []
        mine = nick_key(me)
        out: list[ev.Event] = [
            ev.Join(room=room, nick=m, ts=now, meanwhile=True)
            for m in members
            if m not in known and nick_key(m) != mine
        ]
        gone = [m for m in known if m not in members and nick_key(m) != mine]
        if grace is None:
            out += [_gone(room, m, now) for m in gone]
        elif gone:
            self.members[room] += gone  # their rejoin is not news either
            self._missing[room] = dict.fromkeys(gone, now + grace)
        return out

    def expired(self, now: float) -> list[ev.Event]:
        """Those missing from a restarted broker who did not come back in time."""
        out: list[ev.Event] = []
        for room, missing in list(self._missing.items()):
            for nick, until in list(missing.items()):
                if now >= until:
                    del missing[nick]
                    if nick in self.members.get(room, ()):
                        self.members[room].remove(nick)
                    out.append(_gone(room, nick, now))
            if not missing:
                del self._missing[room]
        return out

    def who(self, room: str, members: list[str]) -> None:
        """A ``who`` answer for a room we are in."""
        self.members[room] = list(members)

    def left(self, room: str) -> None:
        """We are no longer in ``room``."""
        self.members.pop(room, None)
        self._missing.pop(room, None)

    def notice(self, message: Broadcast, me: str) -> list[ev.Event]:
        """A join, joins, leave or nick notice; ``me`` is our nickname."""
        mine = nick_key(me)
        room = message.room
        if isinstance(message, JoinNotice | JoinsNotice):
            nicks = [message.nick] if isinstance(message, JoinNotice) else message.nicks
            out: list[ev.Event] = []
            for nick in nicks:
                self._missing.get(room, {}).pop(nick, None)  # back in time
                if nick_key(nick) == mine or nick in self.members.get(room, ()):
                    continue  # us, or someone rejoining a restarted broker: not news
                self.members.setdefault(room, []).append(nick)
                out.append(ev.Join(room=room, nick=nick, ts=message.ts))
            return out
        if isinstance(message, LeaveNotice):
            if nick_key(message.nick) == mine:
                return []
            self._missing.get(room, {}).pop(message.nick, None)
            members = self.members.get(room)
            if members and message.nick in members:
                members.remove(message.nick)
            return [ev.Leave(room=room, nick=message.nick, reason=message.reason, ts=message.ts)]
        if isinstance(message, NickNotice):
            for members in self.members.values():
                for i, member in enumerate(members):
                    if member == message.old:
                        members[i] = message.new
            if message.id in self._seen or mine in (
                nick_key(message.old),
                nick_key(message.new),
            ):
                return []
            self._seen[message.id] = None
            if len(self._seen) > _SEEN_NOTICES:
                self._seen.popitem(last=False)
            return [ev.Nick(old=message.old, new=message.new)]
        return []


def _gone(room: str, nick: str, now: float) -> ev.Leave:
    """``nick`` left ``room`` while we were away (how, we cannot know)."""
    return ev.Leave(room=room, nick=nick, reason="unknown", ts=now, meanwhile=True)
