"""A :class:`~avalanche_exmask.storage.buffer.ByteBudgetBuffer`'s state as a JSON-ready dict plus
named tensors (what a checkpoint container stores), and its checked restoration.

The tensors: ``payload``, every record's bytes concatenated (``uint8 [total bytes]``), and
``generator/<name>``, the ``uint8`` states of the buffer's private generators (``selection``; its
augmentation's, ``augmentation``, when it has a seeded one). The JSON part: the codec's name, the
budget (bytes) and mode, the distinct layouts (type name and fields), per class its records (type
name, layout index, payload offset and length in bytes, ``Record.to_state()``) and the generator
names. Record and layout types are rebuilt only from the registered codecs' specs
(:meth:`~avalanche_exmask.registry.CodecRegistry.record_types`): nothing else is ever built.
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from avalanche_exmask.registry import CODECS
from avalanche_exmask.storage.codecs.base import Record

if TYPE_CHECKING:
    from avalanche_exmask.storage.buffer import ByteBudgetBuffer

__all__ = [
    "BufferState", "buffer_state_dict", "check_buffer_state", "apply_buffer_state", "generator_states", "record_types", "layout_types",
]


def record_types() -> dict[str, type[Record]]:
    """The record types a buffer state may name: ``Record`` and those the registered codecs' specs list."""
    return {Record.__name__: Record, **CODECS.record_types()}


def layout_types() -> dict[str, type]:
    """The layout types a buffer state may name: those the registered codecs' specs list."""
    return CODECS.layout_types()


@dataclasses.dataclass(frozen=True)
class BufferState:
    """A checked buffer state, ready to apply: records per class and generator states by name."""

    records: dict[int, list[Record]]
    generator_states: dict[str, torch.Tensor]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _fits_layout_field(layout_type: type, name: str, value: Any) -> bool:
    """Whether ``value`` fits field ``name`` of a layout: a bool for a ``bool`` field (such as
    ``CimLayout.pixels_once``), a non-negative int for every other."""
    return type(value) is bool if typing.get_type_hints(layout_type).get(name) is bool else _is_count(value)


def _augmentation_state(buffer: ByteBudgetBuffer) -> dict[str, torch.Tensor]:
    """The state of the buffer's augmentation (empty without one, or one that has no state)."""
    state_dict = getattr(buffer.augmentation, "state_dict", None)
    return dict(state_dict()) if state_dict is not None else {}


def generator_states(buffer: ByteBudgetBuffer) -> dict[str, torch.Tensor]:
    """The states of the buffer's private generators: ``selection``, and ``augmentation`` when its
    augmentation has a private one."""
    states = {"selection": buffer.generator.get_state()}
    augmentation = _augmentation_state(buffer)
    if "generator" in augmentation:
        states["augmentation"] = augmentation["generator"]
    return states


