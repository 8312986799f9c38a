"""Greenroom's message bus: the only package that touches ZeroMQ.

Public front; the pieces live in small private-by-convention modules.
"""

from bus.broker import Broker
from bus.codec import RawMessage, decode, decode_raw, encode
from bus.connection import BusClosed, Connection, QueueFull
from bus.endpoints import ENV_VAR, Endpoints
from bus.envelope import Envelope, Header, new_id, type_prefix
from bus.message import REGISTRY, BusError, DecodeError, Message, Registry, UnknownTypeError, message
from bus.queues import QUEUES

__all__ = [
    "ENV_VAR",
    "QUEUES",
    "REGISTRY",
    "Broker",
    "BusClosed",
    "BusError",
    "Connection",
    "DecodeError",
    "Endpoints",
    "Envelope",
    "Header",
    "Message",
    "QueueFull",
    "RawMessage",
    "Registry",
    "UnknownTypeError",
    "decode",
    "decode_raw",
    "encode",
    "message",
    "new_id",
    "type_prefix",
]
