"""Client failover end to end (issue 14): two ``chat-broker --engine``
processes on one real Redis; a client given both endpoints talks to A, A is
killed with SIGKILL in the middle of a flood of its keyed lines, and the
client ends up on B within seconds with its nickname and rooms, every line
acknowledged exactly once, in order, at both clients (the shared checker).
The session core's rotation is tested without sockets in
tests/test_session_failover.py."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from broker.cluster import line_of
from broker.engine import EngineSettings, RedisEngine
from client import AsyncClient, Client
from client import events as ev
from client.bot import Bot, Context
from client.session import State
from client.testing import serving
from tests.cluster.checker import Checker
from tests.conftest import BrokerProcess, script, spawn_broker, wait_for
from tests.jsonclient import JsonClient, start_json_client
from tests.redis_server import SCALE, RedisServer

pytestmark = pytest.mark.timeout(60)

#: Lines in the flood; A is killed after half of them.
FLOOD = 200
#: How soon the client must be back, on B (the liveness limit is 1.5 s here).
BACK_WITHIN = 8.0 * SCALE


@pytest.fixture
def brokers(redis_server: RedisServer) -> Iterator[Callable[..., BrokerProcess]]:
    """Start ``chat-broker --engine`` processes (heartbeat 0.5 s unless told,
    so a silent one is noticed in 1.5 s); all stopped at the end."""
    started: list[BrokerProcess] = []

    def start(heartbeat: float = 0.5) -> BrokerProcess:
        # The lease outlives the failover: B's reaper must find nothing of a
        # client that moved (no leave, no join: for the others it never left).
        handle = spawn_broker(
            "--engine",
            redis_server.url,
            "--max-rate",
            "0",
            "--client-timeout",
            f"{max(6.0, 3 * heartbeat):g}",
            "--heartbeat",
            f"{heartbeat:g}",
            "--engine-lease",
            "10",
        )
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop(signal.SIGKILL if handle.proc.poll() is None else signal.SIGTERM)


def _stored(redis_server: RedisServer, room: str) -> list[tuple[int, str]]:
    """(seq, text) of every line the cluster stored in ``room``."""
    engine = RedisEngine.connect(redis_server.url, EngineSettings(timeout=1.0))
    try:
        lines = []
        for entry in engine.fetch(room, 0, None, 100_000, forward=True).lines:
            line = line_of(room, entry.seq, entry.payload)
            assert line is not None
            lines.append((entry.seq, line.text))
        return lines
    finally:
        engine.close()


def _verify(
    redis_server: RedisServer,
    texts: list[str],
    keys: list[str],
    delivered: dict[str, list[dict[str, Any]]],
) -> None:
    """Every line acknowledged (``texts`` with ``keys``) stored exactly once,
    in the order said, and delivered once, in order, to every client."""
    stored = _stored(redis_server, "lobby")
    ours = [(seq, text) for seq, text in stored if text in set(texts)]
    assert [text for _, text in ours] == texts, "not stored exactly once, in order"
    checker = Checker()
    engine = RedisEngine.connect(redis_server.url, EngineSettings(timeout=1.0))
    try:
        for key, (seq, _) in zip(keys, ours, strict=True):
            checker.ack({"key": key, "room": "lobby", "seq": seq})
        for client, lines in delivered.items():
            for line in lines:
                checker.line(client, line)
            got = [line["text"] for line in lines if line["text"] in set(texts)]
            assert got == texts, f"{client}: not every line once, in order"
        checker.verify(engine, ["lobby"])
    finally:
        engine.close()


def _drain(client: Client, into: list[ev.Event], done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20 * SCALE
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        with contextlib.suppress(TimeoutError):
            into.append(client.next_event(0.1))


def _lines(events: list[ev.Event]) -> list[dict[str, Any]]:
    return [
        {"room": e.room, "seq": e.seq, "id": e.id, "text": e.text}
        for e in events
        if isinstance(e, ev.Message) and not e.history
    ]


def _texts(events: list[ev.Event]) -> set[str]:
    return {e.text for e in events if isinstance(e, ev.Message)}


def test_client_fails_over_to_another_broker_mid_flood_losing_and_doubling_nothing(
    brokers: Callable[[], BrokerProcess], redis_server: RedisServer
) -> None:
    a, b = brokers(), brokers()
    alice_seen: list[ev.Event] = []
    bob_seen: list[ev.Event] = []
    with (
        Client([a.router, b.router], "alice", "lobby", backlog=0) as alice,
        Client(f"{b.router},{a.router}", "bob", "lobby", backlog=0) as bob,
    ):
        texts = [f"alice {n}" for n in range(FLOOD)]
        keys = []
        for n, text in enumerate(texts):
            keys.append(alice.say(text))
            if n == FLOOD // 2:
                a.proc.send_signal(signal.SIGKILL)
                killed = time.monotonic()
        # the lines said after the kill cannot have been acknowledged: the
        # client notices A is gone only after the liveness limit, 1.5 s
        assert alice.pending > 0
        _drain(
            alice,
            alice_seen,
            lambda: any(
                isinstance(e, ev.Connection) and e.state == "reconnected" for e in alice_seen
            ),
            "alice back",
        )
        assert time.monotonic() - killed < BACK_WITHIN
        back = [e for e in alice_seen if isinstance(e, ev.Connection)]
        assert back[0] == ev.Connection(state="reconnecting", endpoint=a.router)
        assert back[-1].state == "reconnected" and back[-1].endpoint == b.router
        # the session moved whole: no restart (issue 14's surprise)
        assert back[-1].moved and not back[-1].restarted and back[-1].broker
        assert alice.settle(15 * SCALE), "lines left unacknowledged"
        assert alice.nick == "alice" and alice.rooms == ["lobby"] and alice.server == b.router
        _drain(alice, alice_seen, lambda: _texts(alice_seen) >= set(texts), "alice's lines")
        _drain(bob, bob_seen, lambda: _texts(bob_seen) >= set(texts), "lines at bob")
        assert sorted(bob.who("lobby", wait=True) or []) == ["alice", "bob"]
        # for bob, alice never left
        assert not [e for e in bob_seen if isinstance(e, ev.Leave | ev.Join)]
    _verify(
        redis_server,
        texts,
        keys,
        {"alice": _lines(alice_seen), "bob": _lines(bob_seen)},
    )


def test_a_json_client_with_two_servers_fails_over_and_an_async_client_sees_it_all(
    brokers: Callable[[], BrokerProcess], redis_server: RedisServer
) -> None:
    a, b = brokers(), brokers()
    # carol: chat-client --json with two --server, on A; dave: AsyncClient on B.
    carol = start_json_client(a.router, "carol", "--server", b.router)
    try:
        carol.expect("welcome", timeout=10)

        async def dave_side() -> tuple[list[ev.Event], list[str]]:
            seen: list[ev.Event] = []
            async with AsyncClient([b.router, a.router], "dave", "lobby", backlog=0) as dave:
                texts = [f"carol {n}" for n in range(FLOOD)]
                loop = asyncio.get_running_loop()

                def flood() -> None:
                    for n, text in enumerate(texts):
                        carol.send(text)
                        if n == FLOOD // 2:
                            a.proc.send_signal(signal.SIGKILL)

                await loop.run_in_executor(None, flood)
                deadline = time.monotonic() + 20 * SCALE
                while {e.text for e in seen if isinstance(e, ev.Message)} < set(texts):
                    assert time.monotonic() < deadline, "lines at dave: timed out"
                    with contextlib.suppress(TimeoutError):
                        seen.append(await dave.next_event(0.5))
                return seen, texts

        seen, texts = asyncio.run(dave_side())
        moved = carol.expect(
            "connection", lambda e: e.get("state") == "reconnected", timeout=BACK_WITHIN
        )
        assert moved["endpoint"] == b.router
        # the same session on another broker: said so, not as a restart
        assert moved["moved"] is True and "restarted" not in moved, moved
        assert moved["broker"]
        for text in texts:
            carol.expect("message", lambda e, text=text: e["text"] == text, timeout=10)
        carol.end_input()
        assert carol.wait(10) == 0
        assert not [e for e in carol.log if e.get("type") == "error"], carol.log
        lines = [e for e in carol.log if e.get("type") == "message" and not e.get("history")]
        keys = [f"json-{n}" for n in range(len(texts))]  # keys are the client's own
        _verify(
            redis_server,
            texts,
            keys,
            {
                "carol": [{k: e[k] for k in ("room", "seq", "id", "text")} for e in lines],
                "dave": _lines(seen),
            },
        )
    finally:
        carol.stop()


def test_a_bot_given_two_brokers_answers_again_from_the_other_after_a_kill_9(
    brokers: Callable[[], BrokerProcess],
) -> None:
    a, b = brokers(), brokers()
    bot = Bot([a.router, b.router], "echo", ["lobby"])

    @bot.command("echo")
    def echo(ctx: Context) -> str:
        return ctx.args

    async def scenario() -> None:
        async with serving(bot), AsyncClient(b.router, "erin", "lobby", backlog=0) as erin:
            a.proc.send_signal(signal.SIGKILL)
            deadline = time.monotonic() + BACK_WITHIN
            while not (
                bot.client is not None
                and bot.client.server == b.router
                and bot.client.session.state is State.JOINED
            ):
                assert time.monotonic() < deadline, "the bot did not move to B"
                await asyncio.sleep(0.05)
            await erin.say("!echo still here")
            deadline = time.monotonic() + 10 * SCALE
            while True:
                assert time.monotonic() < deadline, "no answer from the bot"
                with contextlib.suppress(TimeoutError):
                    event = await erin.next_event(0.5)
                    if isinstance(event, ev.Message) and event.nick == "echo":
                        assert event.text == "still here"
                        break

    asyncio.run(scenario())


def test_a_client_of_a_killed_broker_fails_over_at_once_not_after_three_heartbeats(
    brokers: Callable[..., BrokerProcess],
) -> None:
    # 5 s heartbeats: silence would take 15 s to call A dead; its closed
    # connection (kill -9) tells at once (client/handshake.py).
    heartbeat = 5.0
    a, b = brokers(heartbeat), brokers(heartbeat)
    with Client([a.router, b.router], "alice", "lobby", backlog=0) as alice:
        a.stop(signal.SIGKILL)
        killed = time.monotonic()
        seen: list[ev.Connection] = []
        while not seen or seen[-1].state != "reconnected":
            seen.append(wait_for(alice, ev.Connection, timeout=heartbeat))
        took = time.monotonic() - killed
        assert [c.state for c in seen] == ["reconnecting", "reconnected"]
        assert seen[-1].endpoint == b.router and seen[-1].moved
        assert took < heartbeat * SCALE, f"back on B after {took:.1f} s"
        alice.say("from B")
        assert wait_for(alice, ev.Message).text == "from B"


def test_a_stopped_broker_closes_nothing_and_is_still_left_after_three_silent_heartbeats(
    brokers: Callable[..., BrokerProcess],
) -> None:
    # SIGSTOP keeps A's connections open: no drop to see, only silence.
    a, b = brokers(), brokers()
    with Client([a.router, b.router], "alice", "lobby", backlog=0) as alice:
        a.proc.send_signal(signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            lost = wait_for(alice, ev.Connection, timeout=5)
            took = time.monotonic() - stopped
            assert lost.state == "reconnecting" and lost.endpoint == a.router
            # Three heartbeats of 0.5 s after the last pong (at most one
            # heartbeat before the stop), or it was no silence.
            assert took >= 0.9, f"left after {took:.2f} s: not by silence"
            back = wait_for(alice, ev.Connection, timeout=10)
            assert back.state == "reconnected" and back.endpoint == b.router
        finally:
            a.proc.send_signal(signal.SIGCONT)


@contextlib.contextmanager
def _alice_on_a_bob_on_b(
    redis_server: RedisServer,
) -> Iterator[tuple[BrokerProcess, BrokerProcess, JsonClient, JsonClient]]:
    """Brokers A and B as docs/CLUSTER.md starts them (only ``--engine``),
    bob's JSON client on B and alice's on A with B as her second server,
    both welcomed."""
    a = spawn_broker("--engine", redis_server.url)
    b = spawn_broker("--engine", redis_server.url)
    bob = start_json_client(b.router, "bob")
    alice = None
    try:
        bob.expect("welcome", timeout=10)
        alice = start_json_client(a.router, "alice", "--server", b.router)
        alice.expect("welcome", timeout=10)
        yield a, b, alice, bob
    finally:
        if alice is not None:
            alice.stop()
        bob.stop()
        a.stop(signal.SIGKILL)
        b.stop(signal.SIGKILL)


def test_with_the_default_settings_a_client_moves_before_its_dead_broker_is_reaped(
    redis_server: RedisServer,
) -> None:
    """The brokers as docs/CLUSTER.md starts them (only ``--engine``): a
    client of a broker killed -9 must notice and resume elsewhere before the
    broker's lease runs out, or the reaper drops its session first and the
    others see it leave and join again (found trying the docs by hand: with
    a 2 s heartbeat the client noticed after 6 s, the 5 s lease had won)."""
    with _alice_on_a_bob_on_b(redis_server) as (a, _, alice, bob):
        bob.expect("join", lambda e: e["nick"] == "alice", timeout=10)
        assert redis_server.client().zcard("zc:brokers") == 2
        a.stop(signal.SIGKILL)
        back = alice.expect(
            "connection", lambda e: e.get("state") == "reconnected", timeout=BACK_WITHIN
        )
        assert back.get("moved") is True and "restarted" not in back, back
        alice.send("still here")
        bob.expect("message", lambda e: e["text"] == "still here", timeout=10)
        # A's lease runs out and B's reaper removes it: it must find nothing.
        deadline = time.monotonic() + 15 * SCALE
        while redis_server.client().zcard("zc:brokers") > 1:
            assert time.monotonic() < deadline, "the dead broker was never reaped"
            time.sleep(0.1)
        bob.send("/who")
        who = bob.expect("who", timeout=10)
        assert sorted(who["members"]) == ["alice", "bob"]
        seen = [(e["type"], e["nick"]) for e in bob.log if e.get("type") in ("join", "leave")]
        assert seen == [("join", "alice")]


def test_a_piped_json_client_of_a_cluster_prints_its_own_line_before_it_ends(
    redis_server: RedisServer,
) -> None:
    """`printf 'hi\\n' | chat-client --json` (the README's first example) on a
    cluster: the ack comes before the line's broadcast, which goes through
    Redis; ending at the ack lost the line's event now and then."""
    a = spawn_broker("--engine", redis_server.url)
    try:
        for n in range(8):
            done = subprocess.run(
                [script("chat-client"), "--json", "--nick", f"s{n}", "--server", a.router],
                input=f"hello {n}\n",
                capture_output=True,
                text=True,
                timeout=30 * SCALE,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            assert f'"text":"hello {n}"' in done.stdout, done.stdout
    finally:
        a.stop(signal.SIGKILL)


def test_a_client_whose_broker_dies_while_redis_is_down_waits_and_moves_when_it_is_back(
    redis_server: RedisServer,
) -> None:
    """Two faults at once (found by hand): Redis down, then the client's
    broker killed -9. The broker it turns to cannot take the session over
    and refuses the resume as `unavailable`; that is retryable, so the
    client keeps trying and moves once Redis is back, its line delivered."""
    with _alice_on_a_bob_on_b(redis_server) as (a, b, alice, bob):
        redis_server.kill()
        a.stop(signal.SIGKILL)
        alice.send("said while everything was down")
        alice.expect("connection", lambda e: e.get("state") == "reconnecting", timeout=10)
        # Down long enough for the client's back-off to grow to its 4 s: it
        # must still come back before the reaper drops its session.
        deadline = time.monotonic() + 20 * SCALE
        while sum("refused hello: engine" in line for line in b.log) < 4:
            assert time.monotonic() < deadline, "".join(b.log)
            time.sleep(0.05)
        redis_server.restart()
        back = alice.expect(
            "connection", lambda e: e.get("state") == "reconnected", timeout=BACK_WITHIN
        )
        assert back.get("moved") is True, back
        bob.expect("message", lambda e: e["text"] == "said while everything was down", timeout=15)
        alice.end_input()
        assert alice.wait(20) == 0
        assert not [e for e in alice.log if e.get("type") == "error"], alice.log


@pytest.mark.parametrize("mode", ["--json", "--plain"])
def test_a_client_started_while_redis_is_down_says_so_and_exits_1_not_refused(
    redis_server: RedisServer, mode: str
) -> None:
    # Found by hand: exit status 2 ("refused": bad option, nickname, keys)
    # for what is passing, as an unreachable broker is (status 1).
    a = spawn_broker("--engine", redis_server.url)
    try:
        redis_server.kill()
        done = subprocess.run(
            [script("chat-client"), mode, "--nick", "early", "--server", a.router],
            input="",
            capture_output=True,
            text=True,
            timeout=30 * SCALE,
            check=False,
        )
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "unavailable" in done.stdout and "Traceback" not in done.stderr
    finally:
        a.stop(signal.SIGKILL)
