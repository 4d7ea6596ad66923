"""The engine package's exports, and SQLite mode never loading Redis."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import broker.engine


def test_every_export_exists() -> None:
    for name in broker.engine.__all__:
        assert hasattr(broker.engine, name), name


def test_the_broker_without_an_engine_never_imports_redis() -> None:
    code = "import sys, broker, broker.cli, broker.server; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_engine_imports_only_itself_of_this_project() -> None:
    """The wire format and the broker's core are not the engine's business:
    it stores opaque payloads (docs/CLUSTER.md)."""
    package = Path(broker.engine.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in {"protocol", "client", "broker"}:
                    assert name.startswith("broker.engine"), f"{path.name} imports {name}"
