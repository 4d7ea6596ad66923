"""The client library's edges: refused and unreachable joins leave nothing
behind (no unretrieved futures, no lost lines at the end of input)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import InProcessBroker

_REFUSED_THEN_UNREACHABLE = textwrap.dedent(
    """
    import asyncio, gc, sys
    from client import AsyncClient, BrokerUnreachable, JoinRefused

    async def main(server):
        client = AsyncClient(server, "x")
        try:
            await client.connect("server")
        except JoinRefused as exc:
            print("refused", exc.code)
        await client.close()
        client = AsyncClient("tcp://127.0.0.1:9", "x")
        try:
            await client.connect(timeout=0.3)
        except BrokerUnreachable:
            print("unreachable")
        await client.close()

    asyncio.run(main(sys.argv[1]))
    gc.collect()
    """
)


def test_failed_joins_leave_no_unretrieved_exception(broker: InProcessBroker) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-c", _REFUSED_THEN_UNREACHABLE, broker.router],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.stdout.split() == ["refused", "nick_invalid", "unreachable"]
    assert "never retrieved" not in result.stderr, result.stderr
