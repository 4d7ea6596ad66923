"""CURVE keys as users give them (protocol/keys.py), the one reader shared by
the broker's key flags and the client's: the Z85 check against pyzmq's own
codec, key files against zmq.auth, and the flag names in the messages."""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
import zmq.auth
from hypothesis import given
from hypothesis import strategies as st
from zmq.utils import z85

from broker import auth
from client.cli import curve_options
from protocol.errors import ChatError
from protocol.keys import (
    Z85_KEY_LENGTH,
    KeyFileError,
    check_z85_key,
    is_z85_key,
    load_key_directory,
    load_secret,
    parse_public_key,
    read_key_file,
)
from tests.conftest import SCALE

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"


def _pyzmq_accepts(key: bytes) -> bool:
    """What pyzmq says: 40 characters that decode to 32 bytes."""
    if len(key) != Z85_KEY_LENGTH:
        return False
    try:
        return len(z85.decode(key)) == 32
    except (ValueError, KeyError, struct.error):  # bad character, overflowing group
        return False


# --- the Z85 check ------------------------------------------------------------------


@given(st.binary(min_size=32, max_size=32))
def test_every_encoded_key_is_accepted_as_is(raw: bytes) -> None:
    key = z85.encode(raw)
    assert is_z85_key(key) and is_z85_key(key.decode("ascii"))
    assert check_z85_key(key.decode("ascii"), "k") == key
    assert z85.decode(check_z85_key(key, "k")) == raw


@given(st.text(alphabet=_ALPHABET, min_size=40, max_size=40))
def test_the_check_agrees_with_pyzmq_on_z85_text(text: str) -> None:
    assert is_z85_key(text) == _pyzmq_accepts(text.encode("ascii"))


@given(st.one_of(st.binary(max_size=60), st.text(max_size=60)))
def test_any_input_is_a_yes_or_a_key_file_error(key: bytes | str) -> None:
    data = key.encode("utf-8") if isinstance(key, str) else key
    accepted = is_z85_key(key)
    assert accepted == _pyzmq_accepts(data)
    if accepted:
        assert check_z85_key(key, "k") == data
    else:
        with pytest.raises(KeyFileError, match="not a 40-character Z85 CURVE key"):
            check_z85_key(key, "k")


def test_groups_over_32_bits_are_refused() -> None:
    # "#" is the largest digit: "#####" is worth more than 2**32 - 1; pyzmq's
    # decoder fails on it with struct.error, which is neither of the errors
    # the old checks caught.
    assert not is_z85_key("#" * 40)
    assert not is_z85_key("%nSc1" + "0" * 35)  # exactly 2**32
    assert is_z85_key("%nSc0" + "0" * 35)  # 2**32 - 1
    with pytest.raises(KeyFileError):
        parse_public_key("#" * 40)
    # A character outside ASCII is not a "?" (a Z85 digit) in disguise.
    assert not is_z85_key("é" + "0" * 39)
    with pytest.raises(KeyFileError):
        parse_public_key("é" + "0" * 39)
    assert issubclass(KeyFileError, ChatError) and issubclass(KeyFileError, ValueError)


# --- key files ------------------------------------------------------------------------


def _pair(directory: Path, name: str = "k") -> tuple[Path, Path]:
    public, secret = zmq.auth.create_certificates(directory, name)
    return Path(public), Path(secret)


def test_key_files_read_as_zmq_auth_reads_them(tmp_path: Path) -> None:
    public_file, secret_file = _pair(tmp_path)
    assert read_key_file(public_file) == zmq.auth.load_certificate(public_file)
    assert read_key_file(secret_file) == zmq.auth.load_certificate(secret_file)
    public, secret = load_secret(secret_file)
    assert zmq.curve_public(secret) == public
    assert parse_public_key(str(public_file)) == public
    assert parse_public_key(str(secret_file)) == public
    assert parse_public_key(public.decode()) == public
    _pair(tmp_path, "other")
    (tmp_path / "notes.txt").write_text("not a key")
    assert load_key_directory(tmp_path) == frozenset(
        key.decode() for key in zmq.auth.load_certificates(tmp_path)
    )


def test_bad_key_files_are_refused_with_the_file_named(tmp_path: Path) -> None:
    public_file, _ = _pair(tmp_path)
    with pytest.raises(KeyFileError, match=r"k\.key holds no secret key"):
        load_secret(public_file)
    empty = tmp_path / "empty.key"
    empty.write_text("# nothing here\n")
    with pytest.raises(KeyFileError, match="holds no public key"):
        read_key_file(empty)
    broken = tmp_path / "broken.key"
    broken.write_text('curve\n    public-key = "tooshort"\n')
    with pytest.raises(KeyFileError, match=r"broken\.key: not a 40-character"):
        parse_public_key(str(broken))
    with pytest.raises(KeyFileError, match="cannot read key file"):
        read_key_file(tmp_path / "missing.key")
    with pytest.raises(KeyFileError, match="neither a key file nor"):
        parse_public_key("not-a-key")
    with pytest.raises(KeyFileError, match="is not a directory"):
        load_key_directory(public_file)


# --- the flags that use them -------------------------------------------------------------


def _client_args(server_key: str | None, curve_secret: str | None) -> argparse.Namespace:
    return argparse.Namespace(server_key=server_key, curve_secret=curve_secret)


def test_client_flags_name_themselves_in_errors(tmp_path: Path) -> None:
    public_file, secret_file = _pair(tmp_path)
    public, secret = load_secret(secret_file)
    options = curve_options(_client_args(str(public_file), str(secret_file)))
    assert options == {"server_key": public, "client_keys": (public, secret)}
    with pytest.raises(KeyFileError, match=r"^--server-key: 'not-a-key' is neither"):
        curve_options(_client_args("not-a-key", None))
    with pytest.raises(KeyFileError, match=r"^--server-key: .*not a 40-character"):
        curve_options(_client_args("#" * 40, None))
    with pytest.raises(KeyFileError, match=r"^--curve-secret: .*holds no secret key"):
        curve_options(_client_args(public.decode(), str(public_file)))


def test_broker_key_flags_use_the_same_reader(tmp_path: Path) -> None:
    public_file, secret_file = _pair(tmp_path)
    public, secret = load_secret(secret_file)
    assert auth.load_secret(secret_file) == (public, secret)
    assert auth.KeyFileError is KeyFileError
    with pytest.raises(KeyFileError, match=r"--allow-keys takes a directory"):
        auth.load_allowed_keys(public_file)
    registry = tmp_path / "nicks.txt"
    registry.write_text(f"alice {public.decode()}\nbob k.key\ncarol {'#' * 40}\n")
    with pytest.raises(KeyFileError, match=r"nicks\.txt line 3: .*not a 40-character"):
        auth.load_nick_keys(registry)
    registry.write_text(f"alice {public.decode()}\nbob k.key\n")
    assert set(auth.load_nick_keys(registry).values()) == {public.decode()}


def test_protocol_keys_import_no_zmq() -> None:
    code = (
        "import sys, protocol.keys\n"
        "bad = sorted(m for m in sys.modules if m == 'zmq' or m.startswith('zmq.'))\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=30 * SCALE, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
