"""Cluster scenarios (issue 14): three brokers on one Redis, beside one broker.

``python -m bench.run --only cluster`` (``make bench-cluster``; ``make bench``
runs them after the single-broker scenarios). In each run every scenario is
run twice, interleaved: against one ``chat-broker`` in its default SQLite mode
and against three ``chat-broker --engine redis://...`` processes sharing a
fresh ``redis-server`` (AOF on, ``appendfsync always``, as docs/CLUSTER.md
recommends), the clients spread round robin over the three. The brokers and
Redis are pinned to one core, the generator (bench/loadgen.py, one process)
to the other. The figures, side by side:

* broker CPU per delivery (``cflood100``; in a cluster, the three brokers'
  CPU summed), against one broker;
* Redis CPU per accepted line at 10, 100 and 1000 subscribers at the same
  line rate (``csubs*``), from the scheduler's nanoseconds of the
  ``redis-server`` process, and Redis's CPU per second with everyone idle;
* memory per idle client: the brokers' VmRSS growth over the joins, summed,
  per client (``csubs1000``);
* paced latency with every sender on the first broker (``cpaced100``): the p99
  of the receivers on the two others against one broker's p99;
* failover (``failover``, ``failover-hb1``): one broker killed with SIGKILL
  while its clients (real :class:`client.AsyncClient` objects given all three
  endpoints) receive a paced flow; for each, the seconds from the kill until
  it has resumed on another broker and holds every line up to the room's last
  seq at that moment, contiguous. Once with the brokers' default heartbeat
  (2 s) and once with ``--heartbeat 1``: a client notices the killed
  broker's closed connection at once (client/handshake.py), so the two
  should be alike; silence would take three heartbeats. ``--cases failover``
  runs only that one;
* lost and duplicated lines in every run (any is a failure).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.run import (
    FAULTS,
    Scenario,
    Server,
    _cores,
    _median,
    bottleneck,
    run_loadgen,
    save_report,
    start_server,
)

#: Brokers in the cluster.
BROKERS = 3
ROOM = "bench"


@dataclass(frozen=True)
class Case:
    """One load, run against one broker and against the cluster."""

    scenario: Scenario
    #: Every sender on the first broker: the others' latency is cross-broker.
    senders_first: bool = False


@dataclass(frozen=True)
class Failover:
    """A broker killed under its clients: ``clients`` spread over the brokers,
    one sending ``rate`` lines/s from a surviving broker."""

    name: str
    clients: int
    rate: float
    #: Seconds of sending before the kill.
    before: float
    #: Extra chat-broker flags (a faster heartbeat).
    flags: tuple[str, ...] = ()
    what: str = ""


CASES = [
    Case(Scenario("cflood100", 100, 10, 3.0, window=50, what="flood, 100 clients, 10 sending")),
    Case(
        Scenario(
            "cpaced100",
            100,
            10,
            4.0,
            rate=500,
            window=50,
            what="500 lines/s over 100 clients, every sender on broker A",
        ),
        senders_first=True,
    ),
    Case(Scenario("csubs10", 10, 5, 4.0, rate=50, window=50, what="50 lines/s, 10 subscribers")),
    Case(Scenario("csubs100", 100, 5, 4.0, rate=50, window=50, what="50 lines/s, 100 subscribers")),
    Case(
        Scenario("csubs1000", 1000, 5, 4.0, rate=50, window=50, what="50 lines/s, 1000 subscribers")
    ),
    # The same memory figure without a burst of join notices (see goals()).
    Case(
        Scenario("cjoin1000", 1000, 0, sequential=True, what="1000 clients joining one at a time")
    ),
]
FAILOVERS = [
    Failover("failover", 60, 20.0, 2.0, what="kill -9 of a broker under 20 of 60 clients"),
    Failover(
        "failover-hb1",
        60,
        20.0,
        2.0,
        ("--heartbeat", "1"),
        what="the same, brokers at --heartbeat 1",
    ),
]
#: A few of each kind (no growth series: that needs sizes), to run in seconds.
SMOKE_CASES = [
    Case(Scenario("cflood100", 6, 3, 0.3, window=20, what="flood, 6 clients, 3 sending")),
    Case(
        Scenario("cpaced100", 6, 2, 0.4, rate=50, window=20, what="50 lines/s, senders on A"),
        senders_first=True,
    ),
    Case(Scenario("csubs1000", 12, 2, 0.3, rate=50, window=20, what="50 lines/s, 12 subscribers")),
]
SMOKE_FAILOVERS = [
    Failover("failover-hb1", 6, 20.0, 0.5, ("--heartbeat", "0.5"), what="6 clients, fast heartbeat")
]
#: Subscriber counts of the csubs cases, in order.
SUBS = ("csubs10", "csubs100", "csubs1000")
#: A failed-over client must be caught up within this many seconds (95 %).
CATCH_UP_S = 5.0
#: How long a failover run waits for its clients to catch up and drain.
FAILOVER_TIMEOUT = 30.0

#: Figures shown per case: (key, label, format).
FIGURES: list[tuple[str, str, str]] = [
    ("cpu_us_per_delivery", "broker CPU µs/delivery", "{:.3f}"),
    ("cpu_us_per_line", "broker CPU µs/line", "{:.2f}"),
    ("engine_cpu_us_per_line", "Redis CPU µs/line", "{:.2f}"),
    ("engine_net_us_per_line", "  less its idle CPU", "{:.2f}"),
    ("deliveries_per_s", "deliveries/s", "{:,.0f}"),
    ("latency_p50_ms", "latency p50 ms", "{:.2f}"),
    ("latency_p99_ms", "latency p99 ms", "{:.2f}"),
    ("cross_latency_p99_ms", "cross-broker p99 ms", "{:.2f}"),
    ("rss_per_client_kib", "broker RSS KiB/client", "{:.1f}"),
    ("join_s", "join time s", "{:.3f}"),
    ("idle_cpu_ms_per_s", "brokers idle CPU ms/s", "{:.2f}"),
    ("engine_idle_ms_per_s", "Redis idle CPU ms/s", "{:.2f}"),
    ("server_util", "brokers CPU share", "{:.0%}"),
    ("engine_util", "Redis CPU share", "{:.0%}"),
    ("gen_util", "generator CPU share", "{:.0%}"),
]
FAILOVER_FIGURES: list[tuple[str, str, str]] = [
    ("catch_up_p50_s", "catch-up p50 s", "{:.2f}"),
    ("catch_up_p95_s", "catch-up p95 s", "{:.2f}"),
    ("catch_up_max_s", "catch-up max s", "{:.2f}"),
    ("victims", "clients of the killed broker", "{:.0f}"),
    ("lines", "lines said", "{:.0f}"),
]


# --- processes -----------------------------------------------------------------


def _pin(pid: int, core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(pid, {core})


def start_redis(workdir: Path, core: int | None) -> Any:
    """A fresh redis-server (AOF, appendfsync always, noeviction) in ``workdir``."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "the cluster scenarios need redis-server 7+ "
            "(make redis-server, or apt-get install redis-server)"
        )
    # The test suite's own handle: free port, waits for PING, stopped by handle.
    from tests.redis_server import RedisServer

    directory = workdir / "redis"
    directory.mkdir()
    server = RedisServer(directory, aof=True, binary=binary).start()
    assert server.proc is not None
    _pin(server.proc.pid, core)
    return server


