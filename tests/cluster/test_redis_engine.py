"""The Redis engine against real redis-server processes, faults included."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from broker.engine import (
    EngineConfigError,
    EngineSettings,
    EngineUnavailable,
    Fenced,
    Member,
    NewLine,
    ReapReport,
    RedisEngine,
    RoomMeta,
    SessionRecord,
    check_server,
)
from tests.redis_server import SCALE, RedisServer, SentinelServer, redis_server_binary

pytestmark = pytest.mark.timeout(60)

Make = Callable[..., RedisEngine]

#: A broker lease short enough for quick tests, long enough that a loaded
#: machine does not fence the live brokers of a test between two heartbeats.
TTL = int(500 * SCALE)


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout * SCALE
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def lines(*texts: str, keyed: bool = True) -> list[NewLine]:
    return [NewLine(t if keyed else None, t.encode()) for t in texts]


# -- start-up ----------------------------------------------------------------


def test_unreachable_redis_is_one_line_naming_the_url() -> None:
    with pytest.raises(EngineUnavailable) as info:
        RedisEngine.connect("redis://:secret@127.0.0.1:1/0", EngineSettings(timeout=0.5))
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("cannot reach Redis at redis://:***@127.0.0.1:1/0")
    assert "secret" not in text


def test_unreachable_sentinel_is_one_short_line_naming_it() -> None:
    # redis-py's message holds the repr of every connection it tried: pages.
    with pytest.raises(EngineUnavailable) as info:
        RedisEngine.connect("redis+sentinel://127.0.0.1:1/chat", EngineSettings(timeout=0.5))
    text = str(info.value)
    assert text == (
        "cannot reach Redis at redis+sentinel://127.0.0.1:1/chat: "
        "no primary for 'chat': a Sentinel (127.0.0.1:1) could not be reached"
    )


def test_evicting_policy_is_refused(redis_server: RedisServer) -> None:
    with redis_server.client() as c:
        c.config_set("maxmemory-policy", "allkeys-lru")
    with pytest.raises(EngineConfigError, match="allkeys-lru"):
        RedisEngine.connect(redis_server.url)


class FakeInfo:
    """Only INFO, to check the start-up rules for servers we cannot run here."""

    def __init__(self, **info: object) -> None:
        self._info = {"redis_version": "7.0.15", "maxmemory_policy": "noeviction"} | info

    def info(self) -> dict[str, object]:
        return self._info


def test_start_up_rules() -> None:
    with pytest.raises(EngineConfigError, match=r"6\.2\.14 is too old"):
        check_server(FakeInfo(redis_version="6.2.14", aof_enabled=1))  # type: ignore[arg-type]
    with pytest.raises(EngineConfigError, match="volatile-lru"):
        check_server(FakeInfo(maxmemory_policy="volatile-lru"))  # type: ignore[arg-type]
    assert check_server(FakeInfo(redis_version="7.2.4", aof_enabled=1)) == []  # type: ignore[arg-type]
    assert "appendonly" in check_server(FakeInfo(aof_enabled=0))[0]  # type: ignore[arg-type]


def test_no_aof_is_a_warning(redis_server: RedisServer, make_engine: Make) -> None:
    assert make_engine().warnings == []
    with redis_server.client() as c:
        c.config_set("appendonly", "no")
    assert "AOF" in make_engine().warnings[0]


# -- rooms ---------------------------------------------------------------------


def test_append_assigns_seqs_stores_and_publishes_once(
    redis_server: RedisServer, make_engine: Make
) -> None:
    a, b = make_engine(), make_engine()
    with redis_server.client() as c, c.pubsub() as bus:
        bus.subscribe("zc:{lobby}:bus")
        assert bus.get_message(timeout=5)["type"] == "subscribe"
        first = a.append({"lobby": lines("k1", "k2")})["lobby"]
        assert not isinstance(first, EngineUnavailable)
        assert first.seqs == (1, 2) and not first.duplicates and len(first.epoch) == 16
        # the same key through another broker: its original seq, stored and published once
        again = b.append({"lobby": [*lines("k2"), *lines("x", keyed=False)]})["lobby"]
        assert not isinstance(again, EngineUnavailable)
        assert again.seqs == (2, 3) and again.epoch == first.epoch
        assert [(d.index, d.seq) for d in again.duplicates] == [(0, 2)]
        got = [bus.get_message(timeout=5) for _ in range(2)]
        assert bus.get_message(timeout=0.2) is None
    assert [g["data"] for g in got] == [
        f"L{first.epoch}\n1\n2\nk12\n2\nk2".encode(),
        f"L{first.epoch}\n3\n1\nx".encode(),
    ]
    history = a.fetch("lobby", 0, None, 10)
    assert [(x.seq, x.payload) for x in history.lines] == [(1, b"k1"), (2, b"k2"), (3, b"x")]
    assert history.meta == RoomMeta(3, first.epoch)


def test_one_round_trip_for_many_rooms_and_per_room_numbering(make_engine: Make) -> None:
    a = make_engine()
    results = a.append({"r1": lines("a", "b"), "r2": lines("c"), "r3": []})
    assert set(results) == {"r1", "r2"}
    seqs = {room: r.seqs for room, r in results.items() if not isinstance(r, EngineUnavailable)}
    assert seqs == {"r1": (1, 2), "r2": (1,)}
    metas = a.meta(["r1", "r2", "new"])
    assert metas["r1"].seq == 2 and metas["new"].seq == 0 and metas["new"].epoch


def test_fetch_backward_forward_and_missed(make_engine: Make) -> None:
    # exact trimming needs whole stream nodes: 100 lines per node by default
    a = make_engine(history_lines=100)
    for chunk in range(3):
        a.append({"r": lines(*(f"l{chunk * 100 + i}" for i in range(100)))})
    h = a.fetch("r", 0, None, 5)
    assert [x.seq for x in h.lines] == [296, 297, 298, 299, 300]
    assert h.missed >= 100  # trimmed with MAXLEN ~
    first = h.missed + 1
    fwd = a.fetch("r", 0, None, 3, forward=True)
    assert [x.seq for x in fwd.lines] == [first, first + 1, first + 2]
    assert fwd.missed == first - 1
    page = a.fetch("r", 250, 260, 100, forward=True)
    assert [x.seq for x in page.lines] == list(range(251, 260)) and page.missed == 0
    assert a.fetch("r", 300, None, 10).lines == ()
    assert a.fetch("r", 10, 5, 10).lines == ()


def test_missing_meta_means_a_new_epoch(redis_server: RedisServer, make_engine: Make) -> None:
    a = make_engine()
    first = a.append({"r": lines("a", "b")})["r"]
    assert not isinstance(first, EngineUnavailable)
    with redis_server.client() as c:
        c.delete("zc:{r}:meta")  # as an evicting or amnesiac Redis would
    again = a.append({"r": lines("c", "a")})["r"]
    assert not isinstance(again, EngineUnavailable)
    assert again.epoch != first.epoch and again.seqs == (1, 2)  # keys went with the numbering
    assert [x.payload for x in a.fetch("r", 0, None, 10).lines] == [b"c", b"a"]


def test_seq_regression_under_the_same_epoch_means_a_new_epoch(
    redis_server: RedisServer, make_engine: Make
) -> None:
    a, b = make_engine(), make_engine()
    r = a.append({"r": lines("a", "b", "c", "d")})["r"]
    assert not isinstance(r, EngineUnavailable)
    assert a.meta(["r"])["r"] == RoomMeta(4, r.epoch)
    with redis_server.client() as c:  # a failover to a replica that missed lines 3 and 4
        kept = c.xrange("zc:{r}:log", "-", "2-0")
        c.delete("zc:{r}:log")
        for entry_id, fields in kept:
            c.xadd("zc:{r}:log", fields, id=entry_id)
        c.hset("zc:{r}:meta", "seq", 2)
    # b saw nothing: it cannot tell; a saw seq 4, so its next call starts a
    # new numbering that continues above 4 (no seq a client saw is reused)
    assert b.meta(["r"])["r"] == RoomMeta(2, r.epoch)
    bumped = a.meta(["r"])["r"]
    assert bumped.seq == 4 and bumped.epoch != r.epoch
    # every broker sees the one new epoch, never the old numbering again
    assert b.meta(["r"])["r"].epoch == bumped.epoch
    assert a.meta(["r"])["r"].epoch == bumped.epoch
    # history counts the lost seqs as missed, as trimmed ones
    h = b.fetch("r", 0, None, 10, forward=True)
    assert [x.payload for x in h.lines] == [b"a", b"b"] and h.missed == 2
    assert b.fetch("r", 3, None, 10).missed == 1
    assert b.fetch("r", 0, 4, 10).missed == 1
    after = b.append({"r": lines("e")})["r"]
    assert not isinstance(after, EngineUnavailable)
    assert after.epoch == bumped.epoch and after.seqs == (5,)
    assert [x.seq for x in b.fetch("r", 2, None, 10).lines] == [5]
    assert b.fetch("r", 2, None, 10).missed == 2


def test_a_floor_from_the_bus_alone_starts_the_new_epoch_at_append(
    redis_server: RedisServer, make_engine: Make
) -> None:
    a, b = make_engine(), make_engine()
    r = a.append({"r": lines("a", "b", "c")})["r"]
    assert not isinstance(r, EngineUnavailable)
    b.saw("r", RoomMeta(3, r.epoch))  # b relayed line 3 from the bus
    with redis_server.client() as c:  # lost: line 3
        c.delete("zc:{r}:log", "zc:{r}:keys")
        c.xadd("zc:{r}:log", {"d": "a", "k": "a"}, id="1-0")
        c.xadd("zc:{r}:log", {"d": "b", "k": "b"}, id="2-0")
        c.hset("zc:{r}:meta", "seq", 2)
    got = b.append({"r": lines("d")})["r"]
    assert not isinstance(got, EngineUnavailable)
    assert got.epoch != r.epoch and got.seqs == (4,)


# -- nicknames -------------------------------------------------------------------


def test_nick_race_between_two_brokers_has_exactly_one_winner(make_engine: Make) -> None:
    a, b = make_engine(), make_engine()
    rounds = 300
    barrier = threading.Barrier(2)
    wins: dict[str, list[bool]] = {"a": [], "b": []}

    def racer(name: str, engine: RedisEngine) -> None:
        for i in range(rounds):
            barrier.wait(10)
            wins[name].append(engine.claim_nick(f"nick{i}", f"s-{name}"))

    threads = [threading.Thread(target=racer, args=(n, e)) for n, e in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(50)
    assert all(x != y for x, y in zip(wins["a"], wins["b"], strict=True))
    assert len(wins["a"]) == rounds
    assert 0 < sum(wins["a"]) < rounds  # both won some: it was a race


def test_nick_lease_refresh_and_release_if_mine(make_engine: Make) -> None:
    a, b = make_engine(), make_engine()
    assert a.claim_nick("alice", "s1")
    assert a.claim_nick("alice", "s1")  # one's own again
    assert not b.claim_nick("alice", "s9")
    assert not b.release_nick("alice", "s9")
    assert a.refresh_nicks({"alice": "s1"}) == []
    assert b.refresh_nicks({"alice": "s9"}) == ["alice"]
    assert a.nick_holder("alice") == (a.broker_id, "s1")
    assert a.release_nick("alice", "s1")
    assert b.claim_nick("alice", "s9")


def test_lapsed_lease_is_free_and_reasserted_by_refresh(make_engine: Make) -> None:
    a, b = make_engine(nick_lease=100), make_engine()
    assert a.claim_nick("bob", "s1")
    eventually(lambda: a.nick_holder("bob") is None)
    assert a.refresh_nicks({"bob": "s1"}) == []  # free again: taken back
    assert not b.claim_nick("bob", "s2")


# -- membership --------------------------------------------------------------------


def test_members_in_joining_order_across_brokers(
    redis_server: RedisServer, make_engine: Make
) -> None:
    a, b = make_engine(), make_engine()
    alice = Member("alice", "Alice", a.broker_id, "s1")
    bob = Member("bob", "Bob", b.broker_id, "s2")
    with redis_server.client() as c, c.pubsub() as bus:
        bus.subscribe("zc:{r}:bus")
        bus.get_message(timeout=5)
        assert a.join("r", alice, b"+alice")
        assert b.join("r", bob, b"+bob")
        assert not a.join("r", alice, b"+alice again")  # already in: no notice
        assert a.members("r") == [alice, bob]
        assert not a.leave("r", bob, b"-bob")  # not this broker's session
        assert b.leave("r", bob, b"-bob")
        a.publish("r", b"~alice")
        notices = [bus.get_message(timeout=5)["data"] for _ in range(4)]
        assert bus.get_message(timeout=0.2) is None
    assert notices == [b"N+alice", b"N+bob", b"N-bob", b"N~alice"]
    assert b.members("r") == [alice]


# -- brokers: heartbeat, fencing, reaper -----------------------------------------------


def test_expired_broker_is_fenced_and_reaped_exactly_once(make_engine: Make) -> None:
    ghost = make_engine(broker_ttl=TTL)
    live = [make_engine(broker_ttl=TTL) for _ in range(3)]
    member = Member("carol", "Carol", ghost.broker_id, "s1")
    assert ghost.claim_nick("carol", "s1")
    assert ghost.join("r1", member) and ghost.join("r2", member)
    ghost.heartbeat()
    # the ghost stops heartbeating (paused); the live ones keep going
    eventually(lambda: [e.heartbeat() for e in live] and ghost.broker_id in live[0].dead_brokers())
    with pytest.raises(Fenced):
        ghost.append({"r1": lines("ghost line")})
    with pytest.raises(Fenced):
        ghost.heartbeat()  # too late: a lease once expired is never renewed
    with pytest.raises(Fenced):
        ghost.claim_nick("dave", "s2")
    with pytest.raises(Fenced):
        ghost.join("r3", member)
    with pytest.raises(Fenced):
        ghost.send_private(live[0].broker_id, b"boo")
    with pytest.raises(Fenced):
        ghost.refresh_nicks({"carol": "s1"})
    with pytest.raises(Fenced):
        ghost.publish("r1", b"a ghost's notice")
    assert live[0].fetch("r1", 0, None, 10).lines == ()
    # several reapers race; one wins, each member and nick reported once
    reports = []
    barrier = threading.Barrier(3)

    def reap(engine: RedisEngine) -> None:
        barrier.wait(10)
        reports.append(engine.reap(ghost.broker_id))

    threads = [threading.Thread(target=reap, args=(e,)) for e in live]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    won = [r for r in reports if r is not None]
    assert len(won) == 1
    assert sorted(m.room for m in won[0].members) == ["r1", "r2"]
    assert won[0].nicks == ("carol",)
    assert live[0].members("r1") == [] and live[0].dead_brokers() == []
    assert live[1].reap(ghost.broker_id) is None  # again: nothing
    assert live[1].claim_nick("carol", "s7")
    # the fenced broker comes back under a new id
    ghost.renew_id()
    ghost.register()
    assert ghost.append({"r1": lines("back")})["r1"].seqs == (1,)  # type: ignore[union-attr]


# -- inboxes -----------------------------------------------------------------------------


def test_private_lines_go_through_the_recipients_inbox(make_engine: Make) -> None:
    a, b = make_engine(), make_engine()
    first = a.send_private(b.broker_id, b"to bob")
    a.send_private(b.broker_id, b"again")
    got = b.read_inbox("0-0")
    assert [x.payload for x in got] == [b"to bob", b"again"] and got[0].id == first
    assert [x.payload for x in b.read_inbox(first)] == [b"again"]
    assert a.read_inbox("0-0") == []


# -- Redis faults -----------------------------------------------------------------------


def test_kill_9_and_restart_on_aof_loses_no_acknowledged_line(
    redis_server: RedisServer, make_engine: Make
) -> None:
    a = make_engine()
    acked: list[int] = []
    epoch = ""
    for i in range(50):
        r = a.append({"r": lines(*(f"k{i}-{j}" for j in range(4)))})["r"]
        assert not isinstance(r, EngineUnavailable)
        acked += r.seqs
        epoch = r.epoch
    redis_server.kill()
    with pytest.raises(EngineUnavailable):
        a.append({"r": lines("while down")})
    redis_server.restart()
    a.heartbeat()
    h = a.fetch("r", 0, None, 1000)
    assert [x.seq for x in h.lines] == acked == list(range(1, 201))
    assert h.meta.epoch == epoch
    # and the keys survived too: a resend after the restart is a duplicate
    again = a.append({"r": lines("k49-3")})["r"]
    assert not isinstance(again, EngineUnavailable)
    assert again.duplicates[0].seq == 200


def test_restart_without_persistence_changes_the_epoch(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, aof=False)
    server.start()
    try:
        a = RedisEngine.connect(server.url, EngineSettings(timeout=1.0))
        assert a.warnings  # no AOF: warned
        a.register()
        before = a.append({"r": lines("x", "y")})["r"]
        assert not isinstance(before, EngineUnavailable)
        server.kill()
        server.restart()
        with pytest.raises(Fenced):  # the registry went with the data
            a.append({"r": lines("z")})
        a.renew_id()
        a.register()  # the functions are loaded again on demand
        after = a.meta(["r"])["r"]
        assert after.seq == 0 and after.epoch != before.epoch
        a.close()
    finally:
        server.kill()


def test_debug_sleep_is_a_retryable_unavailable_then_resend_is_exactly_once(
    redis_server: RedisServer, make_engine: Make
) -> None:
    a = make_engine(timeout=0.2, broker_ttl=60_000)
    stall = redis_server.debug_sleep(1.0)
    with pytest.raises(EngineUnavailable) as info:
        a.append({"r": lines("key1")})
    assert info.value.indeterminate  # sent, no reply: it may have run
    stall.join(10)
    # resend with the same key until Redis answers: stored exactly once
    deadline = time.monotonic() + 10 * SCALE
    while True:
        try:
            r = a.append({"r": lines("key1")})["r"]
            break
        except EngineUnavailable:
            assert time.monotonic() < deadline
    assert not isinstance(r, EngineUnavailable)
    assert r.seqs == (1,)
    assert [x.payload for x in a.fetch("r", 0, None, 10).lines] == [b"key1"]


def test_redis_down_is_unavailable_for_every_call(
    redis_server: RedisServer, make_engine: Make
) -> None:
    a = make_engine()
    redis_server.kill()
    m = Member("x", "x", a.broker_id, "s")
    calls: list[Callable[[], object]] = [
        lambda: a.append({"r": lines("k")}),
        lambda: a.fetch("r", 0, None, 1),
        lambda: a.meta(["r"]),
        lambda: a.claim_nick("x", "s"),
        lambda: a.join("r", m),
        lambda: a.members("r"),
        lambda: a.heartbeat(),
        lambda: a.reap("other"),
        lambda: a.read_inbox("0-0"),
    ]
    for call in calls:
        with pytest.raises(EngineUnavailable):
            call()
    with pytest.raises(redis.ConnectionError):
        redis_server.client().ping()


def test_engine_through_sentinel(redis_server: RedisServer, tmp_path: Path) -> None:
    sentinel = SentinelServer(tmp_path / "sentinel", redis_server).start()
    try:
        engine = RedisEngine.connect(sentinel.url, EngineSettings(timeout=1.0))
        engine.register()
        r = engine.append({"r": lines("via sentinel")})["r"]
        assert not isinstance(r, EngineUnavailable) and r.seqs == (1,)
        with redis_server.client() as c:  # it reached the primary the Sentinel names
            assert c.xlen("zc:{r}:log") == 1
        engine.close()
    finally:
        sentinel.kill()


def test_missing_redis_server_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="redis-server is not installed"):
        redis_server_binary()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="apt-get install redis-server"):
        redis_server_binary()


def test_redis_out_of_memory_refuses_each_rooms_batch_whole(
    redis_server: RedisServer, make_engine: Make
) -> None:
    a = make_engine()
    a.append({"r1": lines("before")})
    with redis_server.client() as c:
        c.config_set("maxmemory", 1)  # full, as a small disk would be for SQLite
        results = a.append({"r1": lines("k1", "k2"), "r2": lines("k3")})
        assert set(results) == {"r1", "r2"}
        for result in results.values():
            assert isinstance(result, EngineUnavailable) and "OutOfMemory" in str(result)
            assert not result.indeterminate  # refused before running: nothing written
        c.config_set("maxmemory", 0)
    assert [x.payload for x in a.fetch("r1", 0, None, 10).lines] == [b"before"]
    assert a.fetch("r2", 0, None, 10).lines == ()


def test_same_key_twice_in_one_batch_is_stored_once(make_engine: Make) -> None:
    r = make_engine().append({"r": lines("k", "k", "j")})["r"]
    assert not isinstance(r, EngineUnavailable)
    assert r.seqs == (1, 1, 2) and [(d.index, d.seq) for d in r.duplicates] == [(1, 1)]


def test_a_duplicate_brings_back_the_original_payload(
    redis_server: RedisServer, make_engine: Make
) -> None:
    engine = make_engine()
    engine.append({"r": [NewLine("k", b"original")]})
    again = engine.append({"r": [NewLine("k", b"resent"), NewLine("k", b"twice")]})["r"]
    assert not isinstance(again, EngineUnavailable)
    assert [(d.index, d.seq, d.payload) for d in again.duplicates] == [
        (0, 1, b"original"),
        (1, 1, b"original"),
    ]
    # the line trimmed from history, its key still remembered: the seq alone
    with redis_server.client() as c:
        c.xdel("zc:{r}:log", "1-0")
    trimmed = engine.append({"r": [NewLine("k", b"resent")]})["r"]
    assert not isinstance(trimmed, EngineUnavailable)
    assert [(d.seq, d.payload) for d in trimmed.duplicates] == [(1, None)]


def test_a_reaper_that_died_half_way_is_finished_by_another(
    redis_server: RedisServer, make_engine: Make
) -> None:
    ghost = make_engine(broker_ttl=TTL)
    first, second = make_engine(broker_ttl=TTL), make_engine(broker_ttl=TTL)
    for room in ("r1", "r2"):
        assert ghost.join(room, Member(f"n{room}", "N", ghost.broker_id, "s"))
    assert ghost.claim_nick("nr1", "s")
    eventually(lambda: bool(first.heartbeat() or second.heartbeat() or first.dead_brokers()))
    # the first reaper wins the lock, cleans r1, then dies
    lock = f"zc:reaping:{ghost.broker_id}"
    with redis_server.client() as c:
        assert c.set(lock, first.broker_id, nx=True, px=60_000)
        c.fcall("zc_reap_room", 1, "zc:{r1}:members", ghost.broker_id)
        assert second.reap(ghost.broker_id) is None  # still locked
        c.delete(lock)  # as if its reap_lock lapsed
    reports: list[ReapReport] = []

    def reaped() -> bool:
        second.heartbeat()
        report = second.reap(ghost.broker_id)
        reports.extend([report] if report else [])
        return bool(reports)

    eventually(reaped)
    # what the first had reported is not reported again
    assert [m.room for m in reports[0].members] == ["r2"] and reports[0].nicks == ("nr1",)
    with redis_server.client() as c:
        assert c.zscore("zc:brokers", ghost.broker_id) is None
        assert c.get("zc:nick:nr1") is None
    assert second.members("r1") == second.members("r2") == []


def test_a_batch_of_only_duplicates_keeps_the_epoch(make_engine: Make) -> None:
    a = make_engine()
    first = a.append({"r": lines("k1", "k2")})["r"]
    again = a.append({"r": lines("k1")})["r"]
    assert not isinstance(first, EngineUnavailable) and not isinstance(again, EngineUnavailable)
    assert again.epoch == first.epoch and again.seqs == (1,)
    assert a.meta(["r"])["r"] == RoomMeta(2, first.epoch)


# -- sessions: resume on another broker ----------------------------------------------


def session_on(engine: RedisEngine, token: str, nick: str, rooms: tuple[str, ...]) -> Member:
    member = Member(nick.lower(), nick, engine.broker_id, token)
    assert engine.claim_nick(member.nick_key, token)
    for room in rooms:
        assert engine.join(room, member)
    engine.save_session(SessionRecord(token, engine.broker_id, nick, nick.lower(), rooms, "K"))
    return member


def test_a_session_moves_to_another_broker_with_its_nick_and_rooms(make_engine: Make) -> None:
    a, b = make_engine(), make_engine()
    first = session_on(a, "t0", "Zed", ("r1",))
    alice = session_on(a, "t1", "Alice", ("r1", "r2"))
    record = b.take_session("t1")
    assert record == SessionRecord("t1", b.broker_id, "Alice", "alice", ("r1", "r2"), "K")
    moved = Member("alice", "Alice", b.broker_id, "t1")
    assert b.nick_holder("alice") == (b.broker_id, "t1")
    assert b.members("r1") == [first, moved] and b.members("r2") == [moved]  # order kept
    assert b.take_session("t1") == record  # already here
    # the old broker's view is stale: its if-mine calls do nothing, refreshes say lost
    assert not a.release_nick("alice", "t1") and not a.leave("r1", alice)
    assert a.refresh_nicks({"alice": "t1"}) == ["alice"]
    assert a.refresh_sessions(["t1", "t0"]) == ["t1"]
    assert not a.drop_session("t1")
    assert b.take_session("nope") is None
    assert b.drop_session("t1") and b.take_session("t1") is None


def test_sessions_of_a_reaped_broker_cannot_be_resumed(make_engine: Make) -> None:
    ghost = make_engine(broker_ttl=TTL)
    live = make_engine(broker_ttl=TTL)
    session_on(ghost, "t1", "Alice", ("r1",))
    reports: list[ReapReport] = []

    def reaped() -> bool:
        live.heartbeat()
        report = live.reap(ghost.broker_id)
        reports.extend([report] if report else [])
        return bool(reports)

    eventually(reaped)
    assert reports[0].sessions == ("t1",)
    assert live.take_session("t1") is None
    with pytest.raises(Fenced):
        ghost.save_session(SessionRecord("t2", ghost.broker_id, "x", "x", ()))


def test_a_session_taken_over_before_the_reaper_runs_is_left_alone_by_it(
    make_engine: Make,
) -> None:
    ghost = make_engine(broker_ttl=TTL)
    live = make_engine(broker_ttl=TTL)
    session_on(ghost, "t1", "Alice", ("r1",))
    bob = session_on(ghost, "t2", "Bob", ("r1",))
    eventually(lambda: bool(live.heartbeat() or live.dead_brokers()))
    assert live.take_session("t1") is not None  # Alice's client resumed here in time
    report = live.reap(ghost.broker_id)
    assert report is not None
    assert [m.member for m in report.members] == [bob]
    assert report.nicks == ("bob",) and report.sessions == ("t2",)
    assert live.members("r1") == [Member("alice", "Alice", live.broker_id, "t1")]
    assert live.nick_holder("alice") == (live.broker_id, "t1")
    assert live.take_session("t1") is not None and live.take_session("t2") is None
