"""Checkpoints of a training run without pickle: model, optimizer, scheduler, exemplar buffer, RNGs.

Avalanche's own checkpoints pickle the whole strategy (with ``dill``): they cannot hold a model
adapted with ``torch.nn.utils.parametrize`` (the SSF adapter), and loading one runs whatever code
the file names. A checkpoint here is one `safetensors <https://github.com/huggingface/safetensors>`_
file, read without pickle, holding tensors and a JSON description of everything else.

**Format** (version 1). Tensors, by name:

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

The safetensors header's metadata holds ``format`` (``avalanche_exmask.checkpoint``),
``version``, ``skeleton`` (JSON: the model's keys; the optimizer's class, parameter groups (names
and options) and non-tensor state; the buffer's codec, budget, record layouts and, per record, its
type from the registered codecs' record types, layout, payload offset and length and extra slots; the strategy's
optimized parameter names and clock; the Python and NumPy RNG states; ``extra``) and a digest of
the skeleton and of every tensor's name, dtype, shape and bytes: ``sha256``, or, when saved with a
key, ``hmac_sha256`` (HMAC-SHA256 under the key: a file on shared storage cannot be forged with a
recomputed digest by anyone without the key). Values other than
tensors are JSON numbers, strings, booleans, ``null``, lists and string-keyed objects; a tuple is
``{"tuple": [...]}``, an object ``{"dict": {...}}`` and a tensor ``{"tensor": "<name>"}``.

**Saving** encodes everything first (so an unstorable value fails before any file is touched),
writes a temporary file ``.<name>.<random>.tmp`` in the target's folder, ``fsync``s it, renames it
over the target (``os.replace``) and ``fsync``s the folder: a process killed at any moment leaves
the previous checkpoint whole (at worst with a stray temporary file, never read), and a save that
fails with an exception removes its temporary file.

**Loading** refuses anything but a regular file without opening it (a FIFO would block), then
reads the header alone (``safe_open``: metadata, every tensor's dtype and shape) and checks it
against the objects it is loaded into and the format's layout, and the declared bytes against a
bound of the model's and buffer's sizes (:func:`_check_header`), before any tensor is read: a
sparse file declaring gigabytes is refused at the cost of its header. Then it reads the tensors,
checks the digest (with the key, if given), the structure, the record types, that every tensor
fits, that every record decodes with the buffer's codec and the caller's check of ``extra``, and
modifies nothing until all checks pass; any problem raises :class:`CheckpointError` naming the
file. Nothing in the file is ever executed.

This module is the container: the buffer's section and its ``buffer/...`` tensors are what
:meth:`ByteBudgetBuffer.state_dict` returns (records, selection generator, the augmentation's own
``state_dict``), checked with the rest before anything changes and put back with
:mod:`~avalanche_exmask.storage.buffer_state` (records through :meth:`ByteBudgetBuffer.load_records`,
which refits them to the budget and rebuilds the replay dataset, atomically). The file format is
that of earlier versions: their checkpoints load.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import random
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from avalanche.models import IncrementalClassifier
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from avalanche_exmask.distributed import unwrap_model
from avalanche_exmask.storage.buffer import ByteBudgetBuffer
from avalanche_exmask.storage.buffer_state import apply_buffer_state, check_buffer_state

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

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: The ``format`` entry of a checkpoint's metadata.
FORMAT = "avalanche_exmask.checkpoint"
#: The format version this module writes and reads.
VERSION = "1"

#: The environment variable holding the runner's checkpoint key (see :func:`key_from_environment`).
KEY_VARIABLE = "EXMASK_CHECKPOINT_KEY"



class CheckpointError(ValueError):
    """A checkpoint that cannot be read, is corrupt, or does not fit the objects it is loaded into;
    the message starts with the file."""


def key_from_environment() -> bytes | None:
    """The checkpoint key in :data:`KEY_VARIABLE` (its UTF-8 bytes), or ``None`` when unset or empty:
    with a key, checkpoints are signed with HMAC-SHA256 and only files signed with it load."""
    text = os.environ.get(KEY_VARIABLE, "")
    return text.encode("utf-8") if text else None


# ---------------------------------------------------------------------------------------- values
def _encode(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON, its tensors moved to ``tensors`` under names starting with ``name``.

    :raises TypeError: for a value that is not a tensor, scalar, string, ``None``, list, tuple or
        string-keyed dict.
    """
    if isinstance(value, torch.Tensor):
        if name in tensors:  # dict keys holding "/" can spell an existing name
            name = f"{name}#{len(tensors)}"
        tensors[name] = value
        return {"tensor": name}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_encode(item, f"{name}/{index}", tensors) for index, item in enumerate(value)]
        return {"tuple": items} if isinstance(value, tuple) else items
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise TypeError(f"checkpoint value {name!r}: dict keys must be strings; got {list(value)[:5]}")
        return {"dict": {key: _encode(item, f"{name}/{key}", tensors) for key, item in value.items()}}
    raise TypeError(f"checkpoint value {name!r}: cannot store a {type(value).__name__} (no pickle)")


