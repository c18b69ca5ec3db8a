"""What every codec shares: the record type, the codec protocol, token packing and patch geometry.

A *record* is what the buffer stores for one exemplar: its label and a single ``bytes`` buffer
holding everything needed to rebuild the sample. Its cost, :attr:`Record.nbytes`, is the length of
that buffer, in bytes: no estimate, and the label is not counted (it costs the same for every
codec, and the paper's plain-exemplar cost leaves it out too). How to parse the buffer is described
by a small immutable *layout* shared by all records of the same geometry, so a record's Python
overhead is one object with a few slots plus one ``bytes`` header (see :meth:`Record.resident_nbytes`).

Token ids are stored as ``uint16`` (open_clip's vocabulary has 49,408 ids), only the real
(non-padding) tokens, in order; decoding re-pads them with zeros to the context length.
"""
from __future__ import annotations

import math
import sys
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from avalanche_exmask.data.sample import MultimodalSample
from avalanche_exmask.models.outputs import MaskingScores

__all__ = [
    "Record", "Codec", "BatchRoundTrip", "RecordDecodeError", "pack_tokens", "unpack_tokens", "repack_tokens",
    "patch_grid", "as_uint8_array", "as_uint8_batch",
]


class RecordDecodeError(ValueError):
    """A record's bytes do not match its layout (corrupt, truncated, or from another codec)."""


class Record:
    """One stored exemplar.

    :param label: the class label.
    :param data: the compact payload (codec-specific byte layout).
    :param layout: the codec's shared description of how to parse ``data``.
    """

    __slots__ = ("label", "data", "layout")

    def __init__(self, *, label: int, data: bytes, layout: Any = None) -> None:
        self.label = label
        self.data = data
        self.layout = layout

    @property
    def nbytes(self) -> int:
        """Accounted cost in bytes: the length of the payload."""
        return len(self.data)

    @property
    def keep_mask(self) -> torch.Tensor | None:
        """Bool ``[N]``: which image patches are stored, row-major over :attr:`patch_grid`;
        ``None`` for codecs that store the whole image (every record type answers, so generic code
        never tests for a codec)."""
        return None

    @property
    def patch_grid(self) -> tuple[int, int] | None:
        """``(rows, cols)`` of :attr:`keep_mask`'s grid; ``None`` without a keep mask."""
        return None

    @property
    def kept_patch_fraction(self) -> float | None:
        """Stored patches over all patches; ``None`` where the codec does not mask patches."""
        return None

    @property
    def kept_token_fraction(self) -> float | None:
        """Stored tokens over the original real tokens; ``None`` where the codec does not mask text."""
        return None

    def to_state(self) -> dict[str, int]:
        """The record's fields other than ``data`` and ``layout``, as JSON-serialisable ints:
        ``label`` and the extra slots of a subclass; :meth:`from_state` inverts it."""
        return {"label": int(self.label)}

    @classmethod
    def from_state(cls, state: dict[str, int], *, data: bytes, layout: Any) -> Record:
        """The record of :meth:`to_state`'s ``state`` with its payload and layout.

        :raises TypeError: if ``state`` lacks a field or has one this record type does not take.
        """
        return cls(data=data, layout=layout, **state)

    def resident_nbytes(self) -> int:
        """Bytes this record's own Python objects occupy: the record object and its payload.

        Shared objects (the layout, CPython's cached small ints) are not counted.
        """
        return sys.getsizeof(self) + sys.getsizeof(self.data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(label={self.label}, nbytes={self.nbytes})"


@runtime_checkable
class Codec(Protocol):
    """Turns an exemplar into a compact :class:`Record` and back."""

    name: ClassVar[str]

    def encode(self, sample: MultimodalSample, scores: MaskingScores, label: int) -> Record:
        """Compress one unbatched sample, given its unbatched scores."""
        ...

    def decode(self, record: Record) -> MultimodalSample:
        """Rebuild the sample: ``image`` uint8 ``[3, H, W]``, ``input_ids`` long ``[T]``.

        :raises RecordDecodeError: if the record does not decode.
        """
        ...


@runtime_checkable
class BatchRoundTrip(Protocol):
    """A codec that can compute a batch's decoded records without writing them (optional).

    Current data trained through the codec (:mod:`avalanche_exmask.training.codec_augmentation`)
    need ``decode(encode(sample))`` for every sample of a training batch, not the bytes: a codec
    with this method computes them as tensor operations over the whole batch, on the batch's device.
    """

    def round_trip(self, x: MultimodalSample, scores: Any, labels: torch.Tensor) -> MultimodalSample | None:
        """``decode(encode(x[i], scores[i], labels[i]))`` for every sample ``i`` of the batch ``x``
        (``image`` uint8 ``[B, 3, H, W]``, ``input_ids`` long ``[B, T]``), bit for bit, on ``x``'s
        device; ``None`` where the codec's configuration has no batched form (the caller then
        encodes and decodes record by record).

        :param scores: batched scores ``[B]`` (what :meth:`Codec.encode` reads), on ``x``'s device.
        :param labels: long ``[B]``.
        """
        ...


def pack_tokens(input_ids: torch.Tensor, keep: torch.Tensor | None = None) -> bytes:
    """The real (or the kept) token ids of ``input_ids`` ``[T]`` as ``uint16`` bytes, in order.

    :param keep: optional bool ``[T]``; padding is dropped in any case.
    :raises ValueError: if an id does not fit in ``uint16``.
    """
    ids = input_ids.numpy()
    ids = ids[ids != 0] if keep is None else ids[keep.numpy() & (ids != 0)]
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) > np.iinfo(np.uint16).max):
        raise ValueError(f"token ids must be in [0, 65535] to be stored as uint16; got range "
                         f"[{int(ids.min())}, {int(ids.max())}]")
    return ids.astype(np.uint16).tobytes()


