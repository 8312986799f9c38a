"""Greenroom's actors and the runtime that hosts and supervises them."""

from actors.actor import Actor, ActorBus
from actors.host import Host
from actors.registry import ACTORS, load

__all__ = ["ACTORS", "Actor", "ActorBus", "Host", "load"]