def _decode(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`_encode`.

    :raises ValueError: on a malformed value or a missing tensor.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_decode(item, tensors) for item in value]
    if isinstance(value, dict) and len(value) == 1:
        (tag, content), = value.items()
        if tag == "tensor" and isinstance(content, str):
            if content not in tensors:
                raise ValueError(f"names tensor {content!r}, which the file does not hold")
            return tensors[content]
        if tag == "tuple" and isinstance(content, list):
            return tuple(_decode(item, tensors) for item in content)
        if tag == "dict" and isinstance(content, dict):
            return {key: _decode(item, tensors) for key, item in content.items()}
    raise ValueError(f"malformed value {json.dumps(value)[:80]}")


def _digest(skeleton: str, tensors: Mapping[str, torch.Tensor], key: bytes | None = None) -> str:
    """SHA-256 (HMAC-SHA256 with ``key``) of the skeleton and of every tensor's name, dtype, shape
    and bytes, in name order, as hex."""
    digest = hmac.new(key, digestmod=hashlib.sha256) if key is not None else hashlib.sha256()
    digest.update(skeleton.encode("utf-8"))
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"\0{name}\0{tensor.dtype}\0{list(tensor.shape)}\0".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------- sections
def _model_section(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state = model.state_dict()
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"model state {key!r} is a {type(value).__name__}, not a tensor")
        tensors[f"model/{key}"] = value
    return {"keys": list(state)}


def _parameter_names(model: torch.nn.Module) -> dict[int, str]:
    return {id(parameter): name for name, parameter in model.named_parameters()}


def _optimizer_section(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module, tensors: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """The optimizer's groups and state, parameters named by their name in ``model``."""
    names = _parameter_names(model)
    state_dict = optimizer.state_dict()
    name_of_index: dict[int, str] = {}
    groups = []
    for position, (saved, live) in enumerate(zip(state_dict["param_groups"], optimizer.param_groups, strict=True)):
        group_names = []
        for index, parameter in zip(saved["params"], live["params"], strict=True):
            if id(parameter) not in names:
                raise TypeError(
                    f"the optimizer holds a parameter of shape {list(parameter.shape)} that is not in the model"
                )
            name_of_index[index] = names[id(parameter)]
            group_names.append(names[id(parameter)])
        options = {key: value for key, value in saved.items() if key != "params"}
        groups.append({"params": group_names, "options": _encode(options, f"optimizer/group/{position}", tensors)})
    state = {
        name_of_index[index]: _encode(dict(values), f"optimizer/state/{name_of_index[index]}", tensors)
        for index, values in state_dict["state"].items()
    }
    return {"type": type(optimizer).__name__, "param_groups": groups, "state": state}


def _buffer_section(buffer: ByteBudgetBuffer, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The buffer's own state (:meth:`ByteBudgetBuffer.state_dict`), its tensors under ``buffer/``."""
    state, buffer_tensors = buffer.state_dict()
    tensors.update({f"buffer/{name}": tensor for name, tensor in buffer_tensors.items()})
    return state


def _rng_section(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The global random states: Python's, NumPy's, torch's (and CUDA's when initialised)."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    tensors["rng/torch"] = torch.get_rng_state()
    tensors["rng/numpy"] = torch.from_numpy(keys.astype(np.int64))
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    for index, state in enumerate(cuda):
        tensors[f"rng/cuda/{index}"] = state
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, int(position), int(has_gauss), float(cached)],
        "cuda_devices": len(cuda),
    }


