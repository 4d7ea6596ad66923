"""The suite checks the document, not our code against itself: it must not
import our protocol or client packages (docs/CONFORMANCE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import zmq

from tests.conformance.conftest import _Spawned
from tests.conformance.rawchat import RawClient, unique_nick

HERE = Path(__file__).resolve().parent
FORBIDDEN = {"protocol", "client", "broker", "msgspec"}


def test_suite_imports_nothing_of_our_implementation() -> None:
    for path in sorted(HERE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_own_spawner_starts_and_stops_a_broker(zmq_context: zmq.Context[zmq.Socket[bytes]]) -> None:
    """The fallback used when tests.conftest is not importable (a copied suite)."""
    spawned = _Spawned("--history", ":memory:")
    try:
        client = RawClient(zmq_context, spawned.router, None)
        try:
            client.join(unique_nick("spawned"))
        finally:
            client.close()
    finally:
        spawned.stop()
    assert spawned.proc.returncode == 0
