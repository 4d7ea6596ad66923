"""Who is in each of our rooms, from ``joined``, ``who`` and the notices
(docs/PROTOCOL.md §5): announces each newcomer once, even when a restarted
broker replays the joins of everyone coming back.
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

    def joined(self, room: str, members: list[str], *, again: bool) -> None:
        """Our ``joined``: ``again`` keeps whom we knew (back in a room after a
        reconnect: those who come back after us are not news)."""
        if again:
            known = self.members.get(room, [])
            self.members[room] = known + [m for m in members if m not in known]
        else:
            self.members[room] = list(members)

    def who(self, room: str, members: list[str]) -> None:
        """A ``who`` answer for a room we are in."""
        self.members[room] = list(members)

    def left(self, room: str) -> None:
        """We are no longer in ``room``."""
        self.members.pop(room, None)

    def notice(self, message: Broadcast, me: str) -> list[ev.Event]:
        """A join, joins, leave or nick notice; ``me`` is our nickname."""
        mine = nick_key(me)
        room = message.room
        if isinstance(message, JoinNotice | JoinsNotice):
            nicks = [message.nick] if isinstance(message, JoinNotice) else message.nicks
            out: list[ev.Event] = []
            for nick in nicks:
                if nick_key(nick) == mine or nick in self.members.get(room, ()):
                    continue  # us, or someone rejoining a restarted broker: not news
                self.members.setdefault(room, []).append(nick)
                out.append(ev.Join(room=room, nick=nick, ts=message.ts))
            return out
        if isinstance(message, LeaveNotice):
            if nick_key(message.nick) == mine:
                return []
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