def _strategy_section(strategy: Any) -> dict[str, Any]:
    """What Avalanche keeps in a strategy beyond model and optimizer: the names of the optimized
    parameters (``None`` before the first experience) and the clock's counters."""
    optimized = strategy.optimized_param_id
    return {
        "optimized_params": list(optimized) if optimized is not None else None,
        "clock": {key: value for key, value in vars(strategy.clock).items() if type(value) is int},
    }


# --------------------------------------------------------------------------------------- save
def _file_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, each with its own storage (safetensors refuses shared storage)."""
    result, storages = {}, set()
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        storage = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if storage in storages and tensor.numel():
            tensor = tensor.clone()
        storages.add(storage)
        result[name] = tensor
    return result


def _write_atomically(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write the safetensors file through a temporary file in the same folder (created if
    missing), then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        save_file(tensors, temporary, metadata=metadata)
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename durable (POSIX)
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


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
        "model": _model_section(model, tensors),
        "optimizer": _optimizer_section(optimizer, model, tensors) if optimizer is not None else None,
        "scheduler": (
            {"type": type(scheduler).__name__, "state": _encode(scheduler.state_dict(), "scheduler", tensors)}
            if scheduler is not None
            else None
        ),
        "buffer": _buffer_section(buffer, tensors) if buffer is not None else None,
        "strategy": _strategy_section(strategy) if strategy is not None else None,
        "rng": _rng_section(tensors),
        "extra": _encode(dict(extra or {}), "extra", tensors),
    }
    text = json.dumps(skeleton, separators=(",", ":"))
    tensors = _file_tensors(tensors)
    digest_name = "sha256" if key is None else "hmac_sha256"
    metadata = {"format": FORMAT, "version": VERSION, "skeleton": text, digest_name: _digest(text, tensors, key)}
    _write_atomically(Path(path), tensors, metadata)


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


# --------------------------------------------------------------------------------------- load
#: Bytes per element of the safetensors dtypes a checkpoint may hold (others are refused).
_DTYPE_NBYTES: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
#: Bytes a checkpoint may hold beyond three times the model's state and the buffer's budget
#: (RNG states, scheduler and caller tensors, a grown head), in bytes.
HEADROOM_NBYTES = 16 * 2**20

Header = Mapping[str, tuple[str, tuple[int, ...]]]
"""Tensor name -> (safetensors dtype, shape), as the file's header declares them."""


