"""A first end-to-end check: two clients in one room hear each other."""

from client import events as ev
from tests.conftest import wait_for


def test_two_clients_talk(connect) -> None:  # type: ignore[no-untyped-def]
    alice = connect("alice")
    bob = connect("bob")
    wait_for(alice, ev.Join, lambda e: e.nick == "bob")
    alice.say("hello bob")
    line = wait_for(bob, ev.Message)
    assert (line.nick, line.text, line.room, line.seq) == ("alice", "hello bob", "lobby", 1)
