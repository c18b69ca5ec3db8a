"""The checkpoint container: one `safetensors <https://github.com/huggingface/safetensors>`_ file of
named tensors and a JSON skeleton, signed with a digest, written atomically and read without pickle.

What the tensors and the skeleton hold is the business of :mod:`avalanche_exmask.checkpoint`; this
module knows only the container.

**Metadata.** The safetensors header's metadata holds ``format`` (:data:`FORMAT`), ``version``
(:data:`VERSION`), ``skeleton`` (compact JSON) and a digest of the skeleton and of every tensor's
name, dtype, shape and bytes: ``sha256``, or, when saved with a key, ``hmac_sha256`` (HMAC-SHA256
under the key: a file on shared storage cannot be forged with a recomputed digest by anyone
without the key).

**Values.** The skeleton's values other than tensors are JSON numbers, strings, booleans, ``null``,
lists and string-keyed objects; a tuple is ``{"tuple": [...]}``, a dict ``{"dict": {...}}`` and a
tensor ``{"tensor": "<name>"}`` (:func:`encode_value`, :func:`decode_value`).

**Writing** (:func:`write_checkpoint_file`) goes through a temporary file ``.<name>.<random>.tmp``
in the target's folder, ``fsync``s it, renames it over the target (``os.replace``) and ``fsync``s
the folder: a process killed at any moment leaves the previous file whole (at worst with a stray
temporary file, never read), and a write that fails with an exception removes its temporary file.

**Reading** (:func:`read_checkpoint_file`) refuses anything but a regular file without opening it
(a FIFO would block), reads the header alone (``safe_open``: metadata, every tensor's dtype and
shape) and hands it to the caller's check before any tensor is read (a sparse file declaring
gigabytes is refused at the cost of its header), then reads the tensors and checks the digest.
Every problem raises :class:`CheckpointError` naming the file. Nothing in the file is ever executed.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

__all__ = [
    "FORMAT",
    "VERSION",
    "KEY_VARIABLE",
    "DTYPE_NBYTES",
    "Header",
    "CheckpointError",
    "key_from_environment",
    "encode_value",
    "decode_value",
    "file_digest",
    "safetensors_dtype",
    "require",
    "is_count",
    "write_checkpoint_file",
    "read_checkpoint_file",
]

#: The ``format`` entry of a checkpoint's metadata.
FORMAT = "avalanche_exmask.checkpoint"
#: The format version this package writes and reads.
VERSION = "1"

#: The environment variable holding the runner's checkpoint key (see :func:`key_from_environment`).
KEY_VARIABLE = "EXMASK_CHECKPOINT_KEY"

#: Bytes per element of the safetensors dtypes a checkpoint may hold (others are refused).
DTYPE_NBYTES: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}

Header = Mapping[str, tuple[str, tuple[int, ...]]]
"""Tensor name -> (safetensors dtype, shape), as the file's header declares them."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, is corrupt, or does not fit the objects it is loaded into;
    the message starts with the file."""


def key_from_environment() -> bytes | None:
    """The checkpoint key in :data:`KEY_VARIABLE` (its UTF-8 bytes), or ``None`` when unset or empty:
    with a key, checkpoints are signed with HMAC-SHA256 and only files signed with it load."""
    text = os.environ.get(KEY_VARIABLE, "")
    return text.encode("utf-8") if text else None


def require(condition: bool, message: str) -> None:
    """:raises ValueError: with ``message``, unless ``condition``."""
    if not condition:
        raise ValueError(message)


def is_count(value: Any) -> bool:
    """Whether ``value`` is an ``int`` (not a ``bool``) ``>= 0``."""
    return type(value) is int and value >= 0


def safetensors_dtype(dtype: torch.dtype) -> str:
    """The safetensors name of a torch dtype (``torch.float32`` -> ``F32``)."""
    names = {
        torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.float16: "F16",
        torch.bfloat16: "BF16", torch.int32: "I32", torch.float32: "F32", torch.int64: "I64", torch.float64: "F64",
    }
    return names.get(dtype, str(dtype))


# ---------------------------------------------------------------------------------------- values
def encode_value(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
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
        items = [encode_value(item, f"{name}/{index}", tensors) for index, item in enumerate(value)]
        return {"tuple": items} if isinstance(value, tuple) else items
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise TypeError(f"checkpoint value {name!r}: dict keys must be strings; got {list(value)[:5]}")
        return {"dict": {key: encode_value(item, f"{name}/{key}", tensors) for key, item in value.items()}}
    raise TypeError(f"checkpoint value {name!r}: cannot store a {type(value).__name__} (no pickle)")


def decode_value(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode_value`.

    :raises ValueError: on a malformed value or a missing tensor.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [decode_value(item, tensors) for item in value]
    if isinstance(value, dict) and len(value) == 1:
        (tag, content), = value.items()
        if tag == "tensor" and isinstance(content, str):
            if content not in tensors:
                raise ValueError(f"names tensor {content!r}, which the file does not hold")
            return tensors[content]
        if tag == "tuple" and isinstance(content, list):
            return tuple(decode_value(item, tensors) for item in content)
        if tag == "dict" and isinstance(content, dict):
            return {key: decode_value(item, tensors) for key, item in content.items()}
    raise ValueError(f"malformed value {json.dumps(value)[:80]}")


def file_digest(skeleton: str, tensors: Mapping[str, torch.Tensor], key: bytes | None = None) -> str:
    """SHA-256 (HMAC-SHA256 with ``key``) of the skeleton and of every tensor's name, dtype, shape
    and bytes, in name order, as hex."""
    digest = hmac.new(key, digestmod=hashlib.sha256) if key is not None else hashlib.sha256()
    digest.update(skeleton.encode("utf-8"))
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"\0{name}\0{tensor.dtype}\0{list(tensor.shape)}\0".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------- write
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


def write_checkpoint_file(
    path: Path, skeleton: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], key: bytes | None
) -> None:
    """Write ``skeleton`` (JSON-ready, as :func:`encode_value` gives) and ``tensors`` to ``path``
    atomically, signed with ``key`` (HMAC-SHA256, metadata ``hmac_sha256``) or, without one, with a
    plain SHA-256 (``sha256``)."""
    text = json.dumps(skeleton, separators=(",", ":"))
    file_tensors = _file_tensors(tensors)
    digest_name = "sha256" if key is None else "hmac_sha256"
    metadata = {"format": FORMAT, "version": VERSION, "skeleton": text, digest_name: file_digest(text, file_tensors, key)}
    _write_atomically(path, file_tensors, metadata)


# ------------------------------------------------------------------------------------------ read
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


def read_checkpoint_file(
    path: Path, *, key: bytes | None, check_header: Callable[[Header], None]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The skeleton and tensors of a checkpoint file, after the format, header and digest checks.

    Only the header is read (through ``safe_open``, which maps the file) until the format, the
    skeleton JSON and ``check_header`` (every tensor's dtype and shape, and their total bytes; a
    ``ValueError`` it raises refuses the file) have passed; then the tensors are read and the
    digest (keyed with ``key``: HMAC-SHA256) is checked.

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
        if metadata.get("sha256") != file_digest(text, tensors, None):
            raise CheckpointError(f"{path}: digest mismatch, the file is corrupt or was modified")
        return
    saved = metadata.get("hmac_sha256")
    if saved is None:
        raise CheckpointError(f"{path}: not signed with a key (HMAC), and a key was given; refused")
    if not hmac.compare_digest(saved, file_digest(text, tensors, key)):
        raise CheckpointError(f"{path}: keyed digest (HMAC) mismatch: corrupt, modified, or signed with another key")
