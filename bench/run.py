"""Run the benchmark: every scenario against our broker and the two baselines.

``python -m bench.run [--smoke] [--runs N] [--scenarios NAME ...] [--out DIR]``
(``make bench ARGS=...``). For each run, scenario and server it starts the
server as its own process (our ``chat-broker`` with its default configuration:
SQLite history in a temporary file, acknowledgements, validation; only flood
control is off, ``--max-rate 0``, since the scenarios flood on purpose) and the
load generator (bench/loadgen.py) as one other process, each pinned to a core
of its own where the machine has two. It prints a table of medians with each
figure as a ratio to the minimal Python forwarder, says where the generator
rather than the server was the bottleneck, checks the targets of issues 7 and
16, and writes every raw result to ``DIR/bench-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Scenario:
    """One load: ``clients`` joined, ``senders`` of them sending."""

    name: str
    clients: int
    senders: int
    duration: float = 0.0
    rate: float = 0.0  # lines/s in all; 0 floods (bounded by the window)
    window: int = 100  # lines in flight per sender
    what: str = ""
    #: Clients join one after another, each waiting for its joined.
    sequential: bool = False


SCENARIOS = [
    Scenario("flood10", 10, 10, 3.0, window=100, what="flood, 10 clients all sending"),
    Scenario("flood100", 100, 10, 3.0, window=50, what="flood, 100 clients, 10 sending"),
    Scenario("flood500", 500, 5, 3.0, window=20, what="flood, 500 clients, 5 sending"),
    Scenario("paced100", 100, 100, 4.0, rate=500, window=50, what="500 lines/s over 100 clients"),
    Scenario("idle1000", 1000, 0, what="1000 idle joined clients"),
    Scenario("join1000", 1000, 0, sequential=True, what="1000 clients joining one at a time"),
]
SMOKE = [
    Scenario("flood10", 4, 4, 0.3, window=20, what="flood, 4 clients all sending"),
    Scenario("flood100", 12, 3, 0.3, window=20, what="flood, 12 clients, 3 sending"),
    Scenario("flood500", 20, 2, 0.3, window=20, what="flood, 20 clients, 2 sending"),
    Scenario("paced100", 10, 10, 0.4, rate=100, window=20, what="100 lines/s over 10 clients"),
    Scenario("idle1000", 30, 0, what="30 idle joined clients"),
    Scenario("join1000", 30, 0, sequential=True, what="30 clients joining one at a time"),
]
TARGETS = ["forwarder", "proxy", "broker"]
#: Not run by default: the forwarder on asyncio, to price the event loop.
EXTRA_TARGETS = ["forwarder-asyncio"]

#: Figures shown in the table: (key, label, format).
FIGURES: list[tuple[str, str, str]] = [
    ("cpu_us_per_delivery", "server CPU µs/delivery", "{:.3f}"),
    ("cpu_us_per_line", "server CPU µs/line", "{:.2f}"),
    ("main_cpu_us_per_line", "main thread CPU µs/line", "{:.2f}"),
    ("deliveries_per_s", "deliveries/s", "{:,.0f}"),
    ("lines_per_s", "accepted lines/s", "{:,.0f}"),
    ("latency_p50_ms", "latency p50 ms", "{:.2f}"),
    ("latency_p99_ms", "latency p99 ms", "{:.2f}"),
    ("latency_max_ms", "latency max ms", "{:.2f}"),
    ("rss_per_client_kib", "server RSS KiB/client", "{:.1f}"),
    ("join_s", "join time s", "{:.3f}"),
    ("join_cpu_ms_10", "CPU ms/join @10 members", "{:.3f}"),
    ("join_cpu_ms_100", "CPU ms/join @100", "{:.3f}"),
    ("join_cpu_ms_1000", "CPU ms/join @1000", "{:.3f}"),
    ("join_main_ms_10", "main thr ms/join @10", "{:.3f}"),
    ("join_main_ms_100", "main thr ms/join @100", "{:.3f}"),
    ("join_main_ms_1000", "main thr ms/join @1000", "{:.3f}"),
    ("join_wall_ms_10", "wall ms/join @10", "{:.2f}"),
    ("join_wall_ms_100", "wall ms/join @100", "{:.2f}"),
    ("join_wall_ms_1000", "wall ms/join @1000", "{:.2f}"),
    ("idle_cpu_ms_per_s_10", "idle CPU ms/s @10", "{:.2f}"),
    ("idle_cpu_ms_per_s_100", "idle CPU ms/s @100", "{:.2f}"),
    ("idle_cpu_ms_per_s_1000", "idle CPU ms/s @1000", "{:.2f}"),
    ("frame_cpu_ms_10", "CPU ms/frame fanned @10", "{:.3f}"),
    ("frame_cpu_ms_100", "CPU ms/frame fanned @100", "{:.3f}"),
    ("frame_cpu_ms_1000", "CPU ms/frame fanned @1000", "{:.3f}"),
    ("server_util", "server CPU share", "{:.0%}"),
    ("gen_util", "generator CPU share", "{:.0%}"),
]
#: Must be zero in every run.
FAULTS = ["lost", "duplicated", "out_of_order"]

#: Issues 7 and 16's targets: (scenario, figure, most broker/forwarder ratio, note).
GOALS: list[tuple[str, str, float, str]] = [
    ("flood10", "cpu_us_per_delivery", 2.0, "ngIRCd ~1.0 µs, forwarder ~0.64 µs"),
    ("flood100", "cpu_us_per_delivery", 1.5, "ngIRCd ~0.61 µs, InspIRCd ~0.33 µs"),
    ("paced100", "latency_p99_ms", 1.5, ""),
    ("idle1000", "rss_per_client_kib", 1.3, "forwarder ~51 kB"),
    ("join1000", "rss_per_client_kib", 1.2, "issue 16: joined one at a time"),
    ("paced100", "latency_p99_ms", 1.3, "issue 16"),
    ("flood10", "cpu_us_per_delivery", 1.5, "issue 16: the per-line cost in small rooms"),
    ("flood100", "cpu_us_per_delivery", 0.8, "issue 16"),
    ("flood500", "cpu_us_per_delivery", 0.8, "issue 16"),
]
#: Issue 16: the broker's own CPU per join at the largest room size measured
#: may be at most this many times its own CPU per join at 10 members; "own":
#: less the fan-out of the one join notice and the members' pings meanwhile
#: (see join_own_ms).
JOIN_FLAT = 2.0
REFERENCE_US = {"flood10": 1.0, "flood100": 0.61}  # ngIRCd, µs per delivery
JOIN_LIMIT_S = 3.0


# --- processes ---------------------------------------------------------------


def _cores() -> tuple[int | None, int | None]:
    """A core for the server and another for the generator, if there are two."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def _pinned(core: int | None) -> Callable[[], None] | None:
    if core is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {core})

    return pin


