"""Profile the broker under one scenario of the benchmark.

``python -m bench.profile [--scenario flood10] [--top 25] [--out FILE.prof]``
(a flood by default; ``join1000`` for clients joining one at a time) runs
``chat-broker`` (default configuration, SQLite history in a temporary file,
``--max-rate 0``) under ``python -m cProfile``, drives it with the load
generator, stops it with SIGTERM (so cProfile writes its statistics), and
prints the top entries by own time and by cumulative time. cProfile slows the
broker down and measures wall time (a function preempted by ZeroMQ's I/O
thread is charged for it), so read the shares, not the absolute times.
"""

from __future__ import annotations

import argparse
import io
import json
import pstats
import shutil
import sys
import tempfile
from pathlib import Path

from bench.run import SCENARIOS, Server, _cores, run_loadgen, start_server


def main(argv: list[str] | None = None) -> int:
    """Run the profile and print the top entries."""
    parser = argparse.ArgumentParser(prog="bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="flood10", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default=None, help="keep the raw profile here")
    args = parser.parse_args(argv)
    scenario = next(s for s in SCENARIOS if s.name == args.scenario)
    server_core, gen_core = _cores()
    workdir = Path(tempfile.mkdtemp(prefix="chat-profile-"))
    prof = Path(args.out) if args.out else workdir / "broker.prof"
    try:
        server: Server = start_server(
            "broker",
            workdir,
            server_core,
            [],
            prefix=[sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "broker"],
        )
        try:
            result = run_loadgen(scenario, server, "chat", gen_core, 180.0)
        finally:
            server.stop()
        print(json.dumps({k: result.get(k) for k in ("deliveries", "lines_accepted", "lost")}))
        for order in ("tottime", "cumulative"):
            text = io.StringIO()
            stats = pstats.Stats(str(prof), stream=text)
            stats.strip_dirs().sort_stats(order).print_stats(args.top)
            print(f"--- top {args.top} by {order}")
            print(text.getvalue().split("\n", 6)[-1] if order == "tottime" else text.getvalue())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
