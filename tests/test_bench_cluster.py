"""The benchmark's cluster group (bench/cluster.py) runs end to end at a tiny
size, so it never rots: real ``chat-broker`` processes, one alone and three on
a real ``redis-server``, the load generator, and a broker killed under real
clients that fail over. Only completion, the report's shape and delivery
correctness are checked, never a timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cluster import SMOKE_CASES, SMOKE_FAILOVERS
from tests.redis_server import redis_server_binary

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(150)
def test_cluster_smoke_run_writes_a_clean_report(tmp_path: Path) -> None:
    redis_server_binary()  # fails under CI, skips elsewhere, saying why
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--only", "cluster", "--out", str(tmp_path)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        check=False,
    )
    output = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, output
    assert not list(tmp_path.glob("bench-*.json")), "the single-broker group ran too"
    reports = list(tmp_path.glob("cluster-*.json"))
    assert len(reports) == 1, output
    report = json.loads(reports[0].read_text())
    assert report["meta"]["smoke"] is True
    results = report["results"]
    cases = {c.scenario.name for c in SMOKE_CASES}
    failovers = {f.name for f in SMOKE_FAILOVERS}
    assert {(r["scenario"], r["target"]) for r in results} == {
        (c, t) for c in cases for t in ("single", "cluster")
    } | {(f, "cluster") for f in failovers}
    for result in results:
        where = f"{result['scenario']} on {result['target']}"
        assert "failed" not in result, f"{where}: {result.get('failed')}"
        assert result["errors"] == [], where
        assert (result["lost"], result["duplicated"], result["out_of_order"]) == (0, 0, 0), where
        if result["scenario"] in failovers:
            # Every client of the killed broker came back and caught up.
            assert result["victims"] >= 1, where
            assert result["never_caught_up"] == 0, where
            assert len(result["catch_up_s"]) == result["victims"], where
            assert result["lines"] > 0, where
            continue
        # Every line reached every client exactly once, in order, acknowledged.
        assert result["lines_sent"] > 0, where
        assert result["deliveries"] == result["lines_sent"] * result["clients"], where
        assert result["acks"] == result["lines_sent"], where
        for key in ("cpu_us_per_delivery", "latency_p99_ms", "rss_per_client_kib"):
            assert key in result, f"{where}: no {key}"
        assert "idle_cpu_ms_per_s" in result, where
        if result["target"] == "cluster":
            assert result["engine_cpu_s"] > 0, f"{where}: Redis's CPU not measured"
            assert "engine_idle_ms_per_s" in result, where
        if result["scenario"] == "cpaced100" and result["target"] == "cluster":
            # Every sender on broker A: the others' latency is cross-broker.
            assert result["cross_deliveries"] > 0, where
    verdicts = {v["target"] for v in report["targets"]}
    assert any("Redis CPU per accepted line" in v for v in verdicts)
    assert "targets (issue 14)" in proc.stdout.decode()


def test_an_unknown_cluster_case_is_a_clear_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--cases", "failover", "nope"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "unknown cluster case nope; known: " in proc.stderr.decode()
    assert "failover-hb1" in proc.stderr.decode()
