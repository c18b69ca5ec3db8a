"""The CIM-style codec (Luo et al., CVPR 2023): a salient box at full resolution, the rest downsampled.

A saliency map over the patches (``saliency``: the [CLS] -> patch attention, the stand-in of the
first releases, or the class activation map of the predicted class, as CIM describes it) is
upsampled to pixels (bilinear), min-max normalised, and thresholded; the tight box around the
pixels at or above the threshold is kept at full resolution. The image is also kept downsampled
``d x`` per side (area averaging); decoding upsamples it (bilinear) and pastes the box. A constant
map has no salient region: the box is then the whole image, and the low-resolution image, entirely
covered, is not stored.

With ``pixels_once`` (CIM: each pixel is stored once), the low-resolution cells that lie wholly
inside the box are not stored either: decoding recomputes them from the box crop by the same area
averaging, so the decoded image is bit for bit the one stored twice, for fewer bytes.

Payload, in this order: box ``uint16 [4]`` (top, left, bottom, right; bottom/right exclusive);
low-resolution image ``uint8 [3, ceil(H/d), ceil(W/d)]``, or with ``pixels_once`` only its cells
outside the box, ``uint8 [3, n_outside]`` (row-major); absent when the box is the whole image; box
crop ``uint8 [3, bottom-top, right-left]``; token ids ``uint16 [m]`` (real tokens only). Cost: the
payload length in bytes.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from avalanche_exmask.data.sample import MultimodalSample, make_sample
from avalanche_exmask.models.outputs import MaskingScores
from avalanche_exmask.registry import CODECS, CodecSpec
from avalanche_exmask.storage.codecs.base import (
    Record,
    RecordDecodeError,
    as_uint8_array,
    as_uint8_batch,
    pack_tokens,
    patch_grid,
    repack_tokens,
    unpack_tokens,
)

__all__ = ["CimCodec", "CimLayout", "salient_box", "salient_boxes"]


class CimLayout(NamedTuple):
    """Geometry shared by CIM records: image ``H x W``, downsampling factor ``d``, context length
    ``T``, and whether low-resolution cells inside the box are left out (``pixels_once``)."""

    height: int
    width: int
    downsample: int
    context_length: int
    pixels_once: bool = False

    @property
    def low_shape(self) -> tuple[int, int]:
        """``(ceil(H / d), ceil(W / d))``."""
        return -(-self.height // self.downsample), -(-self.width // self.downsample)


@functools.cache
def _layout(height: int, width: int, downsample: int, context_length: int, pixels_once: bool) -> CimLayout:
    return CimLayout(height, width, downsample, context_length, pixels_once)


def _cells_inside(layout: CimLayout, box: tuple[int, int, int, int]) -> torch.Tensor:
    """bool ``[ceil(H/d), ceil(W/d)]``: the low-resolution cells whose pixels all lie inside ``box``.

    A cell's pixels are those area averaging (adaptive average pooling) reads:
    rows ``floor(i H / h)`` to ``ceil((i + 1) H / h)`` (exclusive), columns alike.
    """
    top, left, bottom, right = box
    low_h, low_w = layout.low_shape

    def inside(size: int, cells: int, start: int, end: int) -> torch.Tensor:
        index = torch.arange(cells)
        first = (index * size) // cells
        last = -((-(index + 1) * size) // cells)
        return (first >= start) & (last <= end)

    return inside(layout.height, low_h, top, bottom)[:, None] & inside(layout.width, low_w, left, right)[None, :]


def salient_box(
    patch_attention: torch.Tensor, grid: tuple[int, int], image_size: tuple[int, int], threshold: float
) -> tuple[int, int, int, int]:
    """The tight box ``(top, left, bottom, right)`` (exclusive ends, pixels) around the salient pixels
    (:func:`salient_boxes` of one map; the whole image for a constant map).

    :param patch_attention: float ``[N]``, row-major over ``grid = (rows, cols)``.
    :param image_size: ``(H, W)`` in pixels.
    :param threshold: on the min-max normalised, upsampled map, in ``[0, 1]``.
    """
    inside = salient_boxes(patch_attention[None], grid, image_size, threshold)[0]
    rows = torch.nonzero(inside.any(dim=1)).flatten()
    cols = torch.nonzero(inside.any(dim=0)).flatten()
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def salient_boxes(
    saliency: torch.Tensor, grid: tuple[int, int], image_size: tuple[int, int], threshold: float
) -> torch.Tensor:
    """The salient box of every map of a batch, as one bool mask per image: each map is upsampled
    to pixels (bilinear), min-max normalised and thresholded, and the box is the tight one around the
    pixels at or above ``threshold``.

    :param saliency: float ``[B, N]``, row-major over ``grid = (rows, cols)``.
    :param image_size: ``(H, W)`` in pixels.
    :param threshold: in ``[0, 1]``.
    :return: bool ``[B, H, W]``, true inside each image's box (everywhere for a constant map).
    """
    height, width = image_size
    batch = saliency.shape[0]
    pixels = F.interpolate(saliency.float().reshape(batch, 1, *grid), size=(height, width), mode="bilinear",
                           align_corners=False)[:, 0]  # [B, H, W]
    low, high = pixels.amin(dim=(1, 2)), pixels.amax(dim=(1, 2))
    constant = high <= low
    spread = torch.where(constant, 1.0, high - low)
    salient = (pixels - low[:, None, None]) / spread[:, None, None] >= threshold
    inside_rows = _between_first_and_last(salient.any(dim=2))  # [B, H]
    inside_cols = _between_first_and_last(salient.any(dim=1))  # [B, W]
    return (inside_rows[:, :, None] & inside_cols[:, None, :]) | constant[:, None, None]


def _between_first_and_last(hits: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, L]``: the positions from each row's first true one to its last (none if none)."""
    seen_before = hits.cumsum(dim=-1) > 0
    seen_after = hits.flip(-1).cumsum(dim=-1).flip(-1) > 0
    return seen_before & seen_after