def _broker_command() -> list[str]:
    script = Path(sys.executable).parent / "chat-broker"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "broker"]


@dataclass
class Server:
    """A server under test, running."""

    proc: subprocess.Popen[bytes]
    router: str
    pub: str
    log: Path

    @property
    def pids(self) -> str:
        """The process ids the generator measures (bench/loadgen.py --server-pid)."""
        return str(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start_server(
    target: str,
    workdir: Path,
    core: int | None,
    extra: list[str],
    prefix: list[str] | None = None,
) -> Server:
    """Start ``target`` on ephemeral ports and read back its endpoints;
    ``prefix`` replaces the broker's command (bench/profile.py runs it under cProfile)."""
    any_port = ["--router", "tcp://127.0.0.1:*", "--pub", "tcp://127.0.0.1:*"]
    if target == "broker":
        history = workdir / "history.sqlite3"
        command = [*(prefix or _broker_command()), *any_port]
        command += ["--history", str(history), "--max-rate", "0"]
    else:
        module = target.replace("-", "_")
        command = [sys.executable, "-m", f"bench.{module}", *any_port]
    command += extra
    log = workdir / f"{target}.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=_pinned(core),
        )
    server = Server(proc, "", "", log)
    try:
        deadline = time.monotonic() + 20
        while not (server.router and server.pub):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{target} did not start:\n{log.read_text()}")
            for line in log.read_text().splitlines():
                if "router bound to " in line:
                    server.router = line.split("router bound to ")[1].split()[0]
                if "pub bound to " in line:
                    server.pub = line.split("pub bound to ")[1].split()[0]
            time.sleep(0.02)
    except BaseException:
        server.stop()
        raise
    return server


class Measured(Protocol):
    """What the generator is pointed at: a Server, or several (bench/cluster.py)."""

    @property
    def router(self) -> str: ...
    @property
    def pub(self) -> str: ...
    @property
    def pids(self) -> str: ...


