"""Command-line values the broker and chat-keygen must refuse, up front.

Each bad value is run through the installed console script: it must exit 2
with ``PROG: error: ...`` naming the flag, no traceback, and no broker left
running (a refused value that still started a broker would hang the test, and
pytest-timeout fails it). Plus the pure endpoint check they rely on.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.keygen import write_keypair
from protocol import ErrorCode, ProtocolError, check_endpoint
from tests.conftest import ANY_PORT, SCALE, script, spawn_broker


def run(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a console script to completion; it must not wait for anything."""
    return subprocess.run(
        [script(name), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=10 * SCALE,
        check=False,
        cwd=cwd,
    )


def assert_usage_error(done: subprocess.CompletedProcess[str], prog: str, *wanted: str) -> None:
    assert done.returncode == 2, done.stderr
    assert f"{prog}: error: " in done.stderr
    assert "Traceback" not in done.stderr
    # argparse's fallback message names the type function ("invalid _seconds value").
    assert "invalid _" not in done.stderr
    for text in wanted:
        assert text in done.stderr


# --- chat-broker: bad values ------------------------------------------------

BAD_BROKER_FLAGS: list[tuple[list[str], str]] = [
    (["--client-timeout", "abc"], "expected a number of seconds"),
    (["--client-timeout", "nan"], "not a finite number"),
    (["--client-timeout", "inf"], "not a finite number"),
    (["--client-timeout=-inf"], "not a finite number"),
    (["--client-timeout", "1e999"], "not a finite number"),
    (["--client-timeout", "0"], "above 0"),
    (["--client-timeout", "-1"], "above 0"),
    (["--heartbeat", "nan"], "not a finite number"),
    (["--heartbeat", "0"], "above 0"),
    (["--heartbeat", "3", "--client-timeout", "5"], "more than half of --client-timeout"),
    (["--heartbeat", "6"], "more than half of --client-timeout"),  # default timeout 10
    (["--max-clients", "0"], "from 1 to"),
    (["--max-clients", "1.5"], "a whole number"),
    (["--rooms-per-client", "-3"], "from 1 to"),
    (["--burst", "0"], "from 1 to"),
    (["--history-lines", "99999999999999999999999"], "from 1 to"),
    (["--pub-hwm", "0"], "from 1 to"),
    (["--pub-hwm", "x"], "a whole number"),
    (["--max-rate", "-1"], "0 or more"),
    (["--max-rate", "nan"], "not a finite number"),
    (["--max-history-rate", "inf"], "not a finite number"),
    (["--max-history-rate", "-0.5"], "0 or more"),
    (["--history-days", "-1"], "from 0"),
    (["--history-days", "nan"], "not a finite number"),
    (["--history-days", "1e300"], "from 0"),
    (["--max-frame", "1000"], "32768"),
    (["--max-frame", "32767"], "room for the longest line"),
    (["--max-frame", "0"], "32768"),
    (["--router", "tcp://127.0.0.1:99999"], "port '99999'"),
    (["--router", "tcp://127.0.0.1:0"], "port '0'"),
    (["--router", "127.0.0.1:5555"], "TRANSPORT://ADDRESS"),
    (["--router", "tcp://127.0.0.1"], "tcp://HOST:PORT"),
    (["--pub", "udp://127.0.0.1:5556"], "unknown transport"),
    (["--pub", "tcp://300.1.1.1:5556"], "not an IPv4 address"),
    (["--pub", "tcp://::1:5556"], "brackets"),
    (["--advertise-pub", "garbage"], "TRANSPORT://ADDRESS"),
    (["--advertise-pub", "tcp://*:*"], "only for binding"),
    (["--advertise-pub", "tcp://example.org:*"], "only for binding"),
    (["--advertise-pub", "tcp://exa mple.org:5556"], "spaces"),
    (["--allow-keys", "."], "need --curve-secret"),
    # an unset variable in `--engine "$REDIS_URL"` must not mean SQLite mode
    (["--engine", ""], "empty"),
    (["--engine", " "], "empty"),
]


@pytest.mark.parametrize(
    ("args", "wanted"), BAD_BROKER_FLAGS, ids=[" ".join(args) for args, _ in BAD_BROKER_FLAGS]
)
def test_broker_refuses_bad_value(args: list[str], wanted: str) -> None:
    # Valid ephemeral endpoints unless the case is about them: a refused value
    # must never get as far as binding a fixed port.
    endpoints = [flag for flag in ("--router", "--pub") if flag not in args]
    fixed = [part for flag in endpoints for part in (flag, ANY_PORT)]
    done = run("chat-broker", *fixed, "--history", ":memory:", *args)
    flag = next(arg for arg in args if arg.startswith("--")).partition("=")[0]
    assert_usage_error(done, "chat-broker", wanted)
    assert flag in done.stderr


def test_broker_help_says_why_max_frame_has_a_minimum() -> None:
    done = run("chat-broker", "--help")
    assert done.returncode == 0
    assert "at least 32768" in " ".join(done.stdout.split())


def test_broker_accepts_boundary_values_and_wildcard_advertised_host() -> None:
    # A heartbeat of exactly half the timeout is allowed; an advertised
    # 0.0.0.0 host is what clients replace with the router's host. It is only
    # advertised, never bound; its port is an ephemeral one we hold meanwhile.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        advertised = f"tcp://0.0.0.0:{held.getsockname()[1]}"
        flags = ["--client-timeout", "2", "--heartbeat", "1", "--max-frame", "32768"]
        flags += ["--max-rate", "0", "--history-days", "0", "--advertise-pub", advertised]
        handle = spawn_broker(*flags)
        try:
            assert f"clients are told {advertised}" in handle.wait_for_log("pub bound to")
        finally:
            assert handle.stop() == 0


# --- --allow-keys ---------------------------------------------------------


@pytest.fixture
def server_secret(tmp_path: Path) -> str:
    """A broker keypair's secret file."""
    _, secret = write_keypair(tmp_path / "server")
    return str(secret)


def test_allow_keys_must_be_a_directory(server_secret: str, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "allowed.txt"
    not_a_dir.write_text("")
    for path in (not_a_dir, tmp_path / "missing"):
        done = run(
            "chat-broker",
            "--router",
            ANY_PORT,
            "--pub",
            ANY_PORT,
            "--history",
            ":memory:",
            "--curve-secret",
            server_secret,
            "--allow-keys",
            str(path),
        )
        assert done.returncode == 2, done.stderr
        assert f"{path} is not a directory" in done.stderr
        assert "Traceback" not in done.stderr


def test_allow_keys_without_keys_warns(server_secret: str, tmp_path: Path) -> None:
    empty = tmp_path / "allowed"
    empty.mkdir()
    (empty / "server.key_secret").write_text("")  # not a *.key file: ignored
    handle = spawn_broker("--curve-secret", server_secret, "--allow-keys", str(empty))
    try:
        line = handle.wait_for_log("no client will be able to connect")
        assert "WARNING" in line
    finally:
        assert handle.stop() == 0


def test_allow_keys_with_a_key_does_not_warn(server_secret: str, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    write_keypair(allowed / "alice")
    handle = spawn_broker("--curve-secret", server_secret, "--allow-keys", str(allowed))
    try:
        handle.wait_for_log("CURVE public key")  # logged after the allow list is read
        assert not any("no client will be able" in line for line in handle.log)
    finally:
        assert handle.stop() == 0


# --- chat-keygen ------------------------------------------------------------


@pytest.mark.parametrize("path", ["", "sub/", ".", "..", "sub/..", "sub/."])
def test_keygen_refuses_a_path_without_a_name(path: str, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    done = run("chat-keygen", path, cwd=tmp_path / "sub")
    assert_usage_error(done, "chat-keygen", "names no file")
    # Nothing written anywhere near: no hidden .key / .key_secret.
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["sub"]


def test_keygen_writes_a_named_pair(tmp_path: Path) -> None:
    done = run("chat-keygen", "alice", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.key", "alice.key_secret"]


def test_write_keypair_refuses_a_path_without_a_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="names no file"):
        write_keypair(f"{tmp_path}/")
    assert list(tmp_path.iterdir()) == []


# --- check_endpoint, pure ---------------------------------------------------

GOOD: list[tuple[str, bool]] = [
    ("tcp://127.0.0.1:5555", False),
    ("tcp://localhost:1", False),
    ("tcp://chat.example.org.:65535", False),
    ("tcp://eth0:5555", True),
    ("tcp://br_lan:5555", True),
    ("tcp://[::1]:5555", False),
    ("tcp://[fe80::1%eth0]:5555", False),
    ("tcp://0.0.0.0:5556", False),  # clients replace it with the router's host
    ("tcp://*:5555", True),
    ("tcp://127.0.0.1:*", True),
    ("tcp://*:*", True),
    ("ipc:///tmp/chat.sock", False),
    ("ipc://@abstract", False),
    ("ipc://*", True),
    ("inproc://broker", False),
]

BAD: list[tuple[str, bool, str]] = [
    ("", True, "empty"),
    ("tcp://127.0.0.1:5555 ", True, "spaces"),
    ("tcp://127.0.0.1:55\n55", True, "control"),
    ("tcp://127.0.0.1:5555\u202e", True, "control"),
    ("127.0.0.1:5555", True, "TRANSPORT://ADDRESS"),
    ("http://x:80", True, "unknown transport"),
    ("TCP://x:80", True, "unknown transport"),
    ("tcp://", True, "tcp://HOST:PORT"),
    ("tcp://:5555", True, "host is missing"),
    ("tcp://127.0.0.1:", True, "port ''"),
    ("tcp://127.0.0.1:0", True, "port '0'"),
    ("tcp://127.0.0.1:65536", True, "port '65536'"),
    ("tcp://127.0.0.1:-1", True, "port '-1'"),
    ("tcp://127.0.0.1:\u0665", True, "port"),  # a non-ASCII digit
    ("tcp://127.0.0.1:" + "1" * 5000, True, "port"),  # beyond int()'s digit limit
    ("tcp://*:5555", False, "only for binding"),
    ("tcp://127.0.0.1:*", False, "only for binding"),
    ("tcp://1.2.3:5555", True, "not an IPv4 address"),
    ("tcp://256.0.0.1:5555", True, "not an IPv4 address"),
    ("tcp://[::g]:5555", True, "not an IPv6 address"),
    ("tcp://::1:5555", True, "brackets"),
    ("tcp://a..b:5555", True, "not a host name"),
    ("tcp://-a:5555", True, "not a host name"),
    ("tcp://" + "a" * 64 + ":5555", True, "not a host name"),
    ("tcp://h\u00e9:5555", True, "not a host name"),
    ("ipc://", True, "needs a path"),
    ("ipc://*", False, "only for binding"),
    ("ipc:///" + "x" * 200, True, "at most"),
    ("inproc://", True, "needs a name"),
]


@pytest.mark.parametrize(("text", "bind"), GOOD)
def test_check_endpoint_accepts(text: str, bind: bool) -> None:
    assert check_endpoint(text, bind=bind) == text
    if not bind:  # whatever one can connect to, one may also name for a bind
        assert check_endpoint(text, bind=True) == text


@pytest.mark.parametrize(("text", "bind", "why"), BAD)
def test_check_endpoint_refuses(text: str, bind: bool, why: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        check_endpoint(text, bind=bind)
    assert caught.value.code is ErrorCode.BAD_ENDPOINT
    assert why in caught.value.message
    assert len(caught.value.message) < 300  # a huge endpoint is cut in the message


@given(st.text(), st.booleans())
def test_check_endpoint_returns_or_raises_protocol_error(text: str, bind: bool) -> None:
    try:
        assert check_endpoint(text, bind=bind) == text
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_ENDPOINT


@given(
    st.sampled_from(["tcp://", "ipc://", "inproc://", "tcp://[", "tcp://*:", "tcp://127.0.0.1:"]),
    st.text(alphabet=st.characters(codec="ascii"), max_size=30),
    st.booleans(),
)
def test_check_endpoint_near_valid_prefixes(prefix: str, rest: str, bind: bool) -> None:
    # Random text after a plausible prefix reaches the per-transport checks,
    # which plain st.text() rarely does.
    text = prefix + rest
    try:
        assert check_endpoint(text, bind=bind) == text
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_ENDPOINT


def test_an_explicit_heartbeat_too_long_for_the_engine_lease_is_warned_about() -> None:
    # Clients would notice a dead broker only after its lease: they would
    # start afresh elsewhere (seen leaving and joining) instead of moving.
    # The warning comes before the engine is reached (none is running here).
    done = run(
        "chat-broker",
        *("--router", ANY_PORT, "--pub", ANY_PORT),
        *("--engine", "redis://127.0.0.1:1/0", "--heartbeat", "2"),
    )
    assert done.returncode == 1
    assert "heartbeat 2 s: clients notice a dead broker after 6 s" in done.stderr
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in done.stderr