@dataclasses.dataclass(frozen=True, kw_only=True)
class CimCodec:
    """Keeps the attention box at full resolution and the image downsampled.

    :param threshold: on the min-max normalised saliency map, in ``[0, 1]``.
    :param downsample: factor per side ``d >= 1`` for the low-resolution image.
    :param patch_size: ``P`` in pixels; ``None`` infers it (square image and grid).
    :param saliency: ``"attention"`` (the [CLS] -> patch attention) or ``"class_activation"`` (the
        class activation map of the predicted class, ``MaskingScores.class_activation``; CIM's map).
    :param pixels_once: leave out the low-resolution cells inside the box (CIM stores each pixel
        once); ``False`` stores the whole low-resolution image (the first releases' layout).
    """

    name: ClassVar[str] = "cim"
    threshold: float = 0.6
    downsample: int = 2
    patch_size: int | None = None
    saliency: Literal["attention", "class_activation"] = "attention"
    pixels_once: bool = False

    def __post_init__(self) -> None:
        if self.saliency not in ("attention", "class_activation"):
            raise ValueError(f"CimCodec.saliency must be 'attention' or 'class_activation'; got {self.saliency!r}")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"CimCodec.threshold must be in [0, 1]; got {self.threshold}")
        if not self.downsample >= 1:
            raise ValueError(f"CimCodec.downsample must be >= 1; got {self.downsample}")

    def encode(self, sample: MultimodalSample, scores: MaskingScores, label: int) -> Record:
        """Pack the box, the low-resolution image, the box crop and the token ids."""
        pixels = as_uint8_array(sample.image)
        _, height, width = pixels.shape
        saliency = scores.patch_attention if self.saliency == "attention" else scores.class_activation
        if saliency is None:
            raise ValueError("CimCodec(saliency='class_activation') needs scores with class_activation")
        rows, cols, _ = patch_grid(height, width, saliency.shape[-1], self.patch_size)
        box = salient_box(saliency, (rows, cols), (height, width), self.threshold)
        top, left, bottom, right = box
        layout = _layout(height, width, self.downsample, sample.input_ids.shape[-1], self.pixels_once)
        whole = box == (0, 0, height, width)
        low = b""
        if not whole:
            low_image = _downsample(sample.image[None], layout.low_shape)[0]
            low = (low_image[:, ~_cells_inside(layout, box)] if self.pixels_once else low_image).numpy().tobytes()
        data = b"".join(
            [
                np.array(box, dtype=np.uint16).tobytes(),
                low,
                np.ascontiguousarray(pixels[:, top:bottom, left:right]).tobytes(),
                pack_tokens(sample.input_ids),
            ]
        )
        return Record(label=label, data=data, layout=layout)

    def round_trip(self, x: MultimodalSample, scores: Any, labels: torch.Tensor) -> MultimodalSample:
        """:meth:`decode` of :meth:`encode` for a whole batch, as tensor operations on its device
        (:class:`~avalanche_exmask.storage.codecs.base.BatchRoundTrip`): the box from the same
        saliency, the same area averaging and bilinear upsampling (the same torch kernels, run on
        the batch), so the result is bit for bit the decoded records' on the CPU. ``pixels_once``
        changes the bytes, not the decoded image (the module docstring).

        :param x: ``image`` uint8 ``[B, 3, H, W]``, ``input_ids`` long ``[B, T]``.
        :param scores: batched scores ``[B]`` with the saliency this codec reads, float ``[B, N]``.
        :param labels: long ``[B]`` (unused: a CIM record does not depend on its label).
        :return: the decoded batch, same shapes, on ``x``'s device.
        """
        images = as_uint8_batch(x.image)
        _, _, height, width = images.shape
        saliency = scores.patch_attention if self.saliency == "attention" else scores.class_activation
        if saliency is None:
            raise ValueError("CimCodec(saliency='class_activation') needs scores with class_activation")
        rows, cols, _ = patch_grid(height, width, saliency.shape[-1], self.patch_size)
        box = salient_boxes(saliency, (rows, cols), (height, width), self.threshold)
        low_shape = _layout(height, width, self.downsample, x.input_ids.shape[-1], self.pixels_once).low_shape
        outside = _upsample(_downsample(images, low_shape), (height, width))
        return MultimodalSample(
            image=torch.where(box[:, None], images, outside), input_ids=repack_tokens(x.input_ids),
            batch_size=[images.shape[0]],
        )

    def decode(self, record: Record) -> MultimodalSample:
        """Upsampled low-resolution image with the full-resolution box pasted in; ids re-padded.

        :raises RecordDecodeError: if the record is not a CIM record or its sizes do not match.
        """
        layout = record.layout
        if not isinstance(layout, CimLayout):
            raise RecordDecodeError(f"CimCodec cannot decode a {type(record).__name__} with layout {layout!r}")
        if len(record.data) < 8:
            raise RecordDecodeError(f"cim record of {len(record.data)} bytes is shorter than its box")
        top, left, bottom, right = (int(v) for v in np.frombuffer(record.data, dtype=np.uint16, count=4))
        if not (0 <= top < bottom <= layout.height and 0 <= left < right <= layout.width):
            raise RecordDecodeError(
                f"cim record's box {(top, left, bottom, right)} is outside a {layout.height}x{layout.width} image"
            )
        box = (top, left, bottom, right)
        low_h, low_w = layout.low_shape
        whole = box == (0, 0, layout.height, layout.width)
        outside = ~_cells_inside(layout, box) if layout.pixels_once else torch.ones(low_h, low_w, dtype=torch.bool)
        low_nbytes = 0 if whole else 3 * int(outside.sum())
        crop_nbytes = 3 * (bottom - top) * (right - left)
        if len(record.data) < 8 + low_nbytes + crop_nbytes:
            raise RecordDecodeError(f"cim record of {len(record.data)} bytes is shorter than its box crop")
        crop = np.frombuffer(record.data, dtype=np.uint8, count=crop_nbytes, offset=8 + low_nbytes)
        crop_image = torch.from_numpy(crop.reshape(3, bottom - top, right - left).copy())
        image = torch.zeros(3, layout.height, layout.width, dtype=torch.uint8)
        image[:, top:bottom, left:right] = crop_image
        if not whole:
            stored = torch.from_numpy(np.frombuffer(record.data, dtype=np.uint8, count=low_nbytes, offset=8).copy())
            low = _downsample(image[None], layout.low_shape)[0] if layout.pixels_once else torch.empty(3, low_h, low_w, dtype=torch.uint8)
            low[:, outside] = stored.reshape(3, -1)
            size = (layout.height, layout.width)
            image = _upsample(low[None], size)[0]
            image[:, top:bottom, left:right] = crop_image
        ids = unpack_tokens(memoryview(record.data)[8 + low_nbytes + crop_nbytes :], layout.context_length)
        return make_sample(image, ids)


def _downsample(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` area-averaged (adaptive average pooling) to uint8 ``[B, 3, *size]``."""
    return F.interpolate(images.float(), size=size, mode="area").round().clamp(0, 255).to(torch.uint8)


def _upsample(low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 ``[B, 3, h, w]`` upsampled (bilinear, half-pixel centres, rounded) to uint8 ``[B, 3, *size]``."""
    return F.interpolate(low.float(), size=size, mode="bilinear", align_corners=False).round().clamp(0, 255).to(torch.uint8)


CODECS.register("cim")(CodecSpec(codec=CimCodec, record_types=(), layout_types=(CimLayout,)))