@dataclass
class Cluster:
    """Redis and the brokers sharing it, running; the generator's target."""

    redis: Any
    brokers: list[Server] = field(default_factory=list)

    @property
    def router(self) -> str:
        return ",".join(b.router for b in self.brokers)

    @property
    def pub(self) -> str:
        return ",".join(b.pub for b in self.brokers)

    @property
    def pids(self) -> str:
        return ",".join(str(b.proc.pid) for b in self.brokers)

    @property
    def redis_pid(self) -> int:
        pid: int = self.redis.proc.pid
        return pid

    def stop(self) -> None:
        for broker in self.brokers:
            broker.stop()
        self.redis.stop()


def start_cluster(workdir: Path, core: int | None, extra: list[str]) -> Cluster:
    """Redis and BROKERS ``chat-broker --engine`` processes on it."""
    cluster = Cluster(start_redis(workdir, core))
    try:
        for i in range(BROKERS):
            home = workdir / f"broker{i}"
            home.mkdir()
            cluster.brokers.append(
                start_server("broker", home, core, ["--engine", cluster.redis.url, *extra])
            )
    except BaseException:
        cluster.stop()
        raise
    return cluster


# --- failover --------------------------------------------------------------------


@dataclass
class Watched:
    """What one client saw of the room: seqs and when it caught up."""

    name: str
    victim: bool
    seqs: list[int] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    duplicated: int = 0
    through: int = 0  # every seq up to here seen
    resumed_at: float | None = None
    target: int = 0  # the room's last seq when it resumed
    caught_up_at: float | None = None
    endpoints: list[str] = field(default_factory=list)