def _check_regular_file(path: Path) -> None:
    """Refuse, without opening it, anything but a regular file (a FIFO would block the reader, a
    device or socket would never end).

    :raises CheckpointError: naming the file.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise CheckpointError(f"{path}: cannot be read ({error.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = "FIFO" if stat.S_ISFIFO(mode) else "folder" if stat.S_ISDIR(mode) else "special file"
        raise CheckpointError(f"{path}: is a {kind}, not a regular file; refused without reading it")


def _read(
    path: Path, *, key: bytes | None, check_header: Callable[[Header], None]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The skeleton and tensors of a checkpoint file, after the format, header and digest checks.

    Only the header is read (through ``safe_open``, which maps the file) until the format, the
    skeleton JSON and ``check_header`` (every tensor's dtype and shape, and their total bytes)
    have passed; then the tensors are read and the digest (keyed with ``key``: HMAC-SHA256) is
    checked.

    :raises CheckpointError: naming the file.
    """
    _check_regular_file(path)
    try:
        with safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise CheckpointError(f"{path}: not an {FORMAT} file (format {metadata.get('format')!r})")
            if metadata.get("version") != VERSION:
                raise CheckpointError(f"{path}: checkpoint format version {metadata.get('version')!r}; this reads {VERSION!r}")
            skeleton = _parse_skeleton(path, metadata.get("skeleton", ""))
            header = {}
            for name in file.keys():
                view = file.get_slice(name)
                header[name] = (view.get_dtype(), tuple(view.get_shape()))
            try:
                check_header(header)
            except ValueError as error:
                raise CheckpointError(f"{path}: {error}; refused before reading its tensors") from error
            tensors = {name: file.get_tensor(name) for name in header}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path}: not a readable checkpoint ({error})") from error
    _check_digest(path, metadata, tensors, key)
    return skeleton, tensors


def _parse_skeleton(path: Path, text: str) -> dict[str, Any]:
    try:
        skeleton = json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: malformed skeleton JSON ({error})") from error
    if not isinstance(skeleton, dict):
        raise CheckpointError(f"{path}: malformed skeleton (not an object)")
    return skeleton


def _check_digest(path: Path, metadata: Mapping[str, str], tensors: Mapping[str, torch.Tensor], key: bytes | None) -> None:
    """The file's digest: ``hmac_sha256`` when a key is given (a file without one is refused),
    else ``sha256`` (a keyed file is refused: its key is needed)."""
    text = metadata.get("skeleton", "")
    if key is None:
        if "hmac_sha256" in metadata:
            raise CheckpointError(f"{path}: signed with a key (HMAC); give the key to load it (runner: {KEY_VARIABLE})")
        if metadata.get("sha256") != _digest(text, tensors, None):
            raise CheckpointError(f"{path}: digest mismatch, the file is corrupt or was modified")
        return
    saved = metadata.get("hmac_sha256")
    if saved is None:
        raise CheckpointError(f"{path}: not signed with a key (HMAC), and a key was given; refused")
    if not hmac.compare_digest(saved, _digest(text, tensors, key)):
        raise CheckpointError(f"{path}: keyed digest (HMAC) mismatch: corrupt, modified, or signed with another key")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _safetensors_dtype(dtype: torch.dtype) -> str:
    """The safetensors name of a torch dtype (``torch.float32`` -> ``F32``)."""
    names = {
        torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.float16: "F16",
        torch.bfloat16: "BF16", torch.int32: "I32", torch.float32: "F32", torch.int64: "I64", torch.float64: "F64",
    }
    return names.get(dtype, str(dtype))


