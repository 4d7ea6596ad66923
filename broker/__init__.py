"""The chat broker: a ROUTER for requests, an XPUB for broadcasts, one loop."""

from broker.core import Action, BrokerConfig, BrokerCore, Publish, Send
from broker.history import HistoryStore, MemoryHistory, StorageError
from broker.server import BrokerServer

__all__ = [
    "Action",
    "BrokerConfig",
    "BrokerCore",
    "BrokerServer",
    "HistoryStore",
    "MemoryHistory",
    "Publish",
    "Send",
    "StorageError",
]
