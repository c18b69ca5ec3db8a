"""Registries: names -> builders, for methods and codecs.

In the spirit of open_clip's model registry and peft's ``register_peft_method``: a new method or
codec is one module with one registration, and everything else (the runner, the config
validation, the results tables) finds it by name::

    from avalanche_exmask.registry import CODECS

    @CODECS.register("toy")
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class ToyCodec:
        name: ClassVar[str] = "toy"
        level: int = 3
        def encode(self, sample, scores, label): ...
        def decode(self, record): ...

The built-in entries register themselves when :func:`builtin_entries` first runs (on the first
lookup), so importing this module stays cheap.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry", "METHODS", "CODECS", "builtin_entries"]

T = TypeVar("T")

_BUILTIN_MODULES = (
    "avalanche_exmask.storage.codecs",
    "avalanche_exmask.methods",
)


def builtin_entries() -> None:
    """Import the modules whose import registers the built-in codecs and methods (idempotent)."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


class Registry(Generic[T]):
    """A name -> entry mapping with a decorator to fill it.

    :param kind: what the entries are (``"method"``, ``"codec"``), for error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]:
        """Decorator registering its argument under ``name``.

        :param replace: allow replacing an existing entry (otherwise a second registration of a
            name raises ``ValueError``).
        """
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"a {self.kind} name must be a non-empty string without surrounding spaces; got {name!r}")

        def decorator(entry: T) -> T:
            if name in self._entries and not replace and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self._entries[name]!r})")
            self._entries[name] = entry
            return entry

        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and plugins that replace an entry)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry of ``name``.

        :raises KeyError: naming the known entries.
        """
        builtin_entries()
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {sorted(self._entries)}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        builtin_entries()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        builtin_entries()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


#: Methods: name -> :class:`avalanche_exmask.methods.base.MethodSpec`.
METHODS: Registry = Registry("method")

#: Codecs: name -> a codec class (a frozen dataclass whose fields are its options).
CODECS: Registry = Registry("codec")