def _head_names(model: torch.nn.Module) -> set[str]:
    """State keys of the model's Avalanche ``IncrementalClassifier`` heads, whose row count a
    checkpoint may change (the head grows with the classes seen)."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, IncrementalClassifier):
            prefix = f"{name}." if name else ""
            names.update(prefix + key for key in ("classifier.weight", "classifier.bias", "active_units"))
    return names


def _check_header(header: Header, *, model: torch.nn.Module, buffer: ByteBudgetBuffer | None) -> None:
    """Check the tensors a file declares, from its header alone, before any is read.

    Every tensor needs a known dtype; ``model/<key>`` the model's dtype and shape (a head's row
    count may differ); ``optimizer/state/<parameter>/<key>`` a scalar or the shape of that
    parameter (as the file declares it); ``buffer/payload`` one dimension of at most the buffer's
    budget in bytes; the RNG states their fixed sizes. The declared tensors together may not exceed
    three times the model's state, plus the buffer's budget and :data:`HEADROOM_NBYTES`, in bytes.

    :raises ValueError: naming the first tensor that does not fit.
    """
    state = model.state_dict()
    heads = _head_names(model)
    generator_nbytes = torch.Generator().get_state().numel()
    total = 0
    for name, (dtype, shape) in header.items():
        _require(dtype in _DTYPE_NBYTES, f"tensor {name!r} has dtype {dtype}, which a checkpoint never holds")
        count = 1
        for size in shape:
            count *= size
        total += count * _DTYPE_NBYTES[dtype]
        section, _, rest = name.partition("/")
        if section == "model":
            _require(rest in state, f"model tensor {rest!r} is not in the model")
            expected = state[rest]
            _require(
                dtype == _safetensors_dtype(expected.dtype)
                and len(shape) == expected.ndim
                and (shape == tuple(expected.shape) or (rest in heads and shape[1:] == tuple(expected.shape[1:]))),
                f"model tensor {rest!r} is declared {dtype} {list(shape)}; the model's is "
                f"{_safetensors_dtype(expected.dtype)} {list(expected.shape)}",
            )
        elif name.startswith("optimizer/state/"):
            parameter = rest.removeprefix("state/").partition("/")[0]
            _require(parameter in state, f"optimizer state {name!r} names no parameter of the model")
            declared = header.get(f"model/{parameter}", (None, tuple(state[parameter].shape)))[1]
            _require(shape in ((), declared), f"optimizer state {name!r} has shape {list(shape)}; its parameter's is {list(declared)}")
        elif name == "buffer/payload":
            limit = buffer.max_size if buffer is not None else 0
            _require(
                dtype == "U8" and len(shape) == 1 and (buffer is None or shape[0] <= limit),
                f"buffer payload is declared {dtype} {list(shape)}; the buffer's budget is {limit} bytes",
            )
        elif name == "rng/torch" or name.startswith("buffer/generator/"):
            _require(dtype == "U8" and shape == (generator_nbytes,), f"RNG state {name!r} is declared {dtype} {list(shape)}")
        elif name == "rng/numpy":
            _require(dtype == "I64" and shape == (624,), f"NumPy RNG state is declared {dtype} {list(shape)}")
        else:
            _require(section in ("optimizer", "rng", "scheduler", "extra"), f"tensor {name!r} is in no section of the format")
    model_nbytes = sum(tensor.numel() * tensor.element_size() for tensor in state.values())
    limit = 3 * model_nbytes + (buffer.max_size if buffer is not None else 0) + HEADROOM_NBYTES
    _require(total <= limit, f"its tensors declare {total} bytes; a checkpoint of this model holds at most {limit}")


def _plan_model(
    skeleton: Any, tensors: Mapping[str, torch.Tensor], model: torch.nn.Module
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """The model state to load and the heads to resize (``{module name: classes}``).

    An Avalanche ``IncrementalClassifier`` head may hold more (grown) units in the checkpoint than
    in ``model``; it is resized before loading. Every other tensor must match in shape.
    """
    _require(isinstance(skeleton, dict) and isinstance(skeleton.get("keys"), list), "malformed model section")
    state = {key: tensors.get(f"model/{key}") for key in skeleton["keys"]}
    missing = [key for key, value in state.items() if value is None]
    _require(not missing, f"model tensors {missing[:5]} are listed but not in the file")
    current = model.state_dict()
    absent, unexpected = sorted(current.keys() - state.keys()), sorted(state.keys() - current.keys())
    _require(not absent and not unexpected, f"model keys differ: missing {absent[:5]}, unexpected {unexpected[:5]}")
    expected = {key: tuple(value.shape) for key, value in current.items()}
    heads = {}
    for name, module in model.named_modules():
        if isinstance(module, IncrementalClassifier):
            prefix = f"{name}." if name else ""
            saved = tuple(state[f"{prefix}classifier.weight"].shape)
            _require(
                len(saved) == 2 and saved[1] == module.classifier.in_features,
                f"head {name or 'model'} has {module.classifier.in_features} input features; checkpoint {saved}",
            )
            heads[name] = saved[0]
            resized = {"classifier.weight": saved, "classifier.bias": saved[:1], "active_units": saved[:1]}
            for key, shape in resized.items():
                if prefix + key in expected:
                    expected[prefix + key] = shape
    for key, value in state.items():
        _require(
            tuple(value.shape) == expected[key],
            f"model tensor {key!r} has shape {list(value.shape)}; the model's is {list(expected[key])}",
        )
    return state, heads


def _plan_optimizer(
    skeleton: Any, tensors: Mapping[str, torch.Tensor], optimizer: torch.optim.Optimizer, model: torch.nn.Module
) -> tuple[list[list[str]], dict[str, Any]]:
    """The parameter names of each group and the ``state_dict`` to load."""
    _require(isinstance(skeleton, dict), "no optimizer state in the file")
    _require(
        skeleton.get("type") == type(optimizer).__name__,
        f"optimizer is a {type(optimizer).__name__}; the checkpoint holds a {skeleton.get('type')!r}",
    )
    groups = skeleton.get("param_groups")
    _require(
        isinstance(groups, list) and len(groups) == len(optimizer.param_groups),
        f"optimizer has {len(optimizer.param_groups)} parameter group(s); the checkpoint a different number",
    )
    parameters = dict(model.named_parameters())
    index_of: dict[str, int] = {}
    names, saved_groups = [], []
    for group in groups:
        _require(isinstance(group, dict) and isinstance(group.get("params"), list), "malformed parameter group")
        unknown = [name for name in group["params"] if name not in parameters]
        _require(not unknown, f"optimizer parameters {unknown[:5]} are not parameters of the model")
        options = _decode(group.get("options"), tensors)
        _require(isinstance(options, dict), "malformed parameter group options")
        names.append(list(group["params"]))
        indices = [index_of.setdefault(name, len(index_of)) for name in group["params"]]
        saved_groups.append({**options, "params": indices})
    state = skeleton.get("state")
    _require(isinstance(state, dict), "malformed optimizer state")
    unknown = [name for name in state if name not in index_of]
    _require(not unknown, f"optimizer state for {unknown[:5]}, which no parameter group holds")
    decoded_state = {}
    for name, values in state.items():
        values = _decode(values, tensors)
        _require(isinstance(values, dict), f"malformed optimizer state of {name!r}")
        decoded_state[index_of[name]] = values
    return names, {"state": decoded_state, "param_groups": saved_groups}


def _check_generator_state(state: torch.Tensor, what: str) -> None:
    """Try ``state`` on a scratch generator."""
    try:
        torch.Generator().set_state(state)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{what}: invalid state ({error})") from error


def _plan_rng(skeleton: Any, tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The global random states, each tried on a scratch generator first."""
    _require(isinstance(skeleton, dict), "malformed rng section")
    python, numpy_state = skeleton.get("python"), skeleton.get("numpy")
    _require(
        isinstance(python, list) and len(python) == 3 and isinstance(python[1], list), "malformed Python RNG state"
    )
    python_state = (python[0], tuple(python[1]), python[2])
    keys = tensors.get("rng/numpy")
    _require(isinstance(numpy_state, list) and len(numpy_state) == 4 and keys is not None, "malformed NumPy RNG state")
    numpy_full = (numpy_state[0], keys.numpy().astype(np.uint32), *numpy_state[1:])
    torch_state = tensors.get("rng/torch")
    _require(torch_state is not None, "torch RNG state missing")
    try:
        random.Random().setstate(python_state)
        np.random.RandomState().set_state(numpy_full)
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(f"invalid Python or NumPy RNG state ({error})") from error
    _check_generator_state(torch_state, "torch RNG")
    n_cuda = skeleton.get("cuda_devices")
    _require(_is_count(n_cuda), "malformed CUDA RNG count")
    cuda = [tensors.get(f"rng/cuda/{index}") for index in range(n_cuda)]
    _require(all(state is not None for state in cuda), "CUDA RNG state missing")
    return {"python": python_state, "numpy": numpy_full, "torch": torch_state, "cuda": cuda}


