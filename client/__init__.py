"""The chat client library: ``Client`` (blocking) and ``AsyncClient`` (asyncio),
both on one session core (client/session.py), plus the events they yield."""

from client import events
from client.aio import AsyncClient
from client.session import ClientSession, State
from client.sync import Client
from protocol import (
    BrokerUnreachable,
    ChatError,
    ClientError,
    ConnectionClosed,
    JoinRefused,
    ProtocolError,
    RequestFailed,
)

__all__ = [
    "AsyncClient",
    "BrokerUnreachable",
    "ChatError",
    "Client",
    "ClientError",
    "ClientSession",
    "ConnectionClosed",
    "JoinRefused",
    "ProtocolError",
    "RequestFailed",
    "State",
    "events",
]