def run_loadgen(
    scenario: Scenario,
    server: Measured,
    mode: str,
    core: int | None,
    timeout: float,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """Run bench/loadgen.py for one scenario (``extra``: more of its options);
    its JSON result."""
    command = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--mode",
        mode,
        "--router",
        server.router,
        "--pub",
        server.pub,
        "--server-pid",
        server.pids,
        "--clients",
        str(scenario.clients),
        "--senders",
        str(scenario.senders),
        "--duration",
        str(scenario.duration),
        "--rate",
        str(scenario.rate),
        "--window",
        str(scenario.window),
    ]
    if scenario.sequential:
        command += ["--sequential", "--join-timeout", str(timeout * 0.6)]
    command += extra
    try:
        proc = subprocess.run(
            command,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            preexec_fn=_pinned(core),
            check=False,
        )
    except subprocess.TimeoutExpired:  # run() has killed it
        return {"failed": f"loadgen did not finish within {timeout} s"}
    if proc.returncode != 0:
        return {"failed": f"loadgen exited {proc.returncode}: {proc.stderr.decode()[-2000:]}"}
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def bottleneck(result: dict[str, Any]) -> str:
    """Which side limited the throughput of one run."""
    gen, server = result.get("gen_util"), result.get("server_util")
    if gen is None or server is None:
        return "-"
    if gen >= 0.85 and server < gen - 0.1:
        return "generator"
    if server >= 0.85:
        return "server"
    return "neither"


# --- summary -----------------------------------------------------------------


def _median(values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(numbers) if numbers else None


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Medians per scenario and target; faults are summed, never medianed."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    keys = [key for key, _, _ in FIGURES] + [
        "server_cpu_s",
        "gen_cpu_s",
        "deliveries",
        "lines_accepted",
    ]
    for result in results:
        summary.setdefault(result["scenario"], {}).setdefault(result["target"], {})
    for scenario, by_target in summary.items():
        for target, row in by_target.items():
            mine = [r for r in results if r["scenario"] == scenario and r["target"] == target]
            ok = [r for r in mine if "failed" not in r]
            for key in keys:
                row[key] = _median([r.get(key) for r in ok])
            for key in FAULTS:
                row[key] = sum(r.get(key, 0) for r in ok)
            row["errors"] = sum(len(r.get("errors", [])) for r in ok)
            row["runs"] = len(ok)
            row["failed_runs"] = len(mine) - len(ok)
            row["bottleneck"] = [bottleneck(r) for r in ok]
    return summary


def _ratio(value: Any, base: Any) -> float | None:
    if not isinstance(value, (int, float)) or not isinstance(base, (int, float)) or base == 0:
        return None
    return float(value) / float(base)


def goals(summary: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Where the broker stands against each target of issues 7 and 16."""
    verdicts: list[dict[str, Any]] = []
    referenced: set[str] = set()
    for scenario, key, limit, note in GOALS:
        rows = summary.get(scenario, {})
        ratio = _ratio(rows.get("broker", {}).get(key), rows.get("forwarder", {}).get(key))
        verdicts.append(
            {
                "target": f"{scenario} {key} <= {limit}x forwarder",
                "ratio": ratio,
                "met": ratio is not None and ratio <= limit,
                "note": note,
            }
        )
        if scenario in REFERENCE_US and scenario not in referenced:
            referenced.add(scenario)
            value = rows.get("broker", {}).get(key)
            verdicts.append(
                {
                    "target": f"{scenario} {key} below ngIRCd ({REFERENCE_US[scenario]} µs)",
                    "value": value,
                    "met": isinstance(value, (int, float)) and value < REFERENCE_US[scenario],
                    "note": "reference measured on another run of this kind of machine",
                }
            )
    flat = join_flatness(summary.get("join1000", {}))
    if flat is not None:
        verdicts.append(
            {
                "target": f"join1000 broker's own CPU per join flat within {JOIN_FLAT}x "
                "(fan-out of the notice taken off)",
                "ratio": flat,
                "met": flat <= JOIN_FLAT,
                "note": "issue 16; own ms/join "
                + ", ".join(
                    f"@{m}: {own:.3f}"
                    for m in (10, 100, 1000)
                    if (own := join_own_ms(summary.get("join1000", {}), m)) is not None
                ),
            }
        )
    idle = summary.get("idle1000", {}).get("broker", {})
    join = idle.get("join_s")
    verdicts.append(
        {
            "target": f"idle1000 all joined within {JOIN_LIMIT_S} s",
            "value": join,
            "met": isinstance(join, (int, float)) and join <= JOIN_LIMIT_S,
            "note": "",
        }
    )
    faults = sum(
        row.get(k, 0) for rows in summary.values() for row in rows.values() for k in FAULTS
    )
    verdicts.append(
        {"target": "no loss, duplicates or reordering", "value": faults, "met": faults == 0}
    )
    return verdicts


def join_own_ms(rows: dict[str, dict[str, Any]], members: int) -> float | None:
    """The broker's CPU per sequential join at ``members``, less what is not
    the join's own: the fan-out of its one notice (priced by a line fanned
    out alone to as many members, its handling included, so this errs low)
    and the members' pings during the join (idle CPU per second times the
    join's wall time)."""
    broker = rows.get("broker", {})
    values = [
        broker.get(f"join_cpu_ms_{members}"),
        broker.get(f"idle_cpu_ms_per_s_{members}"),
        broker.get(f"join_wall_ms_{members}"),
        broker.get(f"frame_cpu_ms_{members}"),
    ]
    if not all(isinstance(v, (int, float)) for v in values):
        return None
    join, idle, wall, frame = (float(v) for v in values)  # type: ignore[arg-type]
    return join - frame - idle * wall / 1000


