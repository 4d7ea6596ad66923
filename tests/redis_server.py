"""Real ``redis-server`` processes for the cluster-mode tests.

Each :class:`RedisServer` runs in its own temporary directory on a free
loopback port, is waited for by polling PING (never a fixed sleep), and is
stopped by its own process handle. Faults: :meth:`RedisServer.kill` (SIGKILL),
:meth:`RedisServer.restart` (on the same directory, so on the same AOF),
:meth:`RedisServer.debug_sleep` and :meth:`RedisServer.kill_pubsub`.

``redis-server`` comes from the operating system (Debian: ``redis-server``;
``make test`` installs it where it can). Where it is missing the tests fail
under ``CI=true`` and are skipped, saying why, elsewhere.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["RedisServer", "SentinelServer", "redis_server_binary"]

SCALE = float(os.environ.get("CHAT_TEST_SCALE", "1"))


def redis_server_binary() -> str:
    """Path of a redis-server 7+, or fail (CI) / skip (elsewhere) saying why."""
    found = shutil.which("redis-server")
    problem = ""
    if found is None:
        problem = "redis-server is not installed"
    else:
        out = subprocess.run([found, "--version"], capture_output=True, text=True, check=False)
        version = out.stdout.split("v=", 1)[-1].split(" ", 1)[0]
        if not version.split(".")[0].isdigit() or int(version.split(".")[0]) < 7:
            problem = f"redis-server {version} is too old (7.0+ needed)"
    if problem:
        message = (
            f"{problem}: the cluster-mode tests need Debian's redis-server 7+ "
            "(`make test` installs it when run as root; or `apt-get install redis-server`)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    assert found is not None
    return found


def _client(port: int, timeout: float) -> redis.Redis:
    # no retries: redis-py's default back-off (seconds) would hide a stall
    return redis.Redis(
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=max(timeout, 1.0),
        retry=Retry(NoBackoff(), 0),
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process in ``directory``; restartable on the same data."""

    def __init__(
        self,
        directory: Path,
        *,
        aof: bool = True,
        binary: str | None = None,
        replica_of: RedisServer | None = None,
    ) -> None:
        self.directory = directory
        self.aof = aof
        self.binary = binary or redis_server_binary()
        #: the primary this server replicates (``--replicaof``), if any
        self.replica_of = replica_of
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = directory / "redis.log"
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start (on a new free port the first time, the same port afterwards)
        and wait until it answers PING (after loading its AOF)."""
        for _ in range(5):
            if not self.port:
                self.port = _free_port()
            args = [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "yes" if self.aof else "no",
                "--appendfsync", "always",
                "--maxmemory-policy", "noeviction",
                "--enable-debug-command", "local",
                "--logfile", str(self._log),
                "--daemonize", "no",
            ]  # fmt: skip
            if self.replica_of is not None:
                args += ["--replicaof", "127.0.0.1", str(self.replica_of.port)]
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if self._wait_ready(timeout * SCALE):
                return self
            self.proc.kill()
            self.proc.wait(5)
            log = self._log.read_text(errors="replace") if self._log.exists() else ""
            if "Address already in use" not in log:
                raise AssertionError(f"redis-server did not start on {self.port}:\n{log[-2000:]}")
            self.port = 0  # someone took the port: try another
        raise AssertionError("redis-server found no free port in 5 tries")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        probe = _client(self.port, 1.0)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                try:
                    if probe.ping():
                        return True
                except (redis.ConnectionError, redis.ResponseError, redis.TimeoutError):
                    pass  # not listening yet, or loading its AOF
                time.sleep(0.01)  # polling for a condition, with a deadline
            raise AssertionError(f"redis-server on {self.port} not ready in {timeout} s")
        finally:
            probe.close()

    def client(self) -> redis.Redis:
        """A plain client for test assertions and fault injection."""
        return _client(self.port, 10 * SCALE)

    def stop(self) -> None:
        """SIGTERM and wait (an AOF server fsyncs and exits cleanly)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """kill -9: no chance to flush anything not yet written."""
        self._end(signal.SIGKILL)

    def restart(self, timeout: float = 10.0) -> None:
        """Start again on the same port and directory (so the same AOF)."""
        self.start(timeout)

    def _end(self, sig: int) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(10 * SCALE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def debug_sleep(self, seconds: float) -> threading.Thread:
        """Stall the server for ``seconds`` (DEBUG SLEEP), from a thread; join it."""

        def sleep() -> None:
            with self.client() as c:
                c.execute_command("DEBUG", "SLEEP", seconds)

        thread = threading.Thread(target=sleep, daemon=True)
        thread.start()
        # it stalls once the command is in: wait until PING stops answering
        deadline = time.monotonic() + 5 * SCALE
        probe = _client(self.port, 0.15)
        try:
            while time.monotonic() < deadline:
                try:
                    probe.ping()
                except redis.TimeoutError:
                    return thread
                time.sleep(0.005)
        finally:
            probe.close()
        raise AssertionError("DEBUG SLEEP never stalled the server")

    def replication(self) -> dict[str, object]:
        """``INFO replication`` as a dict."""
        with self.client() as c:
            info: dict[str, object] = c.info("replication")
            return info

    def wait_replicated(self, replica: RedisServer, timeout: float = 10.0) -> None:
        """Wait until ``replica`` is linked and has everything this primary wrote."""
        deadline = time.monotonic() + timeout * SCALE
        while time.monotonic() < deadline:
            mine, theirs = self.replication(), replica.replication()
            if theirs.get("master_link_status") == "up" and int(
                str(theirs.get("slave_repl_offset", -1))
            ) >= int(str(mine["master_repl_offset"])):
                return
            time.sleep(0.01)  # polling for a condition, with a deadline
        raise AssertionError(f"replica on {replica.port} did not catch up in {timeout} s")

    def cut_replicas(self) -> None:
        """Stop replicating to every replica, deterministically: the replicas'
        PSYNC and SYNC are refused (ACL) and their links killed, so they stay
        disconnected (retrying) while this primary takes writes."""
        with self.client() as c:
            c.execute_command("ACL", "SETUSER", "default", "-psync", "-sync")
            c.execute_command("CLIENT", "KILL", "TYPE", "replica")
        deadline = time.monotonic() + 10 * SCALE
        while int(str(self.replication().get("connected_slaves", 0))):
            assert time.monotonic() < deadline, "replicas still connected"
            time.sleep(0.01)  # polling for a condition, with a deadline

    def send_signal(self, sig: int) -> None:
        """Send a signal (SIGSTOP, SIGCONT) to the process."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill_pubsub(self) -> int:
        """CLIENT KILL TYPE pubsub; returns how many connections it cut."""
        with self.client() as c:
            return int(c.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))


class SentinelServer:
    """A Sentinel (``redis-server --sentinel``) watching ``primary`` as ``service``."""

    def __init__(
        self,
        directory: Path,
        primary: RedisServer,
        service: str = "chat",
        *,
        down_after_ms: int = 30_000,
    ) -> None:
        self.directory = directory
        self.primary = primary
        self.service = service
        #: how long the primary must be silent before it is down (and failed over)
        self.down_after_ms = down_after_ms
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The engine URL naming this Sentinel and the service."""
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}/0"

    def start(self, timeout: float = 10.0) -> SentinelServer:
        """Start and wait until it names the primary."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        config = self.directory / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"logfile {self.directory / 'sentinel.log'}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.service} {max(3 * self.down_after_ms, 3000)}\n"
        )
        self.proc = subprocess.Popen(
            [self.primary.binary, str(config), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout * SCALE
        probe = _client(self.port, 1.0)
        try:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, "redis-server --sentinel exited"
                try:
                    named = probe.execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
                    )
                    if named:
                        return self
                except (redis.ConnectionError, redis.ResponseError, redis.TimeoutError):
                    pass
                time.sleep(0.01)  # polling for a condition, with a deadline
        finally:
            probe.close()
        raise AssertionError(f"Sentinel on {self.port} not ready in {timeout} s")

    def primary_port(self) -> int:
        """The port of the primary this Sentinel names now."""
        with _client(self.port, 5 * SCALE) as c:
            _, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            return int(port)

    def wait_replicas(self, count: int, timeout: float = 10.0) -> None:
        """Wait until it knows ``count`` replicas of the primary."""
        deadline = time.monotonic() + timeout * SCALE
        with _client(self.port, 5 * SCALE) as c:
            while len(c.execute_command("SENTINEL", "REPLICAS", self.service)) < count:
                assert time.monotonic() < deadline, f"Sentinel knows no {count} replicas"
                time.sleep(0.01)  # polling for a condition, with a deadline

    def wait_primary(self, port: int, timeout: float = 20.0) -> None:
        """Wait until it names the server on ``port`` as the primary (failover done)."""
        deadline = time.monotonic() + timeout * SCALE
        while self.primary_port() != port:
            assert time.monotonic() < deadline, f"no failover to {port} in {timeout} s"
            time.sleep(0.02)  # polling for a condition, with a deadline

    def kill(self) -> None:
        """Stop it by its handle."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)
        self.proc = None
