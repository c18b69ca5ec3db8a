"""The exemplar-masking codec: only the kept patches' pixels and the kept tokens are stored.

Payload layout (all ``uint8`` unless noted), in this order:

1. patch bitmap: ``np.packbits`` of the bool keep-mask ``[N]``, ``ceil(N / 8)`` bytes;
2. kept patches: ``[k, 3, P, P]`` pixels, in row-major patch order; or, with
   ``patch_jpeg_quality=q``, a ``uint32`` byte count then one JPEG file (quality ``q``, PIL's
   defaults otherwise, as :class:`~avalanche_exmask.storage.codecs.jpeg.JpegCodec`) of the kept
   patches tiled row-major into a ``ceil(k / c) x c`` grid, ``c = ceil(sqrt(k))`` (unused tiles black);
3. background (unless ``background_downsample=None``): the ``N - k`` discarded patches
   average-pooled ``b x`` per side, ``[N - k, 3, P/b, P/b]`` (``b = P``: one mean colour, 3 bytes
   a patch, the default);
4. kept token ids: ``uint16 [m]``, in order.

Cost: ``ceil(N/8) + 3 k P^2 + 3 (N - k) (P/b)^2 + 2 m`` bytes (with JPEG patches: ``4 +`` the JPEG
file's length in place of ``3 k P^2``). Without a background, discarded patches decode as black
(0); with one, as the upsampled pooled colours.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import torch

from avalanche_exmask.data.sample import MultimodalSample, make_sample
from avalanche_exmask.masking.image_mask import ImageMaskRule
from avalanche_exmask.masking.text_mask import TextMaskRule
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
from avalanche_exmask.storage.codecs.jpeg import decode_jpeg, encode_jpeg
from avalanche_exmask.storage.codecs.resampling import block_mean_batch, upsample_array, upsample_batch

__all__ = ["MaskedCodec", "MaskedRecord", "MaskedLayout", "patchify", "unpatchify"]


class MaskedLayout(NamedTuple):
    """Geometry shared by masked records: patch grid ``rows x cols``, patch size ``P``, context
    length ``T``, the downsampling factor ``k`` of the discarded patches (0: not stored) and the
    JPEG quality of the kept patches (0: raw pixels)."""

    rows: int
    cols: int
    patch_size: int
    context_length: int
    background_downsample: int = 0
    patch_jpeg_quality: int = 0

    @property
    def background_patch_nbytes(self) -> int:
        """Bytes of one discarded patch stored at ``1/k`` resolution per side (0 if not stored)."""
        k = self.background_downsample
        return 3 * (self.patch_size // k) ** 2 if k else 0

    @property
    def n_patches(self) -> int:
        return self.rows * self.cols


@functools.cache
def _layout(
    rows: int, cols: int, patch_size: int, context_length: int, background_downsample: int, patch_jpeg_quality: int
) -> MaskedLayout:
    return MaskedLayout(rows, cols, patch_size, context_length, background_downsample, patch_jpeg_quality)


class MaskedRecord(Record):
    """A masked exemplar; exposes its masks for statistics and augmentation.

    :param n_tokens: the number of real tokens of the original text (for :attr:`kept_token_fraction`).
    """

    __slots__ = ("n_tokens",)
    layout: MaskedLayout

    def __init__(self, *, label: int, data: bytes, layout: MaskedLayout, n_tokens: int) -> None:
        super().__init__(label=label, data=data, layout=layout)
        self.n_tokens = n_tokens

    def to_state(self) -> dict[str, int]:
        """``label`` and ``n_tokens`` (see :meth:`Record.to_state`)."""
        return {**super().to_state(), "n_tokens": int(self.n_tokens)}

    @property
    def keep_mask(self) -> torch.Tensor:
        """Bool ``[N]``: which patches are stored (row-major over the grid)."""
        n = self.layout.n_patches
        bitmap = np.frombuffer(self.data, dtype=np.uint8, count=min(len(self.data), _bitmap_nbytes(n)))
        return torch.from_numpy(np.unpackbits(bitmap, count=n).astype(bool))

    @property
    def patch_grid(self) -> tuple[int, int]:
        """``(rows, cols)`` of the patch grid."""
        return self.layout.rows, self.layout.cols

    @property
    def kept_patch_fraction(self) -> float:
        """Kept patches over all ``N`` patches."""
        return int(self.keep_mask.sum()) / self.layout.n_patches

    @property
    def kept_token_fraction(self) -> float:
        """Kept tokens over the original real tokens (start and end included); 1.0 for an empty text."""
        n, kept = self.layout.n_patches, int(self.keep_mask.sum())
        pixel_nbytes = _kept_patches_nbytes(self.data, self.layout, kept) + (n - kept) * self.layout.background_patch_nbytes
        n_kept = (len(self.data) - _bitmap_nbytes(n) - pixel_nbytes) // 2
        return n_kept / self.n_tokens if self.n_tokens else 1.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class MaskedCodec:
    """Stores the patches kept by ``image_rule`` and the tokens kept by ``text_rule``.

    :param image_rule: which patches to keep, from the [CLS] -> patch attention.
    :param text_rule: which tokens to keep; default (``None``): every token,
        ``TextMaskRule(mode="none")``. Measured on the embedded benchmark (README), any text mask
        costs accuracy (about 4 points) for about 1% of a record's bytes; ``TextMaskRule()`` keeps
        class-name words and context.
    :param class_token_ids: label -> long ``[K]`` class-name token ids
        (:func:`~avalanche_exmask.masking.text_mask.class_name_token_ids`); required by a text rule
        with ``class_source="names"``.
    :param patch_size: ``P`` in pixels; ``None`` infers it from the image size and the number of
        patch scores (square grid).
    :param background_downsample: ``None`` (the paper): discarded patches are stored as nothing
        and decode as black. An integer ``k`` dividing ``P``: discarded patches are also stored
        average-pooled ``k x`` per side (``3 (P/k)^2`` bytes each; ``k = P`` keeps one mean colour
        per patch; ``"patch"`` means ``k = P`` for any patch size) and decode as a smooth
        low-resolution background around the full-resolution kept patches, so replayed exemplars
        do not differ from real images by black regions.
    :param patch_jpeg_quality: ``None`` (the paper): the kept patches are stored as raw pixels.
        ``q`` in ``[1, 95]``: they are stored as one JPEG of quality ``q`` (the module docstring),
        masking composed with MRDC-style compression. At 64 px a JPEG file's fixed headers are
        about 630 of its bytes, so this saves little there; measured in README "Results".
    """

    name: ClassVar[str] = "masked"
    image_rule: ImageMaskRule = ImageMaskRule()
    text_rule: TextMaskRule | None = None
    class_token_ids: Mapping[int, torch.Tensor] | None = dataclasses.field(default=None, repr=False)
    patch_size: int | None = None
    background_downsample: int | Literal["patch"] | None = "patch"
    patch_jpeg_quality: int | None = None

    def __post_init__(self) -> None:
        if self.patch_jpeg_quality is not None and not 1 <= self.patch_jpeg_quality <= 95:
            raise ValueError(f"MaskedCodec.patch_jpeg_quality must be None or in [1, 95]; got {self.patch_jpeg_quality}")
        text_rule = self.text_rule
        if text_rule is None:
            text_rule = TextMaskRule(mode="none")
            object.__setattr__(self, "text_rule", text_rule)
        if text_rule.needs_class_names and self.class_token_ids is None:
            raise ValueError(
                "MaskedCodec: the text rule keeps class-name words (class_source='names') but no class_token_ids "
                "were given; pass class_token_ids=class_name_token_ids(class_names, tokenizer) or use "
                "TextMaskRule(class_source='attention')"
            )
        k = self.background_downsample
        if k is None or k == "patch":
            return
        if not isinstance(k, int) or k < 1 or (self.patch_size is not None and self.patch_size % k):
            raise ValueError(
                f"background_downsample must be None, 'patch' or a positive divisor of patch_size {self.patch_size}; got {k!r}"
            )

    def encode(self, sample: MultimodalSample, scores: MaskingScores, label: int) -> MaskedRecord:
        """Mask and pack one unbatched sample (see the module docstring for the byte layout)."""
        pixels = as_uint8_array(sample.image)
        _, height, width = pixels.shape
        rows, cols, patch = patch_grid(height, width, scores.patch_attention.shape[-1], self.patch_size)
        keep = self.image_rule(scores.patch_attention)
        token_keep = self._text_rule(sample.input_ids, scores, keep, self._class_token_ids(label))
        keep_np = keep.numpy()
        all_patches = patchify(pixels, patch)
        kept_patches = all_patches[keep_np]
        sections = [
            np.packbits(keep_np).tobytes(),
            _jpeg_mosaic(kept_patches, self.patch_jpeg_quality) if self.patch_jpeg_quality else kept_patches.tobytes(),
        ]
        k = self._background_factor(patch)
        if k:
            sections.append(_pool_patches(all_patches[~keep_np], k).tobytes())
        sections.append(pack_tokens(sample.input_ids, token_keep))
        return MaskedRecord(
            label=label,
            data=b"".join(sections),
            layout=_layout(rows, cols, patch, sample.input_ids.shape[-1], k, self.patch_jpeg_quality or 0),
            n_tokens=int((sample.input_ids != 0).sum()),
        )

    @property
    def _text_rule(self) -> TextMaskRule:
        """:attr:`text_rule`, which ``__post_init__`` set when it was ``None``."""
        assert self.text_rule is not None  # __post_init__ replaced None by TextMaskRule(mode="none")
        return self.text_rule

    @property
    def reads_patch_attention_only(self) -> bool:
        """Whether :meth:`encode` reads nothing of its scores but ``patch_attention`` (no text rule
        that reads scores), so that a scorer may compute that alone."""
        return not self._text_rule.reads_scores

    @property
    def needs_token_importance(self) -> bool:
        """Whether the scores given to :meth:`encode` must carry ``token_importance``."""
        return self._text_rule.needs_token_importance

    def _class_token_ids(self, label: int) -> torch.Tensor | None:
        if not self._text_rule.needs_class_names:
            return None
        class_token_ids = self.class_token_ids
        assert class_token_ids is not None  # __post_init__ refuses a text rule that needs class names without them
        if label not in class_token_ids:
            raise ValueError(
                f"MaskedCodec: no class-name tokens for label {label} (class_token_ids has {len(class_token_ids)} labels)"
            )
        return class_token_ids[label]

    def _background_factor(self, patch: int) -> int:
        """The pooling factor ``k`` of the discarded patches for patch size ``P`` (0: no background).

        :raises ValueError: if ``k`` does not divide ``P``.
        """
        k = patch if self.background_downsample == "patch" else (self.background_downsample or 0)
        if k and patch % k:
            raise ValueError(f"background_downsample {k} does not divide the patch size {patch}")
        return k

    def round_trip(self, x: MultimodalSample, scores: Any, labels: torch.Tensor) -> MultimodalSample | None:
        """:meth:`decode` of :meth:`encode` for a whole batch, as tensor operations on its device
        (:class:`~avalanche_exmask.storage.codecs.base.BatchRoundTrip`); ``None`` with
        ``patch_jpeg_quality`` (the kept patches then go through a JPEG file each).

        The same image rule, block means and upsampling as a record's
        (:mod:`~avalanche_exmask.storage.codecs.resampling`), so the result is bit for bit the
        decoded records'.

        :param x: ``image`` uint8 ``[B, 3, H, W]``, ``input_ids`` long ``[B, T]``.
        :param scores: batched scores ``[B]`` with ``patch_attention`` float ``[B, N]`` (and what
            the text rule reads).
        :param labels: long ``[B]`` (the class-name tokens of a text rule that keeps them).
        :return: the decoded batch, same shapes, on ``x``'s device.
        """
        if self.patch_jpeg_quality:
            return None
        images = as_uint8_batch(x.image)
        batch, _, height, width = images.shape
        attention = scores.patch_attention
        rows, cols, patch = patch_grid(height, width, attention.shape[-1], self.patch_size)
        keep = self.image_rule(attention)  # [B, N]
        k = self._background_factor(patch)
        if k:
            # the background of every patch, the kept ones too: a record's decoding pools its kept pixels
            background = upsample_batch(block_mean_batch(images, k), k)
        else:
            background = torch.zeros_like(images)
        kept_pixels = keep.reshape(batch, 1, rows, 1, cols, 1).expand(batch, 1, rows, patch, cols, patch)
        image = torch.where(kept_pixels.reshape(batch, 1, rows * patch, cols * patch), images, background)
        return MultimodalSample(
            image=image, input_ids=repack_tokens(x.input_ids, self._token_keep(x.input_ids, scores, keep, labels)),
            batch_size=[batch],
        )

    def _token_keep(
        self, input_ids: torch.Tensor, scores: Any, keep: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor | None:
        """Bool ``[B, T]`` on ``input_ids``' device: the tokens the text rule keeps, asked sample by
        sample on the CPU, as :meth:`encode` asks it (``None``: every real token, the rule that
        reads nothing)."""
        if self._text_rule.mode == "none":
            return None
        ids, cpu_scores, cpu_keep = input_ids.cpu(), scores.cpu(), keep.cpu()
        masks = [
            self._text_rule(ids[i], cpu_scores[i], cpu_keep[i], self._class_token_ids(int(label)))
            for i, label in enumerate(labels.tolist())
        ]
        return torch.stack(masks).to(input_ids.device)

    def decode(self, record: Record) -> MultimodalSample:
        """The masked sample: kept patches at their place, black elsewhere; ids re-padded.

        :raises RecordDecodeError: if the record is not a masked record or its sizes do not match.
        """
        layout = record.layout
        if not isinstance(record, MaskedRecord) or not isinstance(layout, MaskedLayout):
            raise RecordDecodeError(f"MaskedCodec cannot decode a {type(record).__name__}")
        n, patch = layout.n_patches, layout.patch_size
        head = _bitmap_nbytes(n)
        if len(record.data) < head:
            raise RecordDecodeError(
                f"masked record of {len(record.data)} bytes is shorter than its {head}-byte patch bitmap"
            )
        bitmap = np.frombuffer(record.data, dtype=np.uint8, count=head)
        bits = np.unpackbits(bitmap)
        if bits[n:].any():
            raise RecordDecodeError("masked record's patch bitmap has bits set beyond the last patch")
        keep = bits[:n].astype(bool)
        patch_nbytes = _kept_patches_nbytes(record.data, layout, int(keep.sum()))
        if len(record.data) < head + patch_nbytes:
            raise RecordDecodeError(
                f"masked record of {len(record.data)} bytes cannot hold its {int(keep.sum())} kept patches "
                f"({patch_nbytes} bytes)"
            )
        background_nbytes = int((~keep).sum()) * layout.background_patch_nbytes
        if len(record.data) < head + patch_nbytes + background_nbytes:
            raise RecordDecodeError(
                f"masked record of {len(record.data)} bytes cannot hold its discarded patches' background "
                f"({background_nbytes} bytes)"
            )
        n_kept = int(np.count_nonzero(keep))
        if layout.patch_jpeg_quality:
            kept = _read_jpeg_mosaic(record.data[head + 4 : head + patch_nbytes], n_kept, patch)
        else:
            kept = np.frombuffer(record.data, dtype=np.uint8, count=patch_nbytes, offset=head).reshape(-1, 3, patch, patch)
        if background_nbytes:
            low = patch // layout.background_downsample
            pooled = np.empty((n, 3, low, low), dtype=np.uint8)
            pooled[~keep] = np.frombuffer(
                record.data, dtype=np.uint8, count=background_nbytes, offset=head + patch_nbytes
            ).reshape(-1, 3, low, low)
            pooled[keep] = _pool_patches(kept, layout.background_downsample)
            image = upsample_array(unpatchify(pooled, layout.rows, layout.cols), layout.background_downsample)
        else:
            image = np.zeros((3, layout.rows * patch, layout.cols * patch), dtype=np.uint8)
        # the kept patches over the background, written through a [rows, cols, 3, P, P] view of the image
        tiles = image.reshape(3, layout.rows, patch, layout.cols, patch).transpose(1, 3, 0, 2, 4)
        kept_rows, kept_cols = np.divmod(np.flatnonzero(keep), layout.cols)
        tiles[kept_rows, kept_cols] = kept
        ids = unpack_tokens(memoryview(record.data)[head + patch_nbytes + background_nbytes :], layout.context_length)
        return make_sample(torch.from_numpy(image), ids)


def patchify(pixels: np.ndarray, patch_size: int) -> np.ndarray:
    """``uint8 [3, H, W]`` -> ``[N, 3, P, P]``, patches row-major over the grid."""
    channels, height, width = pixels.shape
    rows, cols = height // patch_size, width // patch_size
    grid = pixels.reshape(channels, rows, patch_size, cols, patch_size)
    return grid.transpose(1, 3, 0, 2, 4).reshape(rows * cols, channels, patch_size, patch_size)


def unpatchify(patches: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Inverse of :func:`patchify`: ``[N, 3, P, P]`` -> contiguous ``[3, rows P, cols P]``."""
    _, channels, patch, _ = patches.shape
    grid = patches.reshape(rows, cols, channels, patch, patch).transpose(2, 0, 3, 1, 4)
    return np.ascontiguousarray(grid.reshape(channels, rows * patch, cols * patch))


