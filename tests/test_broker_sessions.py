"""The broker's session table: three indices, one invariant (broker/sessions.py)."""

from __future__ import annotations

from dataclasses import dataclass

from broker.sessions import SessionTable


@dataclass(eq=False)
class _S:
    identity: bytes
    nick: str
    token: str


def _consistent(table: SessionTable[_S], sessions: list[_S]) -> None:
    assert len(table) == len(sessions)
    assert set(map(id, table)) == set(map(id, sessions))
    for s in sessions:
        assert table.by_identity[s.identity] is s
        assert table.with_token(s.token) is s
        assert table.with_nick(s.nick.upper()) is s  # case-insensitive


def test_every_change_keeps_the_three_indices_in_step() -> None:
    table: SessionTable[_S] = SessionTable()
    alice, bob = _S(b"a", "Alice", "t1"), _S(b"b", "bob", "t2")
    table.add(alice)
    table.add(bob)
    _consistent(table, [alice, bob])
    table.rename(alice, "ALICIA")
    assert table.with_nick("alice") is None
    table.rebind(bob, b"b2")
    assert b"b" not in table.by_identity
    _consistent(table, [alice, bob])
    table.remove(alice)
    table.remove(alice)  # twice is harmless
    _consistent(table, [bob])
    assert table.with_token("t1") is None and table.with_nick("alicia") is None
    table.clear()
    _consistent(table, [])


def test_removing_a_session_never_frees_a_nickname_someone_else_holds() -> None:
    table: SessionTable[_S] = SessionTable()
    old, new = _S(b"a", "nick", "t1"), _S(b"b", "other", "t2")
    table.add(old)
    table.add(new)
    table.rename(old, "spare")
    table.rename(new, "nick")
    stale = _S(b"x", "nick", "t9")  # never added: removing it changes nothing
    table.remove(stale)
    assert table.with_nick("nick") is new
