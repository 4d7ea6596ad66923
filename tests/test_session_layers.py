"""The session core's parts depend downwards only (the house rule "small
parts that each own one thing", docs in client/session.py): no part imports
the session, and the imports among them and the session have no cycle. Read from
the source with ``ast``, so a cycle hidden behind a late import counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import client

CLIENT = Path(client.__file__).parent

#: The session core's parts: below client/session.py, beside each other.
PARTS = {
    "events",
    "failover",
    "inbound",
    "joins",
    "lifecycle",
    "link",
    "membership",
    "outbox",
    "outgoing",
    "pacing",
    "presence",
    "reconnect",
    "requests",
    "rooms",
    "sequencer",
}


def _imports() -> dict[str, set[str]]:
    """client module -> the client modules it imports (anywhere in it)."""
    graph: dict[str, set[str]] = {}
    for path in CLIENT.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "client":
                    found |= {alias.name for alias in node.names}
                elif node.module.startswith("client."):
                    found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("client.")}
        graph[path.stem] = found & {p.stem for p in CLIENT.glob("*.py")}
    return graph


def test_every_part_exists_and_none_imports_the_session() -> None:
    graph = _imports()
    assert set(graph) >= PARTS
    assert {part for part in PARTS if "session" in graph[part]} == set()
    assert graph["session"] >= {"inbound", "link", "rooms", "outgoing", "presence", "lifecycle"}


def test_the_session_core_imports_without_a_cycle() -> None:
    core = {*PARTS, "session"}
    graph = {module: imported & core for module, imported in _imports().items() if module in core}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, " -> ".join([*path, module])
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
