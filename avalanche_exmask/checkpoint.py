"""Checkpoints of a training run without pickle: model, optimizer, scheduler, exemplar buffer, RNGs.

Avalanche's own checkpoints pickle the whole strategy (with ``dill``): they cannot hold a model
adapted with ``torch.nn.utils.parametrize`` (the SSF adapter), and loading one runs whatever code
the file names. A checkpoint here is one safetensors file, read without pickle, holding tensors and
a JSON skeleton describing everything else (the container, its digest, atomic writing and
header-first reading: :mod:`~avalanche_exmask.checkpoint_file`).

**Contents** (format version 1). Tensors, by name:

* ``model/<key>``: every entry of ``model.state_dict()`` (the adapter, the frozen weights, the head
  with its grown units and ``active_units``);
* ``optimizer/state/<parameter name>/<key>``: the optimizer's per-parameter state tensors (AdamW:
  ``step``, ``exp_avg``, ``exp_avg_sq``), keyed by the parameter's name in the model, not by its
  position, so that a fresh optimizer built over other parameter objects can take them
  (``optimizer/group/<index>/...``: tensors among a parameter group's options);
* ``buffer/payload``: ``uint8 [total bytes]``, the payloads of every stored exemplar record,
  concatenated in the buffer's order (class by class, each class in selection order);
* ``buffer/generator/<name>``: ``uint8`` states of the buffer's ``torch.Generator`` objects
  (``selection``; ``augmentation`` when its augmentation has a seeded generator);
* ``rng/torch``, ``rng/numpy``, ``rng/cuda/<device>``: the global random states;
* ``scheduler/...``, ``extra/...``: tensors inside the scheduler state or the caller's ``extra``.

The skeleton holds the model's keys; the optimizer's class, parameter groups (names and options)
and non-tensor state; the buffer's codec, budget, record layouts and, per record, its type from the
registered codecs' record types, layout, payload offset and length and extra slots; the strategy's
optimized parameter names and clock; the Python and NumPy RNG states; ``extra``. Each section is
gathered, checked and restored by :mod:`~avalanche_exmask.checkpoint_sections` (the random states
by :mod:`~avalanche_exmask.checkpoint_rng`, the buffer by
:mod:`~avalanche_exmask.storage.buffer_state`).

**Saving** encodes everything first (so an unstorable value fails before any file is touched),
then writes the file atomically: a process killed at any moment leaves the previous checkpoint whole.

**Loading** checks the header against the objects it is loaded into and the declared bytes against
a bound of the model's and buffer's sizes
(:func:`~avalanche_exmask.checkpoint_sections.check_header`) before any tensor is read. Then it
reads the tensors, checks the digest (with the key, if given), the structure, the record types,
that every tensor fits, that every record decodes with the buffer's codec and the caller's check of
``extra``, and modifies nothing until all checks pass; any problem raises :class:`CheckpointError`
naming the file. The buffer's records go back through :meth:`ByteBudgetBuffer.load_records`, which
refits them to the budget and rebuilds the replay dataset, atomically. The file format is that of
earlier versions: their checkpoints load.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from avalanche_exmask.checkpoint_file import (
    FORMAT,
    KEY_VARIABLE,
    VERSION,
    CheckpointError,
    decode_value,
    encode_value,
    key_from_environment,
    read_checkpoint_file,
    require,
    write_checkpoint_file,
)
from avalanche_exmask.checkpoint_rng import apply_rng, check_rng_section, rng_section
from avalanche_exmask.checkpoint_sections import (
    apply_model,
    apply_optimizer,
    apply_strategy,
    buffer_section,
    check_header,
    check_model_section,
    check_optimizer_section,
    check_scheduler_section,
    check_strategy_section,
    model_section,
    optimizer_section,
    scheduler_section,
    strategy_section,
)
from avalanche_exmask.distributed import unwrap_model
from avalanche_exmask.storage.buffer import ByteBudgetBuffer
from avalanche_exmask.storage.buffer_state import apply_buffer_state, check_buffer_state
from avalanche_exmask.training.lr_schedule import CosineLRPlugin

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "save_strategy_checkpoint",
    "load_strategy_checkpoint",
    "KEY_VARIABLE",
    "key_from_environment",
]

PathLike = str | os.PathLike


def _save(
    path: PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    buffer: ByteBudgetBuffer | None,
    scheduler: Any,
    extra: Mapping[str, Any] | None,
    strategy: Any,
    key: bytes | None,
) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = {
        "model": model_section(model, tensors),
        "optimizer": optimizer_section(optimizer, model, tensors) if optimizer is not None else None,
        "scheduler": scheduler_section(scheduler, tensors) if scheduler is not None else None,
        "buffer": buffer_section(buffer, tensors) if buffer is not None else None,
        "strategy": strategy_section(strategy) if strategy is not None else None,
        "rng": rng_section(tensors),
        "extra": encode_value(dict(extra or {}), "extra", tensors),
    }
    write_checkpoint_file(Path(path), skeleton, tensors, key)


def save_checkpoint(
    path: PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    buffer: ByteBudgetBuffer | None = None,
    scheduler: Any = None,
    extra: Mapping[str, Any] | None = None,
    key: bytes | None = None,
) -> None:
    """Write a checkpoint to ``path`` atomically (see the module docstring for what it holds).

    :param path: the checkpoint file; replaced whole, or left as it was if the save fails.
    :param model: its ``state_dict()`` is saved.
    :param optimizer: its state, its parameters named by their names in ``model``; ``None``: none.
    :param buffer: the exemplar buffer (records and generator states), or ``None``.
    :param scheduler: a learning-rate scheduler (``state_dict()``), or ``None``.
    :param extra: the caller's state (next experience, results so far, ...): a string-keyed dict
        of numbers, strings, booleans, ``None``, tensors, and lists, tuples and dicts of them.
    :param key: sign with HMAC-SHA256 under this key (metadata ``hmac_sha256``) instead of a plain
        SHA-256 (``sha256``); only a load with the same key accepts the file.
    :raises TypeError: if something cannot be stored (before any file is written).
    """
    _save(path, model=model, optimizer=optimizer, buffer=buffer, scheduler=scheduler, extra=extra, strategy=None, key=key)


def _load(
    path: PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    buffer: ByteBudgetBuffer | None,
    scheduler: Any,
    strategy: Any,
    restore_rng: bool,
    key: bytes | None,
    check_extra: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    path = Path(path)
    skeleton, tensors = read_checkpoint_file(
        path, key=key, check_header=lambda header: check_header(header, model=model, buffer=buffer)
    )
    try:
        state, heads = check_model_section(skeleton.get("model"), tensors, model)
        optimizer_plan = None
        if optimizer is not None:
            optimizer_plan = check_optimizer_section(skeleton.get("optimizer"), tensors, optimizer, model)
        scheduler_state = None
        if scheduler is not None:
            scheduler_state = check_scheduler_section(skeleton.get("scheduler"), tensors, scheduler)
        buffer_tensors = {name.removeprefix("buffer/"): tensor for name, tensor in tensors.items() if name.startswith("buffer/")}
        buffer_plan = check_buffer_state(buffer, skeleton.get("buffer"), buffer_tensors) if buffer is not None else None
        strategy_plan = check_strategy_section(skeleton.get("strategy"), model) if strategy is not None else None
        rng = check_rng_section(skeleton.get("rng"), tensors) if restore_rng else None
        extra = decode_value(skeleton.get("extra"), tensors)
        require(isinstance(extra, dict), "malformed extra state")
        if check_extra is not None:
            check_extra(extra)
        if buffer is not None and buffer_plan is not None:
            apply_buffer_state(buffer, buffer_plan)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from error
    # Everything was checked (and the buffer restored): nothing below reads the file's structure.
    apply_model(model, state, heads)
    if optimizer is not None and optimizer_plan is not None:
        apply_optimizer(optimizer, model, optimizer_plan)
    if scheduler_state is not None:
        scheduler.load_state_dict(scheduler_state)
    if strategy_plan is not None:
        apply_strategy(strategy, model, strategy_plan)
    if rng is not None:
        apply_rng(rng)
    return extra


def load_checkpoint(
    path: PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    buffer: ByteBudgetBuffer | None = None,
    scheduler: Any = None,
    restore_rng: bool = True,
    key: bytes | None = None,
    check_extra: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Load a checkpoint of :func:`save_checkpoint` into fresh objects built like the saved ones.

    The whole file is checked before anything is modified (see the module docstring).

    :param path: the checkpoint file.
    :param model: receives the saved ``state_dict`` (an Avalanche ``IncrementalClassifier`` head
        is first resized to the saved number of units).
    :param optimizer: receives the saved state; its parameter groups are set to the model's
        parameters the checkpoint names (so, after a resized head, the new head's parameters).
    :param buffer: receives the saved records and generator states; its codec, budget and mode
        must be the saved ones.
    :param scheduler: receives the saved learning-rate scheduler state.
    :param restore_rng: also restore the global Python, NumPy, torch (and CUDA) random states.
    :param key: the HMAC key the file was signed with (``None``: an unkeyed file).
    :param check_extra: called with the saved ``extra`` before anything is modified; a
        ``ValueError`` it raises refuses the file.
    :return: the ``extra`` given to :func:`save_checkpoint`.
    :raises CheckpointError: naming ``path``, if the file is not a regular file, cannot be read, is
        corrupt, is signed otherwise than ``key`` says, or does not fit the objects given.
    """
    return _load(
        path,
        model=model,
        optimizer=optimizer,
        buffer=buffer,
        scheduler=scheduler,
        strategy=None,
        restore_rng=restore_rng,
        key=key,
        check_extra=check_extra,
    )


