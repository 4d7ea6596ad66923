"""The bot framework (client/bot.py) and its test helpers (client/testing.py):
pure parts without sockets, dispatch through the harness, then real brokers."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from broker.testing import running_broker
from client import events as ev
from client.aio import AsyncClient
from client.bot import Bot, Context, RateLimiter, Sent, split_text
from client.testing import BotHarness, serving
from protocol import MAX_TEXT_BYTES, ProtocolError
from tests.conftest import SCALE, spawn_broker

# --- splitting long text -------------------------------------------------------


def _sizes(pieces: list[str]) -> list[int]:
    return [len(p.encode("utf-8")) for p in pieces]


def test_short_text_is_one_piece() -> None:
    assert split_text("hello") == ["hello"]
    assert split_text("x" * MAX_TEXT_BYTES) == ["x" * MAX_TEXT_BYTES]


def test_long_text_is_cut_at_white_space() -> None:
    words = [f"word{i}" for i in range(2000)]
    text = " ".join(words)
    pieces = split_text(text)
    assert len(pieces) > 1
    assert max(_sizes(pieces)) <= MAX_TEXT_BYTES
    # Cut only between words: nothing lost, nothing broken.
    assert " ".join(pieces) == text
    assert all(not p.startswith(" ") and not p.endswith(" ") for p in pieces)


def test_text_without_white_space_is_cut_at_the_limit() -> None:
    text = "a" * (2 * MAX_TEXT_BYTES + 10)
    assert _sizes(split_text(text)) == [MAX_TEXT_BYTES, MAX_TEXT_BYTES, 10]


@pytest.mark.parametrize("char", ["é", "€", "😀"])
def test_multibyte_characters_are_never_cut(char: str) -> None:
    text = "a" + char * 3000  # the limit falls inside a character for each width
    pieces = split_text(text)
    assert "".join(pieces) == text
    assert max(_sizes(pieces)) <= MAX_TEXT_BYTES
    assert min(_sizes(pieces[:-1])) > MAX_TEXT_BYTES - len(char.encode("utf-8"))


def test_white_space_only_pieces_are_dropped_and_bad_text_refused() -> None:
    assert split_text("   ") == []
    assert split_text("x" * MAX_TEXT_BYTES + " " + " " * 10) == ["x" * MAX_TEXT_BYTES]
    with pytest.raises(ProtocolError):
        split_text("bad \ud800 surrogate")


def test_a_smaller_limit_is_respected() -> None:
    assert split_text("aaa bbb ccc", limit=7) == ["aaa bbb", "ccc"]


# --- the token bucket, with time as a parameter -----------------------------------


def test_rate_limiter_allows_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(5.0, 10)  # margin 0.9: 4.5 lines/s, bursts of 9
    assert [limiter.reserve(100.0) for _ in range(9)] == [0.0] * 9
    assert limiter.reserve(100.0) == pytest.approx(1 / 4.5)
    assert limiter.reserve(100.0) == pytest.approx(2 / 4.5)
    # A second later 4.5 tokens came back, two were owed: 2.5 lines go at once.
    assert limiter.reserve(101.0) == 0.0
    assert limiter.reserve(101.0) == 0.0
    assert limiter.reserve(101.0) > 0.0


def test_rate_limiter_refills_up_to_its_capacity_only() -> None:
    limiter = RateLimiter(2.0, 3, margin=1.0)  # burst 3 - 1 = 2 at once
    assert [limiter.reserve(0.0) for _ in range(2)] == [0.0, 0.0]
    assert limiter.reserve(0.0) == pytest.approx(0.5)
    later = [limiter.reserve(1000.0) for _ in range(3)]
    assert later[:2] == [0.0, 0.0] and later[2] > 0


def test_rate_limiter_off_and_penalty() -> None:
    assert all(RateLimiter(0.0, 0).reserve(0.0) == 0.0 for _ in range(100))
    limiter = RateLimiter(10.0, 10, margin=1.0)
    limiter.penalize(5.0)
    assert limiter.reserve(5.0) == pytest.approx(0.1)


def test_max_rate_is_the_bots_only_pacing_of_its_own() -> None:
    # Without max_rate the bot has no bucket: the session core paces its lines.
    assert Bot("tcp://127.0.0.1:1", "plain").limiter is None
    limiter = Bot("tcp://127.0.0.1:1", "capped", max_rate=2.0).limiter
    assert limiter is not None
    # Exactly max_rate, evenly spaced: no margin, no burst.
    assert [limiter.reserve(10.0) for _ in range(3)] == [0.0, 0.5, 1.0]
    assert limiter.reserve(12.0) == 0.0
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            Bot("tcp://127.0.0.1:1", "capped", max_rate=bad)


# --- dispatch through the harness -----------------------------------------------------


def _dice_like_bot(**options: object) -> Bot:
    bot = Bot("tcp://127.0.0.1:1", "helper", ["lobby", "dev"], **options)  # type: ignore[arg-type]

    @bot.command("echo", help="say it back")
    def echo(ctx: Context) -> None:
        ctx.reply(ctx.args)

    @bot.command("argv")
    async def argv(ctx: Context) -> str:
        await asyncio.sleep(0)
        return "|".join(ctx.argv) + f" from {ctx.nick} in {ctx.room}"

    @bot.command("whisper")
    async def whisper(ctx: Context) -> None:
        await ctx.reply_private("psst")

    return bot


def test_commands_reach_their_handlers_with_args() -> None:
    harness = BotHarness(_dice_like_bot())
    [reply] = harness.say_sync("alice", "!echo hello   world ")
    assert (reply.kind, reply.target, reply.text) == ("room", "lobby", "hello   world")
    [reply] = harness.say_sync("alice", "!ARGV a  b c", room="dev")
    assert (reply.target, reply.text) == ("dev", "a|b|c from alice in dev")
    [reply] = harness.say_sync("alice", "!whisper")
    assert (reply.kind, reply.target, reply.text) == ("private", "alice", "psst")


def test_lines_that_are_not_commands_are_left_alone() -> None:
    harness = BotHarness(_dice_like_bot())
    for text in ["echo hi", "!nosuch thing", "!", "! echo", "hi !echo x"]:
        assert harness.say_sync("alice", text) == []
    assert harness.sent == []


def test_a_private_command_is_answered_privately() -> None:
    harness = BotHarness(_dice_like_bot())
    [reply] = harness.private_sync("bob", "!echo secret")
    assert (reply.kind, reply.target, reply.text) == ("private", "bob", "secret")


def test_own_lines_and_history_are_ignored_by_default() -> None:
    harness = BotHarness(_dice_like_bot())
    assert harness.say_sync("helper", "!echo loop") == []
    assert harness.say_sync("HELPER", "!echo loop") == []  # nicknames ignore case
    assert harness.private_sync("helper", "!echo loop") == []
    assert harness.say_sync("alice", "!echo old", history=True) == []
    assert harness.sent == []


def test_own_lines_and_history_can_be_answered_when_asked() -> None:
    harness = BotHarness(_dice_like_bot(answer_self=True, answer_history=True))
    assert [s.text for s in harness.say_sync("helper", "!echo me")] == ["me"]
    assert [s.text for s in harness.say_sync("alice", "!echo old", history=True)] == ["old"]


def test_the_prefix_is_configurable() -> None:
    harness = BotHarness(_dice_like_bot(prefix="."))
    assert harness.say_sync("alice", "!echo no") == []
    assert [s.text for s in harness.say_sync("alice", ".echo yes")] == ["yes"]
    assert harness.bot.help_text() == "commands: .argv, .echo (say it back), .whisper"


def test_event_handlers_get_joins_leaves_privates_messages_mentions() -> None:
    bot = Bot("tcp://127.0.0.1:1", "robo")
    seen: list[str] = []

    @bot.on_message
    def message(ctx: Context) -> None:
        seen.append(f"message {ctx.nick}: {ctx.text}")

    @bot.on_join
    async def join(ctx: Context) -> str:
        return f"welcome {ctx.nick}"

    @bot.on_leave
    def leave(ctx: Context) -> None:
        assert isinstance(ctx.event, ev.Leave)
        seen.append(f"leave {ctx.nick} {ctx.event.reason}")

    @bot.on_private
    def private(ctx: Context) -> None:
        seen.append(f"private {ctx.nick}: {ctx.text} {ctx.private}")

    @bot.on_mention
    def mention(ctx: Context) -> None:
        seen.append(f"mention {ctx.text}")

    harness = BotHarness(bot)
    [hello] = harness.join_sync("carol")
    assert (hello.target, hello.text) == ("lobby", "welcome carol")
    harness.leave_sync("carol", reason="timeout")
    harness.private_sync("dave", "hi")
    harness.say_sync("erin", "Robo: are you there?")
    harness.say_sync("erin", "robotics is fun, robo_x too")
    assert seen == [
        "leave carol timeout",
        "private dave: hi True",
        "message erin: Robo: are you there?",
        "mention Robo: are you there?",
        "message erin: robotics is fun, robo_x too",
    ]


def test_a_long_reply_is_split() -> None:
    bot = Bot("tcp://127.0.0.1:1", "talker")

    @bot.command("long")
    def long(ctx: Context) -> str:
        return "ünïcødé " * 1000  # 12,000 bytes

    sent = BotHarness(bot).say_sync("alice", "!long")
    assert len(sent) == 3
    assert all(len(s.text.encode()) <= MAX_TEXT_BYTES for s in sent)
    assert " ".join(s.text for s in sent) == "ünïcødé " * 1000


def test_handler_exceptions_are_logged_and_the_bot_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = Bot("tcp://127.0.0.1:1", "fragile")

    @bot.command("boom")
    def boom(ctx: Context) -> None:
        raise ValueError("kaboom")

    @bot.on_message
    async def first(ctx: Context) -> None:
        raise RuntimeError("async kaboom")

    @bot.command("ok")
    def ok(ctx: Context) -> str:
        return "fine"

    harness = BotHarness(bot)
    with caplog.at_level(logging.ERROR, logger="client.bot"):
        assert harness.say_sync("alice", "!boom") == []
        assert [s.text for s in harness.say_sync("alice", "!ok")] == ["fine"]
    failures = [r for r in caplog.records if r.name == "client.bot"]
    assert any("kaboom" in str(r.exc_info[1]) for r in failures if r.exc_info)
    assert any("async kaboom" in str(r.exc_info[1]) for r in failures if r.exc_info)
    assert any("boom" in r.getMessage() for r in failures)


def test_empty_replies_are_refused_not_sent() -> None:
    bot = Bot("tcp://127.0.0.1:1", "quiet")
    outcome: list[BaseException | None] = []

    @bot.command("blank")
    async def blank(ctx: Context) -> None:
        try:
            await ctx.reply("   ")
        except ProtocolError as exc:
            outcome.append(exc)

    assert BotHarness(bot).say_sync("alice", "!blank") == []
    assert len(outcome) == 1 and isinstance(outcome[0], ProtocolError)


def test_bad_names_are_refused_at_construction() -> None:
    with pytest.raises(ProtocolError):
        Bot("tcp://127.0.0.1:1", "bad nick")
    with pytest.raises(ProtocolError):
        Bot("tcp://127.0.0.1:1", "ok", ["Bad Room"])
    with pytest.raises(ValueError):
        Bot("tcp://127.0.0.1:1", "ok").command("two words")


# --- against real brokers --------------------------------------------------------------


async def _next_line(client: AsyncClient, nick: str, timeout: float = 5.0) -> ev.Message:
    deadline = time.monotonic() + timeout * SCALE
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no line from {nick} within {timeout} s")
        try:
            event = await client.next_event(left)
        except TimeoutError:
            continue
        if isinstance(event, ev.Message) and event.nick == nick:
            return event


def _echo_bot(server: str, **options: object) -> Bot:
    bot = Bot(server, "echo", ["lobby"], **options)  # type: ignore[arg-type]

    @bot.command("echo")
    def echo(ctx: Context) -> str:
        return ctx.args

    return bot


def test_bot_answers_over_an_in_process_broker() -> None:
    async def scenario(router: str) -> None:
        bot = _echo_bot(router)
        async with serving(bot), AsyncClient(router, "alice") as alice:
            await alice.say("!echo hello there")
            line = await _next_line(alice, "echo")
            assert (line.room, line.text) == ("lobby", "hello there")
            # The welcome's limits reach the session, which paces; the bot adds none.
            assert bot.client is not None and bot.client.session.limits is not None
            assert bot.client.session.limits.rate == pytest.approx(5.0)
            assert bot.limiter is None

    with running_broker() as broker:
        asyncio.run(scenario(broker.router))


def _spam_command(bot: Bot, count: int) -> None:
    """``!spam`` makes ``bot`` reply with ``count`` numbered lines at once."""

    @bot.command("spam")
    def spam(ctx: Context) -> None:
        for i in range(count):
            ctx.reply(f"line {i}")


def test_the_bot_keeps_under_the_brokers_rate() -> None:
    count = 30

    async def scenario(router: str) -> None:
        bot = Bot(router, "chatty", ["lobby"])
        _spam_command(bot, count)

        async with serving(bot), AsyncClient(router, "alice") as alice:
            await alice.say("!spam")
            lines = [await _next_line(alice, "chatty", 10) for _ in range(count)]
            errors = []
            with pytest.raises(TimeoutError):
                errors.append(await alice.next_event(0.2))
        assert [line.text for line in lines] == [f"line {i}" for i in range(count)]
        # On the broker's own clock, not ours (a loaded machine may wake us
        # after the first lines are in): each line's ts is the instant its
        # bucket (20 lines/s, bursts of 5) took the token, so all 30 passed
        # flood control only if the last came (30 - 5) / 20 = 1.25 s after the
        # first, to a hair of float slack.
        assert lines[-1].ts - lines[0].ts >= (count - 5) / 20 - 1e-6
        assert not errors

    with running_broker(max_rate=20, burst=5) as broker:
        asyncio.run(scenario(broker.router))


def test_a_burst_is_handed_to_the_session_at_once_and_paced_there_only() -> None:
    # The session paces every line under the broker's limits; a bot that paced
    # them too would hand them over only as fast as they can go out, so by the
    # time its futures resolve the session would hold (almost) nothing unsent.
    count = 30
    handed: list[asyncio.Future[None]] = []
    queued = asyncio.Event()

    async def scenario(router: str) -> None:
        bot = Bot(router, "burst", ["lobby"])

        @bot.command("spam")
        def spam(ctx: Context) -> None:
            handed.extend(ctx.reply(f"line {i}") for i in range(count))
            queued.set()

        async with serving(bot), AsyncClient(router, "alice") as alice:
            await alice.say("!spam")
            await asyncio.wait_for(queued.wait(), 5 * SCALE)
            await asyncio.wait_for(asyncio.gather(*handed), 5 * SCALE)
            assert bot.client is not None
            # 10 lines/s and bursts of 3 at the broker: the session sends 2 at
            # once and 9 a second after that, so about 3 s of lines are waiting.
            assert bot.client.session.unacked >= count // 2
            texts = [(await _next_line(alice, "burst", 10)).text for _ in range(count)]
            errors = []
            with pytest.raises(TimeoutError):
                errors.append(await alice.next_event(0.2))
        assert texts == [f"line {i}" for i in range(count)]
        assert not errors

    with running_broker(max_rate=10, burst=3) as broker:
        asyncio.run(scenario(broker.router))


class _CountingLimiter(RateLimiter):
    def __init__(self, rate: float) -> None:
        super().__init__(rate, 1, margin=1.0)
        self.reserved = 0

    def reserve(self, now: float) -> float:
        self.reserved += 1
        return super().reserve(now)


def test_max_rate_paces_each_line_the_bot_hands_over() -> None:
    count = 5

    async def scenario(router: str) -> None:
        bot = Bot(router, "capped", ["lobby"], max_rate=50.0)
        counting = bot.limiter = _CountingLimiter(50.0)
        _spam_command(bot, count)

        async with serving(bot), AsyncClient(router, "alice") as alice:
            await alice.say("!spam")
            texts = [(await _next_line(alice, "capped", 10)).text for _ in range(count)]
        assert texts == [f"line {i}" for i in range(count)]
        assert counting.reserved == count

    with running_broker(max_rate=100, burst=10) as broker:
        asyncio.run(scenario(broker.router))


def test_bot_joins_afresh_when_its_session_ends() -> None:
    async def scenario(router: str) -> None:
        bot = _echo_bot(router)
        async with serving(bot), AsyncClient(router, "alice") as alice:
            first = bot.client
            assert first is not None
            await first.close()  # as if the broker had refused to take the bot back
            deadline = time.monotonic() + 10 * SCALE
            while bot.client is None or bot.client is first or bot.client.rooms != ["lobby"]:
                assert time.monotonic() < deadline, "the bot did not join again"
                await asyncio.sleep(0.02)
            await alice.say("!echo again")
            assert (await _next_line(alice, "echo")).text == "again"

    with running_broker() as broker:
        asyncio.run(scenario(broker.router))


@pytest.mark.timeout(60 * SCALE)
def test_bot_rejoins_a_restarted_broker_on_the_same_endpoints() -> None:
    flags = ("--heartbeat", "0.3", "--client-timeout", "2")
    first = spawn_broker(*flags)
    second = None
    try:

        async def scenario() -> None:
            nonlocal second
            bot = _echo_bot(first.router)
            async with serving(bot):
                first.stop()
                second = spawn_broker(*flags, router=first.router, pub=first.pub)
                async with AsyncClient(first.router, "alice") as alice:
                    # The bot finds the new broker by itself; keep asking until it answers.
                    deadline = time.monotonic() + 20 * SCALE
                    while True:
                        assert time.monotonic() < deadline, "the bot never came back"
                        await alice.say("!echo are you back?")
                        try:
                            line = await _next_line(alice, "echo", 1.0)
                            break
                        except AssertionError:
                            continue
                    assert line.text == "are you back?"
                    assert bot.rooms == ["lobby"]

        asyncio.run(scenario())
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_on_topic_runs_for_changes_only() -> None:
    bot = Bot(nick="topicbot", rooms=["lobby"])

    @bot.on_topic
    def topic(ctx: Context) -> str:
        return f"new topic from {ctx.nick}: {ctx.text}"

    harness = BotHarness(bot)

    async def run() -> tuple[list[Sent], list[Sent]]:
        asked = await harness.feed(ev.Topic(room="lobby", text="old", nick="bob"))
        changed = await harness.feed(
            ev.Topic(room="lobby", text="plans", nick="bob", ts=1.0, changed=True)
        )
        return asked, changed

    asked, changed = asyncio.run(run())
    assert asked == []
    assert [s.text for s in changed] == ["new topic from bob: plans"]
    assert changed[0].target == "lobby"


def test_a_bot_sets_a_topic_and_goes_away() -> None:
    async def scenario(router: str) -> tuple[ev.Topic, ev.Away]:
        bot = Bot(router, "awaybot", ["lobby"])
        async with AsyncClient(router, "watcher") as watcher, serving(bot):
            await bot.set_topic("bots welcome")
            await bot.set_away("only answering commands")
            topic: ev.Topic | None = None
            away: ev.Away | None = None
            while topic is None or away is None:
                event = await watcher.next_event(5 * SCALE)
                if isinstance(event, ev.Topic):
                    topic = event
                elif isinstance(event, ev.Away):
                    away = event
            return topic, away

    with running_broker() as broker:
        topic, away = asyncio.run(scenario(broker.router))
    assert (topic.text, topic.nick, topic.changed) == ("bots welcome", "awaybot", True)
    assert (away.nick, away.text) == ("awaybot", "only answering commands")
