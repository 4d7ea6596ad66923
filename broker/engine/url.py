"""Engine URLs: which Redis to use and how to reach it (docs/CLUSTER.md "URLs").

Accepted forms::

    redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]          plain TCP (port 6379)
    rediss://[[USER]:PASSWORD@]HOST[:PORT][/DB]         TLS
    unix://[[USER]:PASSWORD@]/PATH/TO/SOCKET[?db=DB]    a local socket
    redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]
                                                        the primary that the
                                                        Sentinels (port 26379)
                                                        name for SERVICE

The password of a Sentinel URL is the primary's; Sentinels themselves are
asked without one. Query parameters of the redis-py URL forms
(``?socket_timeout=…``) pass through for the first three.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

__all__ = ["EngineURL", "parse_url"]

_PLAIN = ("redis", "rediss", "unix")
_SENTINEL = "redis+sentinel"


@dataclass(frozen=True)
class EngineURL:
    """A parsed engine URL; :attr:`display` hides the password."""

    url: str
    scheme: str
    display: str
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def client(self, *, timeout: float) -> redis.Redis:
        """A client with ``timeout`` for connecting and for every reply.

        redis-py's own retries are off: a write that timed out may have run,
        and only the caller knows whether resending it is safe.
        """
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "retry_on_timeout": False,
        }
        if self.scheme != _SENTINEL:
            return redis.Redis.from_url(self.url, **options)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(self.sentinels),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        primary: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            self.service,
            db=self.db,
            username=self.username,
            password=self.password,
            **options,
        )
        return primary


def parse_url(url: str) -> EngineURL:
    """Check an engine URL and parse it; raises ValueError saying what is wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    display = _hide_password(url)
    if scheme in _PLAIN:
        if scheme != "unix" and not parts.hostname:
            raise ValueError(f"{display}: no host (expected {scheme}://HOST[:PORT][/DB])")
        if scheme == "unix" and not parts.path:
            raise ValueError(f"{display}: no socket path (expected unix:///PATH)")
        try:
            parts.port  # noqa: B018 (urlsplit checks the port only when asked)
        except ValueError:
            # urllib's own wording ("Port could not be cast to integer value
            # as 'abc'") names neither the URL part nor what is allowed.
            raise ValueError(f"{display}: the port must be a number from 1 to 65535") from None
        db_text = parts.path.strip("/") if scheme != "unix" else "0"
        if db_text and not db_text.isdigit():
            raise ValueError(f"{display}: the database must be a number, not {db_text!r}")
        return EngineURL(url, scheme, display, db=int(db_text or 0))
    if scheme == _SENTINEL:
        return _parse_sentinel(url, display)
    raise ValueError(
        f"{display}: unknown scheme {parts.scheme!r} "
        "(use redis://, rediss://, unix:// or redis+sentinel://)"
    )


def _parse_sentinel(url: str, display: str) -> EngineURL:
    rest = url.split("://", 1)[1]
    netloc, _, path = rest.partition("/")
    username: str | None = None
    password: str | None = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        user, _, secret = auth.partition(":")
        username = unquote(user) or None
        password = unquote(secret) or None
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        if item.startswith("["):  # [IPv6]:PORT
            host, _, tail = item[1:].partition("]")
            port = tail[1:] if tail.startswith(":") else ("26379" if not tail else "?")
        elif ":" in item:
            host, _, port = item.rpartition(":")
        else:
            host, port = item, "26379"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{display}: bad Sentinel address {item!r} (expected HOST[:PORT])")
        hosts.append((host, int(port)))
    pieces = [p for p in path.split("/") if p]
    if not pieces or len(pieces) > 2:
        raise ValueError(
            f"{display}: expected redis+sentinel://HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]"
        )
    if len(pieces) == 2 and not pieces[1].isdigit():
        raise ValueError(f"{display}: the database must be a number, not {pieces[1]!r}")
    return EngineURL(
        url,
        _SENTINEL,
        display,
        sentinels=tuple(hosts),
        service=unquote(pieces[0]),
        db=int(pieces[1]) if len(pieces) == 2 else 0,
        username=username,
        password=password,
    )


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    if "@" not in netloc:
        return url
    auth, host = netloc.rsplit("@", 1)
    user = auth.partition(":")[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"