def unpack_tokens(data: bytes | memoryview, context_length: int) -> torch.Tensor:
    """Inverse of :func:`pack_tokens`: long ``[context_length]``, zero-padded.

    :raises RecordDecodeError: on an odd byte count or more tokens than the context length.
    """
    if len(data) % 2 or len(data) // 2 > context_length:
        raise RecordDecodeError(
            f"token section of {len(data)} bytes is not at most {context_length} uint16 token ids"
        )
    ids = np.zeros(context_length, dtype=np.int64)
    ids[: len(data) // 2] = np.frombuffer(data, dtype=np.uint16)
    return torch.from_numpy(ids)


def repack_tokens(input_ids: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """What :func:`unpack_tokens` returns for :func:`pack_tokens`' bytes, for a batch at once:
    the real (or the kept) ids of each row moved to its front, in order, zero-padded.

    :param input_ids: long ``[B, T]``.
    :param keep: optional bool ``[B, T]``; padding is dropped in any case.
    :return: long ``[B, T]``, on ``input_ids``' device.
    :raises ValueError: if a kept id does not fit in ``uint16`` (as :func:`pack_tokens`).
    """
    kept = input_ids != 0 if keep is None else keep & (input_ids != 0)
    values = input_ids[kept]
    if values.numel() and (int(values.min()) < 0 or int(values.max()) > np.iinfo(np.uint16).max):
        raise ValueError(f"token ids must be in [0, 65535] to be stored as uint16; got range "
                         f"[{int(values.min())}, {int(values.max())}]")
    order = torch.sort((~kept).to(torch.uint8), dim=-1, stable=True).indices  # kept positions first, in order
    return torch.where(kept.gather(-1, order), input_ids.gather(-1, order), 0)


def patch_grid(height: int, width: int, n_patches: int, patch_size: int | None = None) -> tuple[int, int, int]:
    """The patch grid ``(rows, cols, P)`` of an ``H x W`` image with ``N`` patches.

    :param patch_size: ``P`` in pixels; when ``None`` it is inferred, assuming a square image and a
        square grid.
    :raises ValueError: if the sizes are inconsistent.
    """
    if patch_size is None:
        side = math.isqrt(n_patches)
        if side * side != n_patches or height != width or height % side:
            raise ValueError(
                f"cannot infer the patch size of a {height}x{width} image with {n_patches} patches; "
                f"pass patch_size"
            )
        patch_size = height // side
    if height % patch_size or width % patch_size or (height // patch_size) * (width // patch_size) != n_patches:
        raise ValueError(
            f"a {height}x{width} image with patch_size {patch_size} does not have {n_patches} patches"
        )
    return height // patch_size, width // patch_size, patch_size


def as_uint8_array(image: torch.Tensor) -> np.ndarray:
    """An unbatched image as a ``uint8`` numpy array (no copy when contiguous), ``[3, H, W]``.

    :raises ValueError: if the image is not ``uint8 [3, H, W]``.
    """
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an unbatched uint8 image [3, H, W]; got {image.dtype} {list(image.shape)}")
    return image.contiguous().numpy()


def as_uint8_batch(images: torch.Tensor) -> torch.Tensor:
    """A batch of images, checked: ``uint8 [B, 3, H, W]``.

    :raises ValueError: otherwise (as :func:`as_uint8_array` for one image).
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a batch of uint8 images [B, 3, H, W]; got {images.dtype} {list(images.shape)}")
    return images
