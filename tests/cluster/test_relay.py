"""The pure catch-up relay (broker/engine/relay.py): no Redis, no threads;
event order and losses are parameters."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.engine import RoomMeta, StoredLine
from broker.engine.api import History
from broker.engine.relay import Deliver, NeedMeta, NeedRange, Relay, Reset

E = "e1"


def L(*seqs: int) -> tuple[StoredLine, ...]:
    return tuple(StoredLine(s, f"p{s}".encode()) for s in seqs)


def delivered(actions: list[object]) -> list[int]:
    return [line.seq for a in actions if isinstance(a, Deliver) for line in a.lines]


def test_lines_before_the_snapshot_wait_for_it() -> None:
    relay = Relay()
    relay.follow("r")
    assert relay.on_subscribed("r") == [NeedMeta(("r",))]
    assert relay.on_lines("r", E, L(5, 6)) == []  # raced the snapshot
    assert delivered(relay.on_meta("r", RoomMeta(5, E))) == [6]  # 5 was in the snapshot
    assert relay.last("r") == RoomMeta(6, E)


def test_a_room_followed_from_a_known_seq_relays_what_came_before_the_bus_was_live() -> None:
    relay = Relay()
    relay.follow("r", RoomMeta(2, E))  # the seq the joining client was told
    assert relay.on_subscribed("r") == [NeedMeta(("r",))]
    assert relay.on_meta("r", RoomMeta(5, E)) == [NeedRange("r", 2, 6)]  # 3..5 raced
    got = relay.on_range("r", History(L(3, 4, 5), 0, RoomMeta(5, E)))
    assert delivered(got) == [3, 4, 5]


def test_a_gap_asks_for_the_range_and_releases_held_lines_in_order() -> None:
    relay = Relay()
    relay.follow("r")
    relay.on_meta("r", RoomMeta(0, E))
    assert delivered(relay.on_lines("r", E, L(1))) == [1]
    assert relay.on_lines("r", E, L(4, 5)) == [NeedRange("r", 1, 4)]
    assert relay.on_lines("r", E, L(6)) == []  # already fetching
    got = relay.on_range("r", History(L(2, 3), 0, RoomMeta(6, E)))
    assert delivered(got) == [2, 3, 4, 5, 6]
    assert delivered(relay.on_lines("r", E, L(5, 6, 7))) == [7]  # duplicates dropped


def test_trimmed_lines_are_skipped_not_waited_for() -> None:
    relay = Relay()
    relay.follow("r")
    relay.on_meta("r", RoomMeta(0, E))
    assert relay.on_lines("r", E, L(10)) == [NeedRange("r", 0, 10)]
    assert delivered(relay.on_range("r", History(L(8, 9), 7, RoomMeta(10, E)))) == [8, 9, 10]


def test_a_new_epoch_is_a_reset_never_a_renumbering() -> None:
    relay = Relay()
    relay.follow("r")
    relay.on_meta("r", RoomMeta(100, E))
    got = relay.on_lines("r", "e2", L(1, 2))
    assert got[0] == Reset("r", "e2", 0) and delivered(got) == [1, 2]
    assert relay.on_meta("r", RoomMeta(0, "e3")) == [Reset("r", "e3", 0)]


def test_a_stale_bus_is_caught_by_the_meta_check() -> None:
    relay = Relay()
    relay.follow("r")
    relay.on_meta("r", RoomMeta(3, E))
    assert relay.on_meta("r", RoomMeta(5, E)) == [NeedRange("r", 3, 6)]
    assert delivered(relay.on_range("r", History(L(4, 5), 0, RoomMeta(5, E)))) == [4, 5]
    assert relay.on_subscribed("r") == [NeedMeta(("r",))]  # e.g. after a reconnect


@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(1, 40),
    batches=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 5)), max_size=30),
    snapshot=st.integers(0, 10),
)
def test_any_bus_order_loss_or_repeat_relays_each_line_once_in_order(
    total: int, batches: list[tuple[int, int]], snapshot: int
) -> None:
    """Whatever the bus delivers (reordered, lost, repeated), serving every
    NeedRange from the store and a final meta check relays snapshot+1..total
    exactly once, in order."""
    snapshot = min(snapshot, total)
    store = {s: StoredLine(s, b"") for s in range(1, total + 1)}
    relay = Relay()
    relay.follow("r")
    out: list[int] = []

    def run(actions: list[object]) -> None:
        todo = list(actions)
        while todo:
            a = todo.pop(0)
            out.extend(delivered([a]))
            if isinstance(a, NeedRange):
                lines = tuple(store[s] for s in range(a.after + 1, a.before) if s in store)
                todo += relay.on_range("r", History(lines, 0, RoomMeta(total, E)))

    run(list(relay.on_meta("r", RoomMeta(snapshot, E))))
    for start, size in batches:
        seqs = [s for s in range(start, start + size) if s <= total]
        if seqs:
            run(list(relay.on_lines("r", E, tuple(store[s] for s in seqs))))
    run(list(relay.on_meta("r", RoomMeta(total, E))))
    assert out == list(range(snapshot + 1, total + 1))


def test_a_new_epoch_above_the_last_relayed_seq_is_relayed_from_there() -> None:
    # a failover lost lines 6..13: the engine's new epoch continues above 13
    relay = Relay()
    relay.follow("r")
    relay.on_meta("r", RoomMeta(13, E))
    got = relay.on_meta("r", RoomMeta(15, "e2"))
    assert got == [Reset("r", "e2", 13), NeedRange("r", 13, 16)]
    assert delivered(relay.on_range("r", History(L(14, 15), 0, RoomMeta(15, "e2")))) == [14, 15]
    got = relay.on_lines("r", "e3", L(16))  # a bus message of yet another numbering
    assert got[0] == Reset("r", "e3", 15) and delivered(got) == [16]