def _pool_patches(patches: np.ndarray, factor: int) -> np.ndarray:
    """``uint8 [m, 3, P, P]`` -> ``uint8 [m, 3, P/k, P/k]``, the mean of each ``k x k`` block (rounded)."""
    m, channels, patch, _ = patches.shape
    blocks = patches.reshape(m, channels, patch // factor, factor, patch // factor, factor).astype(np.float32)
    return np.rint(blocks.mean(axis=(3, 5))).astype(np.uint8)


def _bitmap_nbytes(n_patches: int) -> int:
    return (n_patches + 7) // 8


def _mosaic_grid(n_patches: int) -> tuple[int, int]:
    """``(rows, cols)`` of the near-square grid that tiles ``n_patches`` kept patches."""
    cols = max(1, math.ceil(math.sqrt(n_patches)))
    return max(1, math.ceil(n_patches / cols)), cols


def _jpeg_mosaic(patches: np.ndarray, quality: int) -> bytes:
    """``uint8 [k, 3, P, P]`` -> ``uint32`` length + a JPEG of the patches tiled row-major (see the module docstring)."""
    rows, cols = _mosaic_grid(len(patches))
    tiles = np.zeros((rows * cols, *patches.shape[1:]), dtype=np.uint8)
    tiles[: len(patches)] = patches
    jpeg = encode_jpeg(unpatchify(tiles, rows, cols), quality)
    return np.uint32(len(jpeg)).tobytes() + jpeg


def _read_jpeg_mosaic(data: bytes, n_patches: int, patch_size: int) -> np.ndarray:
    """The ``uint8 [k, 3, P, P]`` kept patches from a JPEG mosaic.

    :raises RecordDecodeError: if the JPEG does not decode or has not the mosaic's size.
    """
    rows, cols = _mosaic_grid(n_patches)
    pixels = decode_jpeg(data, rows * patch_size, cols * patch_size, what=f"masked record's JPEG of {n_patches} patches")
    return patchify(pixels, patch_size)[:n_patches]


def _kept_patches_nbytes(data: bytes, layout: MaskedLayout, n_kept: int) -> int:
    """Bytes of a record's kept-patch section: ``3 k P^2`` raw, or ``4 +`` the stored JPEG length.

    :raises RecordDecodeError: if a JPEG section's length field is missing.
    """
    if not layout.patch_jpeg_quality:
        return n_kept * 3 * layout.patch_size**2
    start = _bitmap_nbytes(layout.n_patches)
    if len(data) < start + 4:
        raise RecordDecodeError(f"masked record of {len(data)} bytes is shorter than its JPEG length field")
    return 4 + int(np.frombuffer(data, dtype=np.uint32, count=1, offset=start)[0])


def _complete_options(options: dict[str, Any]) -> dict[str, Any]:
    """A ``text_rule`` left unset (``None``) stands for ``TextMaskRule(mode="none")``: stored as its fields."""
    if options.get("text_rule") is None:
        return {**options, "text_rule": dataclasses.asdict(TextMaskRule(mode="none"))}
    return options


def _needs_class_names(values: Mapping[str, Any]) -> str | None:
    """What needs class names, if the text rule keeps class-name words (then ``class_token_ids``
    must be given); ``None`` otherwise."""
    text_rule = values.get("text_rule")
    if text_rule is None or not text_rule.needs_class_names:
        return None
    return "text_rule.class_source='names' needs class names, and the benchmark has none; set it to 'attention'"


def _check_run(config: Any, options: Mapping[str, Any]) -> None:
    """Token-dropping replay (``model.skip_empty_patches='drop'``) needs black discarded patches.

    :raises ValueError: if the config keeps a background (``background_downsample`` not null).
    """
    background = options.get("background_downsample", "patch")
    if config.model.skip_empty_patches == "drop" and background is not None:
        raise ValueError(
            "model.skip_empty_patches='drop' drops the black patches of masked exemplars, and with "
            f"storage.options.masked.background_downsample={background!r} they have none; set it to null"
        )


CODECS.register("masked")(
    CodecSpec(
        codec=MaskedCodec, record_types=(MaskedRecord,), layout_types=(MaskedLayout,),
        complete_options=_complete_options, needs_class_names=_needs_class_names, check_run=_check_run,
    )
)
