"""The MRDC-style codec (Wang et al., ICLR 2022): the image stored as a JPEG.

Payload: token count ``uint16``, token ids ``uint16 [m]`` (real tokens only), then the JPEG file
(PIL, baseline; 4:2:0 chroma subsampling unless ``chroma_subsampling="4:4:4"``). Cost: ``2 + 2 m +`` the encoded length, in bytes.
Decoding fails on a broken JPEG header or a truncated file; like any JPEG reader it ignores
trailing bytes and cannot detect every corruption of the entropy-coded data.
"""
from __future__ import annotations

import dataclasses
import io
from typing import ClassVar, Literal

import numpy as np
import torch
from PIL import Image

from avalanche_exmask.data.sample import MultimodalSample, make_sample
from avalanche_exmask.models.outputs import MaskingScores
from avalanche_exmask.registry import CODECS, CodecSpec
from avalanche_exmask.storage.codecs.base import Record, RecordDecodeError, as_uint8_array, pack_tokens, unpack_tokens
from avalanche_exmask.storage.codecs.raw import ImageLayout, image_layout

__all__ = ["JpegCodec", "JpegRecord", "encode_jpeg", "decode_jpeg"]


class JpegRecord(Record):
    """A record whose image is a JPEG file (the layout gives the expected size)."""

    __slots__ = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class JpegCodec:
    """Stores the image as JPEG at ``quality``.

    :param quality: PIL JPEG quality, 1 (smallest) to 100.
    :param chroma_subsampling: ``"4:2:0"`` (PIL's default: colour at half resolution per side) or
        ``"4:4:4"`` (colour at full resolution; larger files, for operating points where JPEG must
        store few, nearly lossless exemplars).
    """

    name: ClassVar[str] = "jpeg"
    uses_scores: ClassVar[bool] = False
    """:meth:`encode` ignores its ``scores`` (callers may pass ``None`` and skip the scoring pass)."""
    quality: int = 50
    chroma_subsampling: Literal["4:2:0", "4:4:4"] = "4:2:0"

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 100:
            raise ValueError(f"JpegCodec.quality must be in [1, 100]; got {self.quality}")
        if self.chroma_subsampling not in _SUBSAMPLING:
            raise ValueError(f"JpegCodec.chroma_subsampling must be one of {sorted(_SUBSAMPLING)}; got {self.chroma_subsampling!r}")

    def encode(self, sample: MultimodalSample, scores: MaskingScores, label: int) -> JpegRecord:
        """JPEG-encode the image (``scores`` are not used)."""
        pixels = as_uint8_array(sample.image)
        _, height, width = pixels.shape
        tokens = pack_tokens(sample.input_ids)
        data = np.uint16(len(tokens) // 2).tobytes() + tokens + encode_jpeg(pixels, self.quality, self.chroma_subsampling)
        return JpegRecord(label=label, data=data, layout=image_layout(height, width, sample.input_ids.shape[-1]))

    def decode(self, record: Record) -> MultimodalSample:
        """The JPEG-decoded image and the token ids, re-padded.

        :raises RecordDecodeError: if the record is not a JPEG record, or its bytes are not a JPEG
            of the expected size.
        """
        layout = record.layout
        if not isinstance(record, JpegRecord) or not isinstance(layout, ImageLayout):
            raise RecordDecodeError(f"JpegCodec cannot decode a {type(record).__name__}")
        if len(record.data) < 2:
            raise RecordDecodeError("jpeg record is shorter than its token count")
        tokens_end = 2 + 2 * int(np.frombuffer(record.data, dtype=np.uint16, count=1)[0])
        if tokens_end > len(record.data):
            raise RecordDecodeError(f"jpeg record of {len(record.data)} bytes is shorter than its token section")
        ids = unpack_tokens(memoryview(record.data)[2:tokens_end], layout.context_length)
        pixels = decode_jpeg(record.data[tokens_end:], layout.height, layout.width, what="jpeg record")
        return make_sample(torch.from_numpy(pixels), ids)


_SUBSAMPLING = {"4:2:0": 2, "4:4:4": 0}
"""Chroma subsampling name -> PIL's ``subsampling`` code."""


def encode_jpeg(pixels: np.ndarray, quality: int, chroma_subsampling: str = "4:2:0") -> bytes:
    """``uint8 [3, H, W]`` -> one JPEG file of ``quality`` (PIL, baseline) with ``chroma_subsampling``."""
    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))
    image.save(buffer, format="JPEG", quality=quality, subsampling=_SUBSAMPLING[chroma_subsampling])
    return buffer.getvalue()


def decode_jpeg(data: bytes, height: int, width: int, *, what: str) -> np.ndarray:
    """One JPEG file -> ``uint8 [3, height, width]`` (contiguous).

    :param what: names the data in errors, e.g. ``"jpeg record"``.
    :raises RecordDecodeError: if ``data`` does not decode, or not to ``height x width``.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as error:
        raise RecordDecodeError(f"{what} does not decode: {error}") from error
    if pixels.shape[:2] != (height, width):
        raise RecordDecodeError(f"{what} decodes to {pixels.shape[1]}x{pixels.shape[0]}, expected {width}x{height}")
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


CODECS.register("jpeg")(CodecSpec(codec=JpegCodec, record_types=(JpegRecord,), layout_types=(ImageLayout,)))
