"""Hosts for tests as network namespaces the test makes and deletes.

Shared by the chaos suite (tests/chaos/test_link_faults.py) and the cluster
host tests (tests/cluster/test_hosts.py). A :class:`Hosts` names every
namespace it makes with a random tag, joins them with veth pairs whose
addresses the test assigns (only inside those namespaces), shapes a link
with tbf (this kernel has no netem), cuts and mends a link, and deletes a
whole host. :meth:`Hosts.close` kills every process left in its namespaces
and deletes them, also when the test failed.

Making namespaces needs root (CAP_NET_ADMIN), which CI has; elsewhere, or
where the kernel lacks veth or tbf, the test is skipped, saying why.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import threading

import pytest
import zmq

__all__ = ["Hosts", "delete", "ip", "require_root", "zmq_context_in"]

#: CLONE_NEWNET from <sched.h>: setns() into a network namespace.
_CLONE_NEWNET = 0x40000000


def require_root() -> None:
    """Skip, saying why, where namespaces cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("making network namespaces needs root (CAP_NET_ADMIN); CI runs as root")


def ip(*args: str) -> None:
    """Run ``ip``; fail with its message."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if result.returncode:
        raise OSError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def delete(namespace: str) -> None:
    """Kill every process in ``namespace`` (only the test's own live there)
    and delete it."""
    pids = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=10
    ).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)


def exec_prefix(namespace: str) -> tuple[str, ...]:
    """The prefix that runs a command inside ``namespace``."""
    return ("ip", "netns", "exec", namespace)


class Hosts:
    """Namespaces made by one test, by short name (``redis``, ``a``, ...)."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.names: dict[str, str] = {}

    def add(self, *hosts: str) -> None:
        """Make one namespace per host, its loopback up."""
        for host in hosts:
            namespace = f"chat-{host}-{self.tag}"
            try:
                ip("netns", "add", namespace)
            except OSError as exc:
                pytest.skip(f"this kernel cannot make network namespaces: {exc}")
            self.names[host] = namespace
            ip("-n", namespace, "link", "set", "lo", "up")

    def exec(self, host: str) -> tuple[str, ...]:
        """The prefix that runs a command on ``host``."""
        return exec_prefix(self.names[host])

    def wire(
        self,
        left: tuple[str, str, str],
        right: tuple[str, str, str],
        shape: tuple[str, ...] = (),
    ) -> None:
        """A veth pair between two hosts: each side ``(host, device, address)``
        (a /24); ``shape`` (a tc qdisc, e.g. tbf) on both ends."""
        (lhost, ldev, _), (rhost, rdev, _) = left, right
        try:
            ip("link", "add", "name", ldev, "netns", self.names[lhost], "type", "veth",
               "peer", "name", rdev, "netns", self.names[rhost])  # fmt: skip
        except OSError as exc:
            pytest.skip(f"this kernel has no veth pairs: {exc}")
        for host, device, address in (left, right):
            namespace = self.names[host]
            ip("-n", namespace, "addr", "add", f"{address}/24", "dev", device)
            ip("-n", namespace, "link", "set", "dev", device, "up")
            if shape:
                result = subprocess.run(
                    [*exec_prefix(namespace), "tc", "qdisc", "add", "dev", device, "root", *shape],
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                if result.returncode:
                    pytest.skip(f"this kernel has no {shape[0]} qdisc: {result.stderr.strip()}")

    def down(self, host: str, device: str) -> None:
        """Take ``host``'s end of a link down: nothing passes either way."""
        ip("-n", self.names[host], "link", "set", "dev", device, "down")

    def up(self, host: str, device: str) -> None:
        """Bring it back (its address stays; its route comes back)."""
        ip("-n", self.names[host], "link", "set", "dev", device, "up")

    def remove(self, host: str) -> None:
        """The whole host gone: every process in it killed, the namespace deleted."""
        delete(self.names.pop(host))

    def close(self) -> None:
        """Delete every namespace still here, and whatever runs in it."""
        for host in list(self.names):
            self.remove(host)


def zmq_context_in(namespace: str) -> zmq.Context[zmq.Socket[bytes]]:
    """A ZeroMQ context whose sockets live in ``namespace``.

    libzmq makes its TCP sockets in its I/O threads, which start with the
    context's first socket and inherit the network namespace of the thread
    that made it: so a helper thread enters the namespace (setns), makes
    the context and one socket, and ends. The test's own thread stays where
    it was; every socket of the context, used from any thread, connects
    from inside ``namespace``."""
    made: list[zmq.Context[zmq.Socket[bytes]]] = []
    failed: list[BaseException] = []

    def enter() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
            ctx.linger = 0
            ctx.socket(zmq.PAIR).close(0)  # starts the I/O threads here
            made.append(ctx)
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=enter, daemon=True)
    thread.start()
    thread.join(10)
    if failed:
        raise failed[0]
    return made[0]