def join_flatness(rows: dict[str, dict[str, Any]]) -> float | None:
    """join_own_ms at the largest room size measured over that at 10."""
    small = join_own_ms(rows, 10)
    for members in (1000, 100):
        large = join_own_ms(rows, members)
        if large is not None and small is not None and small > 0:
            # Below zero, the price taken off was larger than the join: flat.
            return max(large, 0.0) / small
    return None


def _runs(row: dict[str, Any]) -> str:
    text = f"{row['runs']} ({row['failed_runs']})"
    return f"{text:>13}"


def _fmt(value: Any, pattern: str) -> str:
    if value is None:
        return "-"
    return pattern.format(value)


def render(
    summary: dict[str, dict[str, dict[str, Any]]],
    verdicts: list[dict[str, Any]],
    scenarios: list[Scenario],
    smoke: bool = False,
) -> str:
    """The table people read."""
    out: list[str] = []
    for scenario in scenarios:
        rows = summary.get(scenario.name)
        if not rows:
            continue
        out.append(f"\n== {scenario.name}: {scenario.what}")
        targets = [t for t in TARGETS + EXTRA_TARGETS if t in rows]
        header = f"{'figure':26}" + "".join(f"{t:>13}" for t in targets)
        header += f"{'broker/fwd':>12}{'proxy/fwd':>11}"
        out.append(header)
        base = rows.get("forwarder", {})
        for key, label, pattern in FIGURES:
            values = [rows[t].get(key) for t in targets]
            if all(v is None for v in values):
                continue
            line = f"{label:26}" + "".join(f"{_fmt(v, pattern):>13}" for v in values)
            for t, width in (("broker", 12), ("proxy", 11)):
                ratio = _ratio(rows.get(t, {}).get(key), base.get(key))
                line += f"{_fmt(ratio, '{:.2f}x'):>{width}}"
            out.append(line)
        faults = "".join(f"{'/'.join(str(rows[t].get(k, 0)) for k in FAULTS):>13}" for t in targets)
        out.append(f"{'lost/dup/reordered':26}{faults}")
        out.append(f"{'runs ok (failed)':26}" + "".join(_runs(rows[t]) for t in targets))
        for t in targets:
            limits = rows[t]["bottleneck"]
            if limits and limits.count("generator") * 2 > len(limits):
                out.append(
                    f"  note: for {t} the GENERATOR was the bottleneck (near a full core while "
                    "the server was not): throughput and latency say more about the generator; "
                    "CPU µs per delivery is still the server's own."
                )
    out.append("\n== targets (issues 7 and 16)")
    if smoke:
        out.append("  (smoke run: tiny scenarios, so these verdicts mean nothing)")
    for verdict in verdicts:
        shown = verdict.get("ratio", verdict.get("value"))
        value = "-" if shown is None else (f"{shown:.2f}" if isinstance(shown, float) else shown)
        mark = "MET " if verdict["met"] else "MISS"
        note = f"  ({verdict['note']})" if verdict.get("note") else ""
        out.append(f"  [{mark}] {verdict['target']}: {value}{note}")
    return "\n".join(out)


