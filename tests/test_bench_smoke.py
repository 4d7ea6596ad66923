"""The benchmark's smoke mode runs end to end, so the benchmark never rots.

It starts real servers (our ``chat-broker`` and the two baselines) and the load
generator as subprocesses. Only completion, the shape of the JSON report and
delivery correctness are checked: timings depend on the machine, so no
figure is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {"flood10", "flood100", "flood500", "paced100", "idle1000", "join1000"}
TARGETS = {"forwarder", "proxy", "broker"}


@pytest.mark.timeout(120)
def test_smoke_run_writes_a_clean_report(tmp_path: Path) -> None:
    proc = subprocess.run(
        # The cluster group has its own test (tests/test_bench_cluster.py).
        [sys.executable, "-m", "bench.run", "--smoke", "--only", "single", "--out", str(tmp_path)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=90,
        check=False,
    )
    output = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, output
    reports = list(tmp_path.glob("bench-*.json"))
    assert len(reports) == 1, output
    report = json.loads(reports[0].read_text())
    assert set(report) >= {"meta", "results", "summary", "targets"}
    assert report["meta"]["smoke"] is True

    results = report["results"]
    assert {(r["scenario"], r["target"]) for r in results} == {
        (s, t) for s in SCENARIOS for t in TARGETS
    }
    for result in results:
        where = f"{result['scenario']} on {result['target']}"
        assert "failed" not in result, f"{where}: {result.get('failed')}"
        assert result["errors"] == [], where
        for key in ("join_s", "rss_per_client_kib", "rss_before_kib", "rss_joined_kib"):
            assert key in result, f"{where}: no {key}"
        if result["scenario"] == "join1000":
            # One at a time: the server's CPU per join near 10 members, and
            # for a relay the frames it fanned out per join to price that.
            assert result["join_cpu_ms_10"] > 0, where
            assert result["join_main_ms_10"] > 0, where
            assert result["idle_cpu_ms_per_s_10"] >= 0, where
            assert "frame_cpu_ms_10" in result, where
            if result["target"] != "broker":
                assert result["join_frames_10"] >= 1, where
        if result["scenario"] in ("idle1000", "join1000"):
            continue
        for key in (
            "cpu_us_per_line",
            "deliveries_per_s",
            "latency_p50_ms",
            "latency_p99_ms",
            "latency_max_ms",
            "server_cpu_s",
            "gen_util",
        ):
            assert key in result, f"{where}: no {key}"
        assert "cpu_us_per_delivery" in result, where
        # Every line reached every client exactly once, in order.
        assert result["lines_sent"] > 0, where
        assert result["deliveries"] == result["expected_deliveries"], where
        assert result["deliveries"] == result["lines_sent"] * result["clients"], where
        assert (result["lost"], result["duplicated"], result["out_of_order"]) == (0, 0, 0), where
        if result["target"] == "broker":
            assert result["acks"] == result["lines_sent"], f"{where}: every line acknowledged"

    for scenario in SCENARIOS:
        for target in TARGETS:
            assert report["summary"][scenario][target]["runs"] == 1
    assert all("met" in verdict for verdict in report["targets"])
    assert "targets (issues 7 and 16)" in proc.stdout.decode()