def _apply_rng(states: Mapping[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    cuda = states["cuda"]
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
    elif cuda:
        logger.warning("checkpoint holds %d CUDA RNG state(s) that this machine cannot take; not restored", len(cuda))


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
    skeleton, tensors = _read(
        path, key=key, check_header=lambda header: _check_header(header, model=model, buffer=buffer)
    )
    try:
        state, heads = _plan_model(skeleton.get("model"), tensors, model)
        optimizer_plan = None
        if optimizer is not None:
            optimizer_plan = _plan_optimizer(skeleton.get("optimizer"), tensors, optimizer, model)
        scheduler_state = None
        if scheduler is not None:
            section = skeleton.get("scheduler")
            _require(
                isinstance(section, dict) and section.get("type") == type(scheduler).__name__,
                f"scheduler is a {type(scheduler).__name__}; the checkpoint holds {str(section)[:60]}",
            )
            scheduler_state = _decode(section.get("state"), tensors)
            _require(isinstance(scheduler_state, dict), "malformed scheduler state")
        buffer_tensors = {name.removeprefix("buffer/"): tensor for name, tensor in tensors.items() if name.startswith("buffer/")}
        buffer_plan = check_buffer_state(buffer, skeleton.get("buffer"), buffer_tensors) if buffer is not None else None
        strategy_section = skeleton.get("strategy") if strategy is not None else None
        if strategy is not None:
            _require(isinstance(strategy_section, dict), "no strategy state in the file")
            optimized = strategy_section.get("optimized_params")
            parameter_names = dict(model.named_parameters()).keys()
            _require(
                optimized is None or (isinstance(optimized, list) and set(optimized) <= parameter_names),
                "the strategy's optimized parameters are not parameters of the model",
            )
            clock = strategy_section.get("clock")
            _require(isinstance(clock, dict) and all(map(_is_count, clock.values())), "malformed strategy clock")
        rng = _plan_rng(skeleton.get("rng"), tensors) if restore_rng else None
        extra = _decode(skeleton.get("extra"), tensors)
        _require(isinstance(extra, dict), "malformed extra state")
        if check_extra is not None:
            check_extra(extra)
        if buffer is not None and buffer_plan is not None:
            apply_buffer_state(buffer, buffer_plan)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from error
    # Everything was checked (and the buffer restored): nothing below reads the file's structure.
    for name, n_classes in heads.items():
        _resize_head(model.get_submodule(name), n_classes)
    model.load_state_dict(state)
    if optimizer_plan is not None:
        names, optimizer_state = optimizer_plan
        parameters = dict(model.named_parameters())
        for group, group_names in zip(optimizer.param_groups, names, strict=True):
            group["params"] = [parameters[name] for name in group_names]
        optimizer.load_state_dict(optimizer_state)
    if scheduler_state is not None:
        scheduler.load_state_dict(scheduler_state)
    if strategy is not None:
        parameters = dict(model.named_parameters())
        optimized = strategy_section["optimized_params"]
        strategy.optimized_param_id = {name: parameters[name] for name in optimized} if optimized is not None else None
        for key, value in strategy_section["clock"].items():
            setattr(strategy.clock, key, value)
    if rng is not None:
        _apply_rng(rng)
    return extra


def _resize_head(head: IncrementalClassifier, n_classes: int) -> None:
    """Give an Avalanche ``IncrementalClassifier`` ``n_classes`` units, uninitialised (their values
    are loaded next; no random number is drawn)."""
    if head.classifier.out_features == n_classes:
        return
    weight = head.classifier.weight
    head.classifier = torch.nn.utils.skip_init(
        torch.nn.Linear, head.classifier.in_features, n_classes, device=weight.device, dtype=weight.dtype
    )
    head.active_units = torch.zeros(n_classes, dtype=torch.int8, device=head.active_units.device)


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
    return _load(
        path, **_strategy_parts(strategy), strategy=strategy, restore_rng=restore_rng, key=key, check_extra=check_extra
    )