def _strategy_parts(strategy: Any) -> dict[str, Any]:
    """The model, optimizer, byte-budget buffer and LR scheduler of an Avalanche strategy."""
    buffers = [
        plugin.storage_policy for plugin in strategy.plugins
        if isinstance(getattr(plugin, "storage_policy", None), ByteBudgetBuffer)
    ]
    schedulers = [plugin.scheduler for plugin in strategy.plugins if hasattr(plugin, "scheduler")]
    if len(buffers) > 1 or len(schedulers) > 1:
        raise TypeError(
            f"strategy has {len(buffers)} byte-budget buffers and {len(schedulers)} LR schedulers; at most one each"
        )
    return {
        "model": unwrap_model(strategy.model),  # parameter names without a DDP wrapper's "module."
        "optimizer": strategy.optimizer,
        "buffer": buffers[0] if buffers else None,
        "scheduler": schedulers[0] if schedulers else None,
    }


def save_strategy_checkpoint(
    path: PathLike, strategy: Any, *, extra: Mapping[str, Any] | None = None, key: bytes | None = None
) -> None:
    """:func:`save_checkpoint` of an Avalanche strategy between experiences.

    Saves its model, optimizer, byte-budget buffer (from a replay plugin's ``storage_policy``),
    LR scheduler (from a plugin's ``scheduler``), and what Avalanche keeps besides: the names of
    the parameters it put in the optimizer (``optimized_param_id``; restoring them keeps the
    optimizer state that Avalanche would otherwise reset on the next experience) and the clock.

    :param extra: as in :func:`save_checkpoint`.
    :param key: as in :func:`save_checkpoint`.
    """
    _save(path, **_strategy_parts(strategy), extra=extra, strategy=strategy, key=key)


def load_strategy_checkpoint(
    path: PathLike,
    strategy: Any,
    *,
    restore_rng: bool = True,
    key: bytes | None = None,
    check_extra: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Load a :func:`save_strategy_checkpoint` file into a strategy built like the saved one.

    Training the next experience then gives what the saved run would have given (with
    ``restore_rng`` and the same data).

    :param key: as in :func:`load_checkpoint`.
    :param check_extra: as in :func:`load_checkpoint`.
    :return: the saved ``extra``.
    :raises CheckpointError: see :func:`load_checkpoint`.
    """
    for plugin in strategy.plugins:  # a cosine schedule is built when training starts: build it now
        if isinstance(plugin, CosineLRPlugin):
            plugin.bind(strategy.optimizer)
    return _load(
        path, **_strategy_parts(strategy), strategy=strategy, restore_rng=restore_rng, key=key, check_extra=check_extra
    )