# --- main ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Options of ``python -m bench.run``."""
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny scenarios, one run (seconds)")
    parser.add_argument("--runs", type=int, default=None, help="runs per scenario (default 3)")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=[s.name for s in SCENARIOS],
        help="which scenarios (default all)",
    )
    parser.add_argument(
        "--only",
        choices=["single", "cluster"],
        help="one group: the single-broker scenarios, or the cluster ones (bench/cluster.py)",
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        metavar="NAME",
        help="the cluster group only, these of its cases (e.g. failover failover-hb1)",
    )
    parser.add_argument("--targets", nargs="+", choices=TARGETS + EXTRA_TARGETS, default=TARGETS)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="JSON directory")
    parser.add_argument(
        "--broker-arg",
        action="append",
        default=[],
        help="extra chat-broker argument (repeatable), e.g. --broker-arg=--log-level=WARNING",
    )
    return parser


def save_report(
    report: dict[str, Any], out: Path, name: str, started: float, *, errors_fail: bool = False
) -> int:
    """Write ``report`` as ``out/<name>-<time>.json`` and give the exit status:
    1 if any run lost, duplicated or reordered a line, or failed (or, with
    ``errors_fail``, was refused anything)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / time.strftime(f"{name}-%Y%m%d-%H%M%S.json", time.localtime(started))
    path.write_text(json.dumps(report, indent=2))
    print(f"\nraw results: {path}")
    results: list[dict[str, Any]] = report["results"]
    faults = sum(r.get(k, 0) for r in results for k in FAULTS)
    failed = sum(1 for r in results if "failed" in r or (errors_fail and r.get("errors")))
    return 1 if faults or failed else 0


def main(argv: list[str] | None = None) -> int:
    """Run everything, print the tables, write the JSON; 1 if any delivery fault.

    Both groups by default: the single-broker scenarios, then the cluster ones
    (bench/cluster.py); ``--only`` picks one, and naming ``--scenarios``
    means the single-broker group only, naming ``--cases`` the cluster group."""
    args = build_parser().parse_args(argv)
    only = args.only or ("single" if args.scenarios else "cluster" if args.cases else None)
    status = 0
    if only in (None, "single"):
        status |= run_single(args)
    if only in (None, "cluster"):
        from bench.cluster import run_group

        status |= run_group(args)
    return status


def run_single(args: argparse.Namespace) -> int:
    """The single-broker scenarios against the broker and the baselines."""
    table = SMOKE if args.smoke else SCENARIOS
    scenarios = [s for s in table if not args.scenarios or s.name in args.scenarios]
    runs = args.runs or (1 if args.smoke else 3)
    server_core, gen_core = _cores()
    timeout = 60.0 if args.smoke else 180.0
    results: list[dict[str, Any]] = []
    started = time.time()
    workroot = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    try:
        for run in range(runs):
            for scenario in scenarios:
                # Targets interleaved within a run, so drifting background load
                # hits all of them alike.
                for target in args.targets:
                    workdir = workroot / f"{run}-{scenario.name}-{target}"
                    workdir.mkdir()
                    extra = args.broker_arg if target == "broker" else []
                    server = start_server(target, workdir, server_core, extra)
                    try:
                        mode = "chat" if target == "broker" else "raw"
                        result = run_loadgen(scenario, server, mode, gen_core, timeout)
                    finally:
                        server.stop()
                    result.update(scenario=scenario.name, target=target, run=run)
                    result["bottleneck"] = bottleneck(result)
                    results.append(result)
                    print(_progress(result), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    summary = summarise(results)
    verdicts = goals(summary)
    print(render(summary, verdicts, scenarios, args.smoke))
    report = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": time.time() - started,
            "smoke": args.smoke,
            "runs": runs,
            "cpus": os.cpu_count(),
            "server_core": server_core,
            "generator_core": gen_core,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "scenarios": [s.__dict__ for s in scenarios],
            "broker_args": args.broker_arg,
        },
        "results": results,
        "summary": summary,
        "targets": verdicts,
    }
    return save_report(report, Path(args.out), "bench", started)


def _progress(result: dict[str, Any]) -> str:
    name = f"run {result['run']} {result['scenario']:9} {result['target']:9}"
    if "failed" in result:
        return f"{name} FAILED: {result['failed']}"
    per = result.get("cpu_us_per_delivery")
    per_s = "-" if per is None else f"{per:.3f} µs/delivery"
    return (
        f"{name} {per_s}, {result.get('deliveries', 0)} deliveries, "
        f"join {result['join_s']:.2f} s, rss/client {result['rss_per_client_kib']:.1f} KiB, "
        f"faults {sum(result.get(k, 0) for k in FAULTS)}, bottleneck {result['bottleneck']}"
    )


if __name__ == "__main__":
    sys.exit(main())
