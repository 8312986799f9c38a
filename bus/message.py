"""Typed messages and the registry that maps wire names to them.

A message type is a frozen, slotted dataclass declared with :func:`message`,
which registers it under a stable wire name. Decoding looks the name up in a
registry; a name nobody registered is an error, never an import.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar, Union, dataclass_transform, get_args, get_origin


class BusError(Exception):
    """Base class of every error the bus raises."""


class DecodeError(BusError):
    """A frame or body could not be turned into a message; the text says why."""


class UnknownTypeError(DecodeError):
    """The wire named a message type this registry does not know."""


class Message:
    """Base of all message bodies. Subclasses are created with :func:`message`."""

    __slots__ = ()
    __wire__: ClassVar[str]
    __version__: ClassVar[int]
    __control__: ClassVar[bool]


M = TypeVar("M", bound=Message)
_Check = Callable[[Any], Any]  # returns the (possibly converted) value or raises TypeError


@dataclasses.dataclass(frozen=True, slots=True)
class MessageSpec:
    """What the registry knows about one message type."""

    cls: type[Message]
    """The dataclass."""
    wire: str
    """Stable wire name, e.g. ``chat.user_text``."""
    version: int
    """Schema version, sent as header ``v``."""
    control: bool
    """Control messages overtake queued data (interrupt, cancel, shutdown)."""
    names: tuple[str, ...]
    """Field names, in declaration order."""
    checks: tuple[_Check, ...]
    """One value check per field, same order as ``names``."""
    required: frozenset[str]
    """Fields without a default."""

    def to_body(self, msg: Message) -> dict[str, Any]:
        return {name: getattr(msg, name) for name in self.names}

    def from_body(self, body: Any, version: int) -> Message:
        if not isinstance(body, dict):
            raise DecodeError(f"{self.wire}: body must be a map, got {type(body).__name__}")
        values: dict[str, Any] = {}
        for name, check in zip(self.names, self.checks, strict=True):
            if name in body:
                try:
                    values[name] = check(body[name])
                except TypeError as exc:
                    raise DecodeError(f"{self.wire}.{name}: {exc}") from None
        missing = self.required.difference(values)
        if missing:
            raise DecodeError(f"{self.wire}: missing field(s) {', '.join(sorted(missing))}")
        if len(values) != len(body):
            unknown = sorted(str(k) for k in body if k not in values)
            # A newer sender may add fields; an equal or older one may not.
            if version <= self.version:
                raise DecodeError(f"{self.wire}: unknown field(s) {', '.join(unknown)}")
        return self.cls(**values)


class Registry:
    """Wire name -> message spec. Registration is explicit and names are unique."""

    def __init__(self) -> None:
        self._by_wire: dict[str, MessageSpec] = {}
        self._by_cls: dict[type[Message], MessageSpec] = {}

    def add(self, cls: type[Message], wire: str, version: int, control: bool) -> MessageSpec:
        if not wire or "|" in wire or not wire.isascii():
            raise ValueError(f"bad wire name {wire!r}: ascii, non-empty, no '|'")
        if wire in self._by_wire:
            raise ValueError(f"wire name {wire!r} already registered by {self._by_wire[wire].cls}")
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        spec = MessageSpec(
            cls=cls,
            wire=wire,
            version=version,
            control=control,
            names=tuple(f.name for f in fields),
            checks=tuple(_checker(hints[f.name]) for f in fields),
            required=frozenset(
                f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            ),
        )
        self._by_wire[wire] = spec
        self._by_cls[cls] = spec
        return spec

    def spec(self, wire: str) -> MessageSpec:
        try:
            return self._by_wire[wire]
        except KeyError:
            raise UnknownTypeError(f"unknown message type {wire!r}") from None

    def spec_of(self, cls: type[Message]) -> MessageSpec:
        try:
            return self._by_cls[cls]
        except KeyError:
            raise BusError(f"{cls.__name__} is not registered in this registry") from None

    def __contains__(self, wire: object) -> bool:
        return wire in self._by_wire

    def __iter__(self) -> typing.Iterator[MessageSpec]:
        return iter(list(self._by_wire.values()))

    def __len__(self) -> int:
        return len(self._by_wire)


REGISTRY = Registry()
"""The process-wide default registry every built-in message type joins."""


@dataclass_transform(frozen_default=True)
def message(
    wire: str, *, version: int = 1, control: bool = False, registry: Registry = REGISTRY
) -> Callable[[type[M]], type[M]]:
    """Class decorator: make ``cls`` a frozen slotted dataclass and register it.

    >>> @message("diag.ping")
    ... class Ping(Message):
    ...     text: str = ""
    """

    def wrap(cls: type[M]) -> type[M]:
        dc = dataclasses.dataclass(frozen=True, slots=True)(cls)
        dc.__wire__ = wire
        dc.__version__ = version
        dc.__control__ = control
        registry.add(dc, wire, version, control)
        return dc

    return wrap


# -- value checks ---------------------------------------------------------------------------

_SCALARS: Mapping[type, str] = {str: "str", bytes: "bytes", bool: "bool"}


def _checker(hint: Any) -> _Check:
    """Build a check for one field from its type hint (the subset msgpack can carry)."""
    if hint is Any:
        return _any
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [_checker(a) for a in get_args(hint) if a is not type(None)]
        nullable = type(None) in get_args(hint)
        return _union(options, nullable, _name(hint))
    if origin is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return _sequence(_checker(args[0]), _name(hint))
        raise TypeError(f"only tuple[X, ...] fields are supported, not {hint}")
    if origin is dict:
        key, value = get_args(hint)
        return _mapping(_checker(key), _checker(value), _name(hint))
    if hint is float:
        return _float
    if hint is int:
        return _int
    if hint in _SCALARS:
        return _scalar(hint)
    if hint is dict:
        return _mapping(_any, _any, "dict")
    raise TypeError(f"field type {hint!r} cannot travel on the bus")


def _name(hint: Any) -> str:
    return str(hint).replace("typing.", "")


def _any(value: Any) -> Any:
    return value


def _int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected int, got {type(value).__name__}")
    return value


def _float(value: Any) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    raise TypeError(f"expected float, got {type(value).__name__}")


def _scalar(kind: type) -> _Check:
    label = _SCALARS[kind]

    def check(value: Any) -> Any:
        if type(value) is not kind:
            raise TypeError(f"expected {label}, got {type(value).__name__}")
        return value

    return check


def _union(options: list[_Check], nullable: bool, label: str) -> _Check:
    def check(value: Any) -> Any:
        if value is None and nullable:
            return None
        for option in options:
            try:
                return option(value)
            except TypeError:
                continue
        raise TypeError(f"expected {label}, got {type(value).__name__}")

    return check


def _sequence(item: _Check, label: str) -> _Check:
    def check(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected {label}, got {type(value).__name__}")
        return tuple(item(v) for v in value)

    return check


def _mapping(key: _Check, value: _Check, label: str) -> _Check:
    def check(obj: Any) -> dict[Any, Any]:
        if not isinstance(obj, dict):
            raise TypeError(f"expected {label}, got {type(obj).__name__}")
        return {key(k): value(v) for k, v in obj.items()}

    return check
