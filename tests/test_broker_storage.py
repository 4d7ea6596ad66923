"""Storage failures staged in the pure core (broker/storage.py, issue 13): a
commit that fails takes its lines back, whatever else the turn decided; a read
that fails is an error reply. No sockets, no disk: the store is a fake whose
flush fails when told to."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from broker import Publish, Send
from broker.core import Action, BrokerCore
from broker.history import MemoryHistory, StorageError, Unstored
from protocol import (
    Ack,
    ChatMessage,
    Error,
    ErrorCode,
    History,
    Ping,
    Pong,
    Say,
    SendPrivate,
    WhoReply,
    encode,
)
from protocol.messages import Who
from tests.test_broker_core import join, make_core


class FlakyHistory(MemoryHistory):
    """Memory history whose flush refuses everything pending while ``failing``."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self.unreadable = False
        self._pending: Unstored = []

    def append(self, message: ChatMessage, key: str | None) -> None:
        self._pending.append((message, key))

    def last_seq(self, room: str) -> int:
        stored = super().last_seq(room)
        pending = [m.seq for m, _ in self._pending if m.room == room]
        return max([stored, *pending])

    def flush(self) -> Unstored:
        pending, self._pending = self._pending, []
        if self.failing:
            return pending
        for message, key in pending:
            super().append(message, key)
        return []

    def fetch(
        self, room: str, after: int, before: int | None, limit: int, forward: bool = False
    ) -> tuple[list[ChatMessage], int]:
        if self.unreadable:
            raise StorageError("damaged file (database disk image is malformed)")
        return super().fetch(room, after, before, limit, forward)

    def stored(self, room: str) -> list[tuple[int, str]]:
        lines, _ = super().fetch(room, 0, None, 1000)
        return [(line.seq, line.text) for line in lines]


def turn(
    core: BrokerCore, store: FlakyHistory, requests: list[tuple[bytes, object]]
) -> list[Action]:
    """One turn of the loop: handle, flush, take back what was not stored."""
    actions: list[Action] = []
    for identity, request in requests:
        actions += core.handle(identity, [encode(request)], 1.0)  # type: ignore[arg-type]
    refused = store.flush()
    return core.unstored(refused, actions) if refused else actions


def setup() -> tuple[BrokerCore, FlakyHistory]:
    store = FlakyHistory()
    core = make_core(history=store)
    join(core, b"A", "ann")
    join(core, b"B", "bob")
    return core, store


def test_a_failed_commit_publishes_and_acknowledges_nothing_and_says_so() -> None:
    core, store = setup()
    turn(core, store, [(b"A", Say(room="lobby", text="stored", key="k0"))])
    store.failing = True
    actions = turn(
        core,
        store,
        [
            (b"A", Say(room="lobby", text="one", key="k1")),
            (b"B", Say(room="lobby", text="two")),  # no key: told all the same
            (b"A", Say(room="lobby", text="one", key="k1")),  # a resend in the same turn
            (b"B", SendPrivate(to="ann", text="psst")),  # not stored: goes through
            (b"A", Ping()),
        ],
    )
    assert [a for a in actions if isinstance(a, Publish)] == []
    assert not any(isinstance(a.message, Ack) for a in actions if isinstance(a, Send))
    errors = [(a.identity, a.message) for a in actions if isinstance(a.message, Error)]
    assert [(who, e.code, e.key, e.room, e.req) for who, e in errors] == [
        (b"A", ErrorCode.UNAVAILABLE, "k1", "lobby", "say"),
        (b"B", ErrorCode.UNAVAILABLE, None, "lobby", "say"),
    ]
    replies = [a.message for a in actions if isinstance(a, Send)]
    assert sum(1 for r in replies if type(r).__name__ == "PrivateMessage") == 2
    # The pong of that turn was decided before the commit; the next one is right.
    (pong,) = [
        r for r in (a.message for a in turn(core, store, [(b"A", Ping())])) if isinstance(r, Pong)
    ]
    assert pong.seqs == {"lobby": 1}
    # Space returns: the resend is stored under the number the refused line had.
    store.failing = False
    actions = turn(core, store, [(b"A", Say(room="lobby", text="one", key="k1"))])
    (ack,) = [a.message for a in actions if isinstance(a.message, Ack)]
    assert (ack.key, ack.seq) == ("k1", 2)
    assert store.stored("lobby") == [(1, "stored"), (2, "one")]


def test_a_failed_read_is_an_error_reply_and_the_core_goes_on() -> None:
    core, store = setup()
    store.unreadable = True
    actions = core.handle(b"A", [encode(History(room="lobby", after=0))], 2.0)
    (reply,) = [a.message for a in actions if isinstance(a, Send)]
    assert isinstance(reply, Error)
    assert (reply.code, reply.req, reply.room) == (ErrorCode.UNAVAILABLE, "history", "lobby")
    (who,) = [a.message for a in core.handle(b"A", [encode(Who(room="lobby"))], 2.0)]  # type: ignore[union-attr]
    assert isinstance(who, WhoReply)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.lists(st.sampled_from("ABx"), max_size=6)), max_size=12)
)
def test_what_was_acknowledged_is_exactly_what_is_stored(
    script: list[tuple[bool, list[str]]],
) -> None:
    """Any sequence of turns, each committing or failing: every ack names a
    stored line, every stored line was acked, no ack is followed by an error
    for the same key, and the numbering has no hole."""
    core, store = setup()
    acked: dict[str, int] = {}
    refused: set[str] = set()
    counter = 0
    for failing, senders in script:
        store.failing = failing
        requests: list[tuple[bytes, object]] = []
        for sender in senders:
            counter += 1
            key = f"k{counter % 7}"  # keys repeat: resends
            who = b"A" if sender == "A" else b"B"
            if sender == "x":
                requests.append((who, Say(room="lobby", text="no key")))
            else:
                requests.append((who, Say(room="lobby", text=key, key=key)))
        for action in turn(core, store, requests):
            message = action.message
            if isinstance(message, Ack):
                assert message.key not in acked or acked[message.key] == message.seq
                acked[message.key] = message.seq
            elif isinstance(message, Error):
                assert message.code == ErrorCode.UNAVAILABLE
                assert message.key not in acked
                if message.key is not None:
                    refused.add(message.key)
    stored = store.stored("lobby")
    assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1))
    keyed = [(text, seq) for seq, text in stored if text != "no key"]
    assert len({text for text, _ in keyed}) == len(keyed)  # a key is stored once
    assert dict(keyed) == acked
