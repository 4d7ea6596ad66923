"""Fixtures for the cluster-mode engine tests: real redis-server processes
(tests/redis_server.py) and engines on them, each stopped by its own handle."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from broker.engine import EngineSettings, RedisEngine
from tests.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server with AOF (appendfsync always), noeviction, DEBUG allowed."""
    server = RedisServer(tmp_path / "redis", aof=True)
    server.directory.mkdir()
    server.start()
    yield server
    server.kill()


@pytest.fixture
def make_engine(
    redis_server: RedisServer,
) -> Iterator[Callable[..., RedisEngine]]:
    """Make registered engines (as if brokers) on ``redis_server``; closed at the end."""
    made: list[RedisEngine] = []

    def make(register: bool = True, **settings: object) -> RedisEngine:
        options: dict[str, object] = {"timeout": 1.0}
        options.update(settings)
        engine = RedisEngine.connect(redis_server.url, EngineSettings(**options))  # type: ignore[arg-type]
        made.append(engine)
        if register:
            engine.register()
        return engine

    yield make
    for engine in made:
        engine.close()


@pytest.fixture
def zmq_ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    """A context whose sockets never linger; terminated at the end."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    ctx.linger = 0
    yield ctx
    ctx.term()