def buffer_state_dict(buffer: ByteBudgetBuffer) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(JSON-ready state, tensors)`` of ``buffer`` (see the module docstring).

    :raises TypeError: for a record or layout type no registered codec lists.
    """
    known_records, known_layouts = record_types(), layout_types()
    layouts: dict[Any, int] = {}
    payloads: list[bytes] = []
    offset = 0
    classes = []
    for label, group in buffer.records.items():
        entries = []
        for record in group:
            kind = type(record).__name__
            if known_records.get(kind) is not type(record):
                raise TypeError(f"cannot checkpoint a {kind}: record types are {sorted(known_records)}")
            if known_layouts.get(type(record.layout).__name__) is not type(record.layout):
                raise TypeError(f"cannot checkpoint a record with a {type(record.layout).__name__} layout")
            layout = layouts.setdefault(record.layout, len(layouts))
            entries.append({"type": kind, "layout": layout, "offset": offset, "nbytes": record.nbytes, "state": record.to_state()})
            payloads.append(record.data)
            offset += record.nbytes
        classes.append({"label": int(label), "records": entries})
    tensors = {"payload": torch.from_numpy(np.frombuffer(b"".join(payloads), dtype=np.uint8).copy())}
    generators = generator_states(buffer)
    for name, generator_state in generators.items():
        tensors[f"generator/{name}"] = generator_state
    state = {
        "codec": buffer.codec.name,
        "max_size": int(buffer.max_size),
        "mode": buffer.mode,
        "layouts": [{"type": type(layout).__name__, "fields": dict(layout._asdict())} for layout in layouts],
        "classes": classes,
        "generators": sorted(generators),
    }
    return state, tensors


def check_buffer_state(buffer: ByteBudgetBuffer, state: Any, tensors: Mapping[str, torch.Tensor]) -> BufferState:
    """The records and generator states of ``(state, tensors)`` checked against ``buffer`` (same
    codec, budget and mode; every record decodes once; every byte of the payload used; every
    generator state valid), without changing ``buffer``.

    :raises ValueError: naming what does not fit.
    """
    _require(isinstance(state, dict), "no buffer in the file")
    _require(
        state.get("codec") == buffer.codec.name,
        f"buffer codec is {buffer.codec.name!r}; the checkpoint's records are {state.get('codec')!r}",
    )
    _require(
        state.get("max_size") == buffer.max_size and state.get("mode") == buffer.mode,
        f"buffer budget is {buffer.max_size} bytes ({buffer.mode!r}); the checkpoint's "
        f"{state.get('max_size')} bytes ({state.get('mode')!r})",
    )
    layouts = []
    known_records, known_layouts = record_types(), layout_types()
    for entry in state.get("layouts") or []:
        _require(isinstance(entry, dict) and entry.get("type") in known_layouts, f"unknown layout {str(entry)[:80]}")
        layout_type: Any = known_layouts[entry["type"]]
        fields = entry.get("fields")
        _require(
            isinstance(fields, dict)
            and list(fields) == list(layout_type._fields)[: len(fields)]
            and set(layout_type._fields[len(fields) :]) <= set(layout_type._field_defaults)
            and all(_fits_layout_field(layout_type, name, value) for name, value in fields.items()),
            f"malformed {entry['type']} fields {str(fields)[:80]}",
        )
        layouts.append(layout_type(**fields))  # fields added since a file was written take their defaults
    payload = tensors.get("payload")
    _require(payload is not None and payload.dtype == torch.uint8 and payload.ndim == 1, "malformed buffer payload")
    assert payload is not None
    data = payload.numpy().tobytes()
    records: dict[int, list[Record]] = {}
    end = 0
    for group in state.get("classes") or []:
        _require(isinstance(group, dict) and _is_count(group.get("label")), "malformed buffer class")
        label = group["label"]
        _require(label not in records, f"buffer class {label} listed twice")
        records[label] = []
        for entry in group.get("records") or []:
            _require(isinstance(entry, dict), "malformed buffer record")
            kind, layout, offset, nbytes = (entry.get(key) for key in ("type", "layout", "offset", "nbytes"))
            _require(kind in known_records, f"record type {str(kind)[:40]!r} is not one of {sorted(known_records)}")
            _require(_is_count(layout) and layout < len(layouts), f"record layout {layout!r} out of range")
            _require(
                offset == end and _is_count(nbytes) and offset + nbytes <= len(data),
                f"record bytes [{offset}, {offset}+{nbytes}) do not follow on at {end} in a {len(data)}-byte payload",
            )
            record_state = entry.get("state")
            _require(
                isinstance(record_state, dict) and all(map(_is_count, record_state.values())) and record_state.get("label") == label,
                f"malformed record state {str(record_state)[:80]}",
            )
            try:
                record = known_records[kind].from_state(record_state, data=data[offset : offset + nbytes], layout=layouts[layout])
                buffer.codec.decode(record)
            except (TypeError, ValueError, ArithmeticError, RuntimeError) as error:  # RecordDecodeError is a ValueError
                raise ValueError(f"class {label}, record {len(records[label])} does not decode ({error})") from error
            records[label].append(record)
            end = offset + nbytes
    _require(end == len(data), f"buffer payload has {len(data) - end} bytes no record uses")
    generators = generator_states(buffer)
    _require(
        state.get("generators") == sorted(generators),
        f"buffer generators {sorted(generators)}; the checkpoint's {state.get('generators')}",
    )
    states: dict[str, torch.Tensor] = {}
    for name in generators:
        generator_state = tensors.get(f"generator/{name}")
        _require(generator_state is not None, f"buffer generator {name!r} state missing")
        assert generator_state is not None
        try:
            torch.Generator().set_state(generator_state)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"buffer generator {name!r}: invalid state ({error})") from error
        states[name] = generator_state
    return BufferState(records, states)


def apply_buffer_state(buffer: ByteBudgetBuffer, checked: BufferState) -> None:
    """Put a checked state back in ``buffer``; on failure the buffer is left as it was.

    :raises ValueError: if the buffer would not keep every record.
    """
    buffer.load_records(checked.records)
    buffer.generator.set_state(checked.generator_states["selection"])
    if "augmentation" in checked.generator_states:
        augmentation: Any = buffer.augmentation  # checked to have a state_dict with a generator
        augmentation.load_state_dict({"generator": checked.generator_states["augmentation"]})
