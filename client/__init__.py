"""The chat client library: ``Client`` (blocking) and ``AsyncClient`` (asyncio),
both on one session core (client/session.py), plus the events they yield, and
``Bot`` for chat bots (client/bot.py)."""

from client import events
from client.aio import AsyncClient
from client.bot import Bot
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
    "Bot",
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