async def _failover(case: Failover, cluster: Cluster, smoke: bool) -> dict[str, Any]:
    """Kill broker A under its clients; how long until each is caught up elsewhere."""
    from client import AsyncClient
    from client import events as ev

    routers = [b.router for b in cluster.brokers]
    killed = routers[0]
    clients: list[tuple[AsyncClient, Watched]] = []
    live_max = 0  # the highest seq any client on a surviving broker holds
    killed_at: float | None = None

    def on_message(w: Watched, seq: int, now: float) -> None:
        nonlocal live_max
        if seq in w.seen:
            w.duplicated += 1
            return
        w.seen.add(seq)
        w.seqs.append(seq)
        while w.through + 1 in w.seen:
            w.through += 1
        if not w.victim:
            live_max = max(live_max, seq)
        elif w.resumed_at is not None and w.caught_up_at is None and w.through >= w.target:
            w.caught_up_at = now

    async def read(client: AsyncClient, w: Watched) -> None:
        async for event in client:
            now = time.monotonic()
            if isinstance(event, ev.Message) and event.room == ROOM and not event.history:
                on_message(w, event.seq, now)
            elif isinstance(event, ev.Connection):
                w.endpoints.append(f"{event.state} {event.endpoint}")
                if (
                    event.state == "reconnected"
                    and w.victim
                    and killed_at is not None
                    and event.endpoint != killed
                    and w.resumed_at is None
                ):
                    w.resumed_at = now
                    # Every line the room had when it came back must reach it.
                    w.target = live_max
                    if w.through >= w.target:
                        w.caught_up_at = now

    for i in range(case.clients):
        # Client i talks to broker i % BROKERS first, and fails over in turn.
        first = i % BROKERS
        order = routers[first:] + routers[:first]
        client = AsyncClient(order, nick=f"f{i}", room=ROOM, backlog=0)
        clients.append((client, Watched(f"f{i}", victim=first == 0)))
    readers: list[asyncio.Task[None]] = []
    said = 0
    try:
        await asyncio.gather(*(c.connect(timeout=20) for c, _ in clients))
        readers = [asyncio.create_task(read(c, w)) for c, w in clients]
        sender = clients[1][0]  # on broker B, which survives
        victims = [w for _, w in clients if w.victim]
        start = time.monotonic()
        deadline = start + case.before + FAILOVER_TIMEOUT
        interval = 1.0 / case.rate
        while time.monotonic() < deadline:
            now = time.monotonic()
            if killed_at is None and now >= start + case.before:
                cluster.brokers[0].proc.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
            if killed_at is not None and all(w.caught_up_at is not None for w in victims):
                break
            await sender.say(f"line {said}")
            said += 1
            await asyncio.sleep(max(0.0, start + said * interval - time.monotonic()))
        # Every line said reaches every client once, repaired where it was missed.
        drained = await _wait(
            lambda: all(w.through >= said for _, w in clients), time.monotonic() + 15
        )
        caught = sorted(
            w.caught_up_at - killed_at
            for w in victims
            if w.caught_up_at is not None and killed_at is not None
        )
        never = len(victims) - len(caught)
        # A client that never caught up counts as the slowest there is.
        spread = caught + [float("inf")] * never
        lost = sum(len(set(range(1, said + 1)) - w.seen) for _, w in clients)
        stored_twice = sum(1 for _, w in clients for s in w.seen if s > said)
        return {
            "clients": case.clients,
            "victims": len(victims),
            "lines": said,
            "drained": drained,
            "never_caught_up": never,
            "catch_up_s": caught,
            "catch_up_p50_s": _finite(_percentile(spread, 0.5)),
            "catch_up_p95_s": _finite(_percentile(spread, 0.95)),
            "catch_up_max_s": _finite(spread[-1] if spread else None),
            "lost": lost,
            "duplicated": sum(w.duplicated for _, w in clients) + stored_twice,
            "out_of_order": 0,
            "errors": [] if drained else [f"not every client drained (smoke={smoke})"],
        }
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(
            *(c.close(timeout=1.0, settle=0.5) for c, _ in clients), return_exceptions=True
        )


