"""Command-line values the broker and chat-keygen must refuse, up front.

Each bad value is run through the installed console script: it must exit 2
with ``PROG: error: ...`` naming the flag, no traceback, and no broker left
running (a refused value that still started a broker would hang the test, and
pytest-timeout fails it). Plus the pure endpoint check they rely on.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import ErrorCode, ProtocolError, check_endpoint

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
