"""The sync handshake (broker/handshake.py): pure, time as a parameter."""

from __future__ import annotations

import pytest

from broker.actions import Send
from broker.handshake import EARLY_SYNC_LIMIT, expire_syncs, overtaken, sync_of
from broker.sessions import Session
from protocol import Error


@pytest.mark.parametrize(
    ("notice", "expected"),
    [
        (b"\x01sync/tok/0/", ("tok", 0)),
        (b"\x01sync/tok/12/", ("tok", 12)),
        (b"\x00sync/tok/0/", None),  # an unsubscription
        (b"\x01room/lobby/", None),
        (b"\x01sync/tok/x/", None),
        (b"\x01sync/tok/1", None),
        (b"\x01sync/tok/1/more/", None),
    ],
)
def test_only_subscriptions_to_sync_topics_are_read(
    notice: bytes, expected: tuple[str, int] | None
) -> None:
    assert sync_of(notice) == expected


def test_overtaking_syncs_are_remembered_up_to_a_limit() -> None:
    session = Session(identity=b"A", nick="a", token="t", last_seen=0.0)
    for number in range(1, EARLY_SYNC_LIMIT + 1):
        overtaken(session, number)
    assert session.early_syncs == set(range(1, EARLY_SYNC_LIMIT + 1))
    overtaken(session, 999)  # a flood of them cannot grow the set
    assert session.early_syncs == {999}


def test_syncs_that_never_come_expire_with_an_error_and_a_hellos_abandons_the_session() -> None:
    joining = Session(identity=b"A", nick="a", token="t", last_seen=0.0, active=True)
    joining.pending = {1: (["old"], 0.0), 2: (["new"], 9.0)}
    [error] = expire_syncs(joining, 10.5, 10.0, "tcp://pub")
    assert isinstance(error, Send) and isinstance(error.message, Error)
    assert (error.message.code, error.message.req, error.message.room) == (
        "sync_timeout",
        "join",
        "old",
    )
    assert list(joining.pending) == [2]
    hello = Session(identity=b"B", nick="b", token="u", last_seen=0.0)
    hello.pending = {0: (["lobby"], 0.0)}
    assert expire_syncs(hello, 10.0, 10.0, "tcp://pub") == []  # not yet
    [error] = expire_syncs(hello, 10.5, 10.0, "tcp://pub")
    assert error.message.req == "hello" and "tcp://pub" in error.message.message  # type: ignore[union-attr]
    assert hello.pending == {}