async def _wait(condition: Any, deadline: float) -> bool:
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)  # polling a condition, with a deadline
    return True


def _percentile(values: list[float], fraction: float) -> float | None:
    """Nearest rank, as bench/loadgen.py's."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, round(fraction * len(values)) - 1))]


def _finite(value: float | None) -> float | None:
    return None if value is None or value == float("inf") else value


def run_failover(
    case: Failover, workdir: Path, core: int | None, extra: list[str], smoke: bool
) -> dict[str, Any]:
    """One failover run on a fresh cluster."""
    cluster = start_cluster(workdir, core, [*extra, *case.flags])
    try:
        return asyncio.run(_failover(case, cluster, smoke))
    except Exception as exc:  # a run that fails is reported, not fatal
        return {"failed": f"{type(exc).__name__}: {exc}"}
    finally:
        cluster.stop()


# --- the group ---------------------------------------------------------------------


def run_group(args: argparse.Namespace) -> int:
    """Every cluster case and failover, ``args.runs`` times; table, targets, JSON."""
    cases = SMOKE_CASES if args.smoke else CASES
    failovers = SMOKE_FAILOVERS if args.smoke else FAILOVERS
    chosen = getattr(args, "cases", None)
    if chosen:
        known = [c.scenario.name for c in cases] + [f.name for f in failovers]
        if unknown := sorted(set(chosen) - set(known)):
            names = ", ".join(unknown)
            raise SystemExit(f"unknown cluster case {names}; known: {', '.join(known)}")
        cases = [c for c in cases if c.scenario.name in chosen]
        failovers = [f for f in failovers if f.name in chosen]
    runs = args.runs or (1 if args.smoke else 3)
    server_core, gen_core = _cores()
    timeout = 60.0 if args.smoke else 180.0
    results: list[dict[str, Any]] = []
    started = time.time()
    load = os.getloadavg()
    workroot = Path(tempfile.mkdtemp(prefix="chat-bench-cluster-"))
    try:
        for run in range(runs):
            for case in cases:
                for target in ("single", "cluster"):
                    workdir = workroot / f"{run}-{case.scenario.name}-{target}"
                    workdir.mkdir()
                    result = _run_case(
                        case, target, workdir, server_core, gen_core, timeout, args.broker_arg
                    )
                    result.update(scenario=case.scenario.name, target=target, run=run)
                    results.append(result)
                    print(_progress(result), file=sys.stderr, flush=True)
            for fo in failovers:
                workdir = workroot / f"{run}-{fo.name}"
                workdir.mkdir()
                result = run_failover(fo, workdir, server_core, args.broker_arg, args.smoke)
                result.update(scenario=fo.name, target="cluster", run=run)
                results.append(result)
                print(_progress(result), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    summary = summarise(results)
    verdicts = goals(summary)
    if chosen:  # the targets of cases not run say nothing
        verdicts = [v for v in verdicts if v["value"] is not None]
    print(render(summary, verdicts, cases, failovers, args.smoke))
    report = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": time.time() - started,
            "load_before": load,
            "load_after": os.getloadavg(),
            "smoke": args.smoke,
            "runs": runs,
            "brokers": BROKERS,
            "cpus": os.cpu_count(),
            "cases": [{**c.scenario.__dict__, "senders_first": c.senders_first} for c in cases],
            "failovers": [f.__dict__ for f in failovers],
            "broker_args": args.broker_arg,
        },
        "results": results,
        "summary": summary,
        "targets": verdicts,
    }
    return save_report(report, Path(args.out), "cluster", started, errors_fail=True)


def _run_case(
    case: Case,
    target: str,
    workdir: Path,
    server_core: int | None,
    gen_core: int | None,
    timeout: float,
    extra: list[str],
) -> dict[str, Any]:
    options = ["--measure-idle"] + (["--senders-first"] if case.senders_first else [])
    try:
        if target == "single":
            server = start_server("broker", workdir, server_core, extra)
            try:
                result = run_loadgen(case.scenario, server, "chat", gen_core, timeout, options)
            finally:
                server.stop()
        else:
            cluster = start_cluster(workdir, server_core, extra)
            try:
                options += ["--engine-pid", str(cluster.redis_pid)]
                result = run_loadgen(case.scenario, cluster, "chat", gen_core, timeout, options)
            finally:
                cluster.stop()
    except RuntimeError as exc:  # a server that did not start
        result = {"failed": str(exc)}
    _net_of_idle(result)
    result["bottleneck"] = bottleneck(result)
    return result


def _net_of_idle(result: dict[str, Any]) -> None:
    """Redis's CPU per line less what it spends anyway (the brokers'
    heartbeats and reaper rounds, measured idle): at a low line rate that
    fixed part would otherwise look like a cost per line."""
    values = [result.get(k) for k in ("engine_cpu_s", "engine_idle_ms_per_s", "wall_s")]
    accepted = result.get("lines_accepted")
    if all(isinstance(v, (int, float)) for v in values) and accepted:
        cpu, idle, wall = (float(v) for v in values)  # type: ignore[arg-type]
        result["engine_net_us_per_line"] = (cpu - idle / 1000 * wall) * 1e6 / accepted


# --- summary ---------------------------------------------------------------------


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Medians per scenario and target; faults summed."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    keys = [k for k, _, _ in FIGURES + FAILOVER_FIGURES]
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
            row["runs"] = len(ok)
            row["failed_runs"] = len(mine) - len(ok)
            # Every failed-over client of every run, for one p95 over all.
            times = [t for r in ok for t in r.get("catch_up_s", [])]
            never = sum(r.get("never_caught_up", 0) for r in ok)
            if times or never:
                spread = sorted(times) + [float("inf")] * never
                row["catch_up_p95_all_s"] = _percentile(spread, 0.95)
                row["never_caught_up"] = never
    return summary


def _ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return float(a) / float(b)
    return None


def goals(summary: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Issue 14's benchmark targets, met or not."""
    verdicts: list[dict[str, Any]] = []

    def get(scenario: str, target: str, key: str) -> Any:
        return summary.get(scenario, {}).get(target, {}).get(key)

    ratio = _ratio(
        get("cflood100", "cluster", "cpu_us_per_delivery"),
        get("cflood100", "single", "cpu_us_per_delivery"),
    )
    verdicts.append(
        {
            "target": "broker CPU per delivery <= 1.2x single-broker SQLite (cflood100)",
            "value": ratio,
            "met": ratio is not None and ratio <= 1.2,
        }
    )
    per_line = [get(s, "cluster", "engine_cpu_us_per_line") for s in SUBS]
    known = [v for v in per_line if isinstance(v, (int, float))]
    spread = max(known) / min(known) - 1 if len(known) == len(SUBS) and min(known) > 0 else None
    mean = statistics.mean(known) if known else None
    worst = max(abs(v / mean - 1) for v in known) if mean else None
    verdicts.append(
        {
            "target": "Redis CPU per accepted line flat within ±15 % over 10/100/1000 subscribers",
            "value": worst,
            "met": worst is not None and spread is not None and worst <= 0.15,
            "note": "µs/line "
            + ", ".join("-" if v is None else f"{v:.1f}" for v in per_line)
            + " (value: largest distance from their mean)",
        }
    )
    # Joined all at once, one broker announces a turn's joins in one notice
    # and the cluster each join in its own, so the subscribers' queues (and
    # memory) grow more; joined one at a time, both send one notice per join.
    for scenario, how in (("csubs1000", "joined at once"), ("cjoin1000", "one at a time")):
        ratio = _ratio(
            get(scenario, "cluster", "rss_per_client_kib"),
            get(scenario, "single", "rss_per_client_kib"),
        )
        verdicts.append(
            {
                "target": f"memory per idle client within ±15 % of one broker's "
                f"({scenario}, {how})",
                "value": ratio,
                "met": ratio is not None and abs(ratio - 1) <= 0.15,
            }
        )
    cross = get("cpaced100", "cluster", "cross_latency_p99_ms")
    single = get("cpaced100", "single", "latency_p99_ms")
    diff = cross - single if cross is not None and single is not None else None
    verdicts.append(
        {
            "target": "cross-broker paced p99 <= single-broker p99 + 2 ms (cpaced100)",
            "value": diff,
            "met": diff is not None and diff <= 2.0,
            "note": f"ms over one broker's; cross {cross}, single {single}",
        }
    )
    for name in ("failover", "failover-hb1"):
        p95 = get(name, "cluster", "catch_up_p95_all_s")
        if p95 is None and name not in summary:
            continue
        verdicts.append(
            {
                "target": f"{name}: 95 % of a killed broker's clients caught up within "
                f"{CATCH_UP_S:g} s",
                "value": p95,
                "met": p95 is not None and p95 <= CATCH_UP_S,
                "note": "seconds, p95 over every failed-over client of every run",
            }
        )
    faults = sum(
        row.get(k, 0) for rows in summary.values() for row in rows.values() for k in FAULTS
    )
    verdicts.append(
        {"target": "no loss or duplicates in any run", "value": faults, "met": not faults}
    )
    return verdicts


