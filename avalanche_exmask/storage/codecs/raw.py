"""The plain codec: the whole uint8 image and the real token ids.

Payload: image ``uint8 [3, H, W]`` then token ids ``uint16 [m]`` (the ``m`` real tokens only,
padding is not stored). Cost: ``3 H W + 2 m`` bytes, never more than
:func:`avalanche_exmask.storage.budget.plain_exemplar_nbytes`, which counts a full context.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar, NamedTuple

import numpy as np
import torch

from avalanche_exmask.data.sample import MultimodalSample, make_sample
from avalanche_exmask.models.outputs import MaskingScores
from avalanche_exmask.registry import CODECS, CodecSpec
from avalanche_exmask.storage.codecs.base import Record, RecordDecodeError, as_uint8_array, pack_tokens, unpack_tokens

__all__ = ["RawCodec", "ImageLayout"]


class ImageLayout(NamedTuple):
    """Geometry shared by whole-image records: image ``H x W`` and context length ``T``."""

    height: int
    width: int
    context_length: int


@functools.cache
def image_layout(height: int, width: int, context_length: int) -> ImageLayout:
    """The shared :class:`ImageLayout` instance for these sizes."""
    return ImageLayout(height, width, context_length)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RawCodec:
    """Stores exemplars uncompressed (plain replay)."""

    name: ClassVar[str] = "raw"
    lossless: ClassVar[bool] = True
    """Decoding gives back the encoded sample exactly (nothing to gain from training on decoded data)."""
    uses_scores: ClassVar[bool] = False
    """:meth:`encode` ignores its ``scores`` (callers may pass ``None`` and skip the scoring pass)."""

    def encode(self, sample: MultimodalSample, scores: MaskingScores, label: int) -> Record:
        """Pack the image and the real token ids (``scores`` are not used)."""
        pixels = as_uint8_array(sample.image)
        _, height, width = pixels.shape
        data = pixels.tobytes() + pack_tokens(sample.input_ids)
        return Record(label=label, data=data, layout=image_layout(height, width, sample.input_ids.shape[-1]))

    def decode(self, record: Record) -> MultimodalSample:
        """The original sample, token ids re-padded with zeros.

        :raises RecordDecodeError: if the record is not a raw record or is too short.
        """
        layout = record.layout
        if type(record) is not Record or not isinstance(layout, ImageLayout):
            raise RecordDecodeError(f"RawCodec cannot decode a {type(record).__name__} with layout {layout!r}")
        image_nbytes = 3 * layout.height * layout.width
        if len(record.data) < image_nbytes:
            raise RecordDecodeError(
                f"raw record of {len(record.data)} bytes is shorter than its {image_nbytes}-byte image"
            )
        pixels = np.frombuffer(record.data, dtype=np.uint8, count=image_nbytes).reshape(3, layout.height, layout.width)
        ids = unpack_tokens(memoryview(record.data)[image_nbytes:], layout.context_length)
        return make_sample(torch.from_numpy(pixels.copy()), ids)


CODECS.register("raw")(CodecSpec(codec=RawCodec, record_types=(), layout_types=(ImageLayout,)))
