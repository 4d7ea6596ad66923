"""Which broker to talk to: the ROUTER endpoints of one cluster, in turn.

A client may be given several brokers of one cluster (docs/CLUSTER.md). It
talks to one at a time; when that one is lost, each reconnect try goes to the
next endpoint, round robin, and the session is resumed there with its token
(docs/PROTOCOL.md §5.3): any broker of the cluster can resume it. With one
endpoint nothing changes.

Endpoints are given as a list or as one comma-separated string (ZeroMQ
endpoints never contain a comma in practice, and ``--server A,B`` reads as
easily as ``--server A --server B``).
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol import ErrorCode, ProtocolError, check_endpoint

__all__ = ["CONNECT_TRY", "Endpoints", "parse_servers"]

#: With several endpoints, how long a first ``hello`` waits for its welcome
#: before the next endpoint is tried (a broker down at start-up never answers:
#: ZeroMQ only retries the TCP connection, it reports no refusal).
CONNECT_TRY = 2.0


def parse_servers(servers: str | Sequence[str]) -> tuple[str, ...]:
    """The endpoints in ``servers`` (one string, comma-separated, or several),
    each checked, duplicates dropped, order kept.

    Raises ProtocolError (``bad_endpoint``) for an unusable endpoint or none."""
    items = [servers] if isinstance(servers, str) else list(servers)
    found: list[str] = []
    for item in items:
        for part in item.split(","):
            if not part.strip():
                continue  # "A,B," or "A, ,B": a stray comma, nothing lost
            endpoint = check_endpoint(part.strip(), bind=False)
            if endpoint not in found:
                found.append(endpoint)
    if not found:
        raise ProtocolError(ErrorCode.BAD_ENDPOINT, "no broker endpoint given")
    return tuple(found)


class Endpoints:
    """The endpoints and the one in use; :meth:`advance` moves on."""

    def __init__(self, servers: str | Sequence[str]) -> None:
        self.all = parse_servers(servers)
        self.index = 0

    def __len__(self) -> int:
        return len(self.all)

    @property
    def current(self) -> str:
        """The endpoint the client talks to now."""
        return self.all[self.index]

    def advance(self) -> str:
        """Move to the next endpoint (round robin) and return it."""
        self.index = (self.index + 1) % len(self.all)
        return self.current