def _fmt(value: Any, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def render(
    summary: dict[str, dict[str, dict[str, Any]]],
    verdicts: list[dict[str, Any]],
    cases: list[Case],
    failovers: list[Failover],
    smoke: bool,
) -> str:
    """The table people read: one broker and the cluster side by side."""
    out: list[str] = []
    for case in cases:
        rows = summary.get(case.scenario.name)
        if not rows:
            continue
        out.append(f"\n== {case.scenario.name}: {case.scenario.what}")
        out.append(f"{'figure':26}{'1 broker':>13}{f'{BROKERS} brokers':>13}{'ratio':>9}")
        single, cluster = rows.get("single", {}), rows.get("cluster", {})
        for key, label, pattern in FIGURES:
            a, b = single.get(key), cluster.get(key)
            if a is None and b is None:
                continue
            ratio = _ratio(b, a)
            out.append(
                f"{label:26}{_fmt(a, pattern):>13}{_fmt(b, pattern):>13}{_fmt(ratio, '{:.2f}x'):>9}"
            )
        faults = ["/".join(str(r.get(k, 0)) for k in FAULTS) for r in (single, cluster)]
        out.append(f"{'lost/dup/reordered':26}{faults[0]:>13}{faults[1]:>13}")
        runs = [f"{r.get('runs', 0)} ({r.get('failed_runs', 0)})" for r in (single, cluster)]
        out.append(f"{'runs ok (failed)':26}{runs[0]:>13}{runs[1]:>13}")
    for fo in failovers:
        row = summary.get(fo.name, {}).get("cluster")
        if not row:
            continue
        out.append(f"\n== {fo.name}: {fo.what}")
        for key, label, pattern in FAILOVER_FIGURES:
            out.append(f"{label:30}{_fmt(row.get(key), pattern):>10}")
        out.append(f"{'p95 over all runs s':30}{_fmt(row.get('catch_up_p95_all_s'), '{:.2f}'):>10}")
        out.append(f"{'never caught up':30}{row.get('never_caught_up', 0):>10}")
        lost_dup = f"{row['lost']}/{row['duplicated']}"
        ran = f"{row['runs']} ({row['failed_runs']})"
        out.append(f"{'lost/dup':30}{lost_dup:>10}")
        out.append(f"{'runs ok (failed)':30}{ran:>10}")
    out.append("\n== targets (issue 14)")
    if smoke:
        out.append("  (smoke run: tiny scenarios, so these verdicts mean nothing)")
    for verdict in verdicts:
        value = verdict.get("value")
        shown = "-" if value is None else (f"{value:.2f}" if isinstance(value, float) else value)
        mark = "MET " if verdict["met"] else "MISS"
        note = f"  ({verdict['note']})" if verdict.get("note") else ""
        out.append(f"  [{mark}] {verdict['target']}: {shown}{note}")
    return "\n".join(out)


def _progress(result: dict[str, Any]) -> str:
    name = f"run {result['run']} {result['scenario']:12} {result['target']:8}"
    if "failed" in result:
        return f"{name} FAILED: {result['failed']}"
    faults = sum(result.get(k, 0) for k in FAULTS)
    if "catch_up_p95_s" in result:
        return (
            f"{name} catch-up p95 {_fmt(result['catch_up_p95_s'], '{:.2f}')} s of "
            f"{result['victims']} clients, never {result['never_caught_up']}, faults {faults}"
        )
    return (
        f"{name} {_fmt(result.get('cpu_us_per_delivery'), '{:.3f}')} µs/delivery, "
        f"redis {_fmt(result.get('engine_cpu_us_per_line'), '{:.1f}')} µs/line, "
        f"p99 {_fmt(result.get('latency_p99_ms'), '{:.2f}')} ms, "
        f"rss/client {_fmt(result.get('rss_per_client_kib'), '{:.1f}')} KiB, faults {faults}"
    )


if __name__ == "__main__":
    from bench.run import main

    sys.exit(main(["--only", "cluster", *sys.argv[1:]]))
