"""Registries: names -> entries, for methods, codecs and benchmarks.

In the spirit of open_clip's model registry and peft's ``register_peft_method``: a new method,
codec or benchmark is one module with one registration, and everything else (the runner, the config
validation, the checkpoint, the results tables) finds it by name and asks its entry. A registry
entry is the whole contract of its extension: a codec's :class:`CodecSpec` names its record and
layout types (what a checkpoint may rebuild) and its checks of a run config; a method's
:class:`~avalanche_exmask.methods.base.MethodSpec` its builder, codec and options; a benchmark's
:class:`BenchmarkSpec` where its generator lives. A codec class registered bare gets a default
spec: plain :class:`~avalanche_exmask.storage.codecs.base.Record` records, no layout types of its
own (its records checkpoint only with a registered layout type)::

    from avalanche_exmask.registry import CODECS

    @CODECS.register("toy")
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class ToyCodec:
        name: ClassVar[str] = "toy"
        level: int = 3
        def encode(self, sample, scores, label): ...
        def decode(self, record): ...

The built-in entries register themselves when :func:`builtin_entries` first runs (on the first
lookup), so importing this module stays cheap; it imports nothing from the package at import time.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "CodecSpec", "CodecRegistry", "BenchmarkSpec", "METHODS", "CODECS", "BENCHMARKS", "builtin_entries"]

T = TypeVar("T")

#: Modules whose import registers the built-in codecs and methods.
_BUILTIN_MODULES = ("avalanche_exmask.storage.codecs", "avalanche_exmask.methods")
#: Modules whose import registers the built-in benchmarks (cheap: the generators load on use).
_BUILTIN_BENCHMARK_MODULES = ("avalanche_exmask.benchmarks.generators",)


def builtin_entries() -> None:
    """Import the modules whose import registers the built-in codecs, methods and benchmarks (idempotent)."""
    for module in _BUILTIN_MODULES + _BUILTIN_BENCHMARK_MODULES:
        importlib.import_module(module)


class Registry(Generic[T]):
    """A name -> entry mapping with a decorator to fill it.

    :param kind: what the entries are (``"method"``, ``"codec"``), for error messages.
    :param builtin_modules: modules imported (once) before the first lookup, whose import registers
        the built-in entries.
    """

    def __init__(self, kind: str, builtin_modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.builtin_modules = builtin_modules
        self._entries: dict[str, T] = {}

    def _load_builtins(self) -> None:
        for module in self.builtin_modules:
            importlib.import_module(module)

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
        self._load_builtins()
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {sorted(self._entries)}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._load_builtins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


@dataclasses.dataclass(frozen=True)
class CodecSpec:
    """A registered codec: its class and what the rest of the package needs to know about it.

    :param codec: the codec class, a frozen dataclass whose init fields are its options (except the
        runtime fields ``patch_size`` and ``class_token_ids`` that the runner fills).
    :param record_types: the :class:`~avalanche_exmask.storage.codecs.base.Record` subclasses its
        ``encode`` returns (a checkpoint rebuilds only ``Record`` and registered record types).
    :param layout_types: the ``NamedTuple`` layout classes of its records (a checkpoint rebuilds
        only registered layout types).
    :param complete_options: ``resolved options -> resolved options``: fills values that stand for
        a default (applied to the JSON-ready dict a resolved config stores).
    :param needs_class_names: ``built option values -> None`` if the codec does without the
        benchmark's class-name token ids, else the message (after ``storage.options.<name>.``) of
        the error raised when the benchmark has none: the option that needs them and what to set
        instead. The ids are given as the codec's ``class_token_ids`` field.
    :param check_run: ``(run config, the config's options of this codec) -> None``, raising
        ``ValueError`` for a combination of settings the codec cannot serve.
    """

    codec: type
    record_types: tuple[type, ...] = ()
    layout_types: tuple[type, ...] = ()
    complete_options: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    needs_class_names: Callable[[Mapping[str, Any]], str | None] | None = None
    check_run: Callable[[Any, Mapping[str, Any]], None] | None = None

    def __call__(self, **options: Any) -> Any:
        """An instance of the codec class (so ``CODECS.get(name)(**options)`` builds one)."""
        return self.codec(**options)


class CodecRegistry(Registry[CodecSpec]):
    """The codec registry: entries are :class:`CodecSpec`; registering a bare codec class (as a
    class decorator) registers ``CodecSpec(codec=cls)`` and returns the class unchanged."""

    def register(self, name: str, *, replace: bool = False) -> Callable[[Any], Any]:
        add = super().register(name, replace=replace)

        def decorator(entry: Any) -> Any:
            if isinstance(entry, CodecSpec):
                add(entry)
            else:
                known = self._entries.get(name)
                add(known if known is not None and known.codec is entry else CodecSpec(codec=entry))
            return entry

        return decorator

    def record_types(self) -> dict[str, type]:
        """Class name -> record class, over every registered codec."""
        return {cls.__name__: cls for name in self.names() for cls in self.get(name).record_types}

    def layout_types(self) -> dict[str, type]:
        """Class name -> layout class, over every registered codec."""
        return {cls.__name__: cls for name in self.names() for cls in self.get(name).layout_types}


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    """A registered benchmark: where its generator lives, imported on first use (generators import
    heavy packages: datasets, PIL, Avalanche).

    :param module: the generator's module.
    :param function: the generator's name in it: ``(n_experiences, **args) -> benchmark``.
    """

    module: str
    function: str

    @classmethod
    def of(cls, generator: Callable[..., Any]) -> BenchmarkSpec:
        """The spec of an imported generator function."""
        return cls(generator.__module__, generator.__qualname__)

    def generator(self) -> Callable[..., Any]:
        """The generator function (its module imported now)."""
        return getattr(importlib.import_module(self.module), self.function)


#: Methods: name -> :class:`avalanche_exmask.methods.base.MethodSpec`.
METHODS: Registry = Registry("method", _BUILTIN_MODULES)

#: Codecs: name -> :class:`CodecSpec`.
CODECS: CodecRegistry = CodecRegistry("codec", _BUILTIN_MODULES)

#: Benchmarks: name -> :class:`BenchmarkSpec`.
BENCHMARKS: Registry[BenchmarkSpec] = Registry("benchmark", _BUILTIN_BENCHMARK_MODULES)
