"""A slow, lossy link that is cut during a flood: the broker in one network
namespace, the clients in another, a veth pair between them shaped by tbf
(a token bucket that drops what does not fit its queue: bandwidth limit and
loss, as this kernel has no netem) and taken down and up again.

The namespaces are made by the test and deleted afterwards, also on failure.
Making them needs root (CAP_NET_ADMIN), which CI has; elsewhere the test is
skipped, saying why.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.chaos.checker import Figures
from tests.chaos.harness import ChaosBroker, Run, rounds
from tests.netns import Hosts, require_root

pytestmark = pytest.mark.chaos

ROUNDS = rounds(1)
BROKER_ADDRESS = "10.77.0.1"
CLIENT_ADDRESS = "10.77.0.2"
#: 4 Mbit/s with a short queue: the flood below needs more, so tbf queues
#: and drops, TCP retransmits, and the broker's PUB queue backs up.
SHAPE = ("tbf", "rate", "4mbit", "burst", "32kb", "latency", "20ms")


@dataclass
class Link:
    """Two hosts joined by a veth pair: ``broker`` (vb) and ``clients`` (vc)."""

    hosts: Hosts

    def exec(self, host: str) -> tuple[str, ...]:
        """The prefix that runs a command on ``host``."""
        return self.hosts.exec(host)

    def cut(self) -> None:
        """Take the clients' end down: nothing passes either way."""
        self.hosts.down("clients", "vc")

    def mend(self) -> None:
        """Bring it back up (its address stays)."""
        self.hosts.up("clients", "vc")


@pytest.fixture
def link() -> Iterator[Link]:
    """A fresh pair of namespaces with a shaped veth pair; deleted afterwards."""
    require_root()
    hosts = Hosts()
    try:
        hosts.add("broker", "clients")
        hosts.wire(("broker", "vb", BROKER_ADDRESS), ("clients", "vc", CLIENT_ADDRESS), SHAPE)
        yield Link(hosts)
    finally:
        hosts.close()


@pytest.mark.timeout(60 + 120 * ROUNDS)
def test_a_slow_lossy_link_cut_during_a_flood(link: Link, tmp_path: Path) -> None:
    broker = ChaosBroker(
        tmp_path / "history.db",
        "--max-rate",
        "0",
        "--client-timeout",
        "2",
        # A short broadcast queue: behind the slow link it overflows, so the
        # clients see gaps and repair from history all the time, also while
        # the link is cut and their sessions are rebuilt (issue 12 item 2).
        "--pub-hwm",
        "100",
        host=BROKER_ADDRESS,
        prefix=link.exec("broker"),
    )
    broker.start()
    total = Figures()
    try:
        for number in range(ROUNDS):
            run = Run(broker, prefix=link.exec("clients"))
            try:
                run.join(2, 2, tag=f"{number}n")
                run.feed(1000, 200.0)
                for fraction in (0.25, 0.6):
                    run.wait_shown(int(2000 * fraction))
                    link.cut()
                    # Longer than the dead-broker limit on both sides (3
                    # heartbeats of 0.5 s; the broker's 2 s client timeout):
                    # sessions are lost and rebuilt over the slow link.
                    time.sleep(3)
                    link.mend()
                total.add(run.finish(timeout=120))
            finally:
                run.close()
    finally:
        broker.stop()
    print(f"\n{ROUNDS} rounds over a cut 4 Mbit/s link: {total.summary()}")
    print("\n".join(total.problems[:10]))
    assert total.acknowledged > 0
    assert total.ok, total.summary() + "\n" + "\n".join(total.problems[:20])
