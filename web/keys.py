"""Typed application keys: the edge's shared state, no globals."""

from __future__ import annotations

import weakref

from aiohttp import web

from bus import Connection
from config.characters import Card
from config.settings import Settings
from web.hub import Hub

CONN = web.AppKey("conn", Connection)
HUB = web.AppKey("hub", Hub)
CARDS = web.AppKey("cards", dict[str, Card])
SETTINGS = web.AppKey("settings", Settings)
SOCKETS = web.AppKey("sockets", weakref.WeakSet[web.WebSocketResponse])
