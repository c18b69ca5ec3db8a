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
import torch.nn.functional as F

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
        k = patch if self.background_downsample == "patch" else (self.background_downsample or 0)
        if k:
            if patch % k:
                raise ValueError(f"background_downsample {k} does not divide the patch size {patch}")
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

    def round_trip(self, x: MultimodalSample, scores: Any, labels: torch.Tensor) -> MultimodalSample | None:
        """:meth:`decode` of :meth:`encode` for a whole batch, as tensor operations on its device
        (:class:`~avalanche_exmask.storage.codecs.base.BatchRoundTrip`); ``None`` with
        ``patch_jpeg_quality`` (the kept patches then go through a JPEG file each).

        The same image rule, background pooling (the float32 block sums of uint8 pixels are exact,
        then one division, rounded half to even) and bilinear upsampling (torch's kernel, which
        :func:`_upsample` equals) as a record, so the result is bit for bit the decoded records'.

        :param x: ``image`` uint8 ``[B, 3, H, W]``, ``input_ids`` long ``[B, T]``.
        :param scores: batched scores ``[B]`` with ``patch_attention`` float ``[B, N]`` (and what
            the text rule reads).
        :param labels: long ``[B]`` (the class-name tokens of a text rule that keeps them).
        :return: the decoded batch, same shapes, on ``x``'s device.
        """
        if self.patch_jpeg_quality:
            return None
        images = as_uint8_batch(x.image)
        batch, channels, height, width = images.shape
        attention = scores.patch_attention
        rows, cols, patch = patch_grid(height, width, attention.shape[-1], self.patch_size)
        keep = self.image_rule(attention)  # [B, N]
        tiles = images.reshape(batch, channels, rows, patch, cols, patch).permute(0, 2, 4, 1, 3, 5)  # [B, r, c, 3, P, P]
        k = patch if self.background_downsample == "patch" else (self.background_downsample or 0)
        if k:
            if patch % k:
                raise ValueError(f"background_downsample {k} does not divide the patch size {patch}")
            background = _upsampled_background(tiles, k)
        else:
            background = torch.zeros_like(tiles)
        kept_tiles = torch.where(keep.reshape(batch, rows, cols, 1, 1, 1), tiles, background)
        image = kept_tiles.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, rows * patch, cols * patch)
        return MultimodalSample(
            image=image.contiguous(), input_ids=repack_tokens(x.input_ids, self._token_keep(x.input_ids, scores, keep, labels)),
            batch_size=[batch],
        )

    def _token_keep(
        self, input_ids: torch.Tensor, scores: Any, keep: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor | None:
        """Bool ``[B, T]``: the tokens the text rule keeps, sample by sample as :meth:`encode`
        asks it (``None``: every real token, the rule that reads nothing)."""
        if self._text_rule.mode == "none":
            return None
        masks = []
        for i, label in enumerate(labels.tolist()):
            class_ids = self._class_token_ids(int(label))
            class_ids = None if class_ids is None else class_ids.to(input_ids.device)
            masks.append(self._text_rule(input_ids[i], scores[i], keep[i], class_ids))
        return torch.stack(masks)

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
            image = _upsample(unpatchify(pooled, layout.rows, layout.cols), layout.background_downsample)
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


@functools.cache
def _interpolation_matrix(size: int, factor: int) -> np.ndarray:
    """``float32 [k size, size]``: row ``o`` holds ``2 k`` times the weights with which output
    sample ``o`` mixes the ``size`` source samples when they are upsampled ``k x`` linearly with
    half-pixel centres (torch's ``align_corners=False``): it reads source ``s = (o + 1/2) / k - 1/2``
    (0 below 0), so its two weights are integers summing to ``2 k``."""
    outputs = np.arange(size * factor)
    doubled = np.maximum(2 * outputs + 1 - factor, 0)  # 2 k s
    first = np.minimum(doubled // (2 * factor), size - 1)
    second_weight = np.clip(doubled - 2 * factor * first, 0, 2 * factor)
    matrix = np.zeros((size * factor, size), dtype=np.float32)
    np.add.at(matrix, (outputs, first), 2 * factor - second_weight)
    np.add.at(matrix, (outputs, np.minimum(first + 1, size - 1)), second_weight)
    matrix.flags.writeable = False
    return matrix


def _upsample(image: np.ndarray, factor: int) -> np.ndarray:
    """``uint8 [3, h, w]`` -> ``uint8 [3, k h, k w]``, bilinear (half-pixel centres), rounded half to even.

    Equal, bit for bit, to ``F.interpolate(scale_factor=k, mode="bilinear", align_corners=False)``
    on the float image followed by ``round()``: for a power-of-two ``k`` every weight is a multiple
    of ``1 / (2k)``, so torch's float32 arithmetic is exact, and so is this one: two float32 matrix
    products with integer weights (:func:`_interpolation_matrix`) whose sums stay below ``2^24``,
    then one exact division by ``4 k^2``. Other factors (not a power of two, or above 64) use
    torch's kernel itself.
    """
    if factor & (factor - 1) or factor > 64:
        tensor = torch.from_numpy(image).float().unsqueeze(0)
        scaled = F.interpolate(tensor, scale_factor=factor, mode="bilinear", align_corners=False)
        return scaled.squeeze(0).round().clamp(0, 255).to(torch.uint8).numpy()
    _, height, width = image.shape
    across = image.astype(np.float32) @ _interpolation_matrix(width, factor).T  # [3, h, k w]
    full = _interpolation_matrix(height, factor) @ across  # [3, k h, k w], 4 k^2 times the result
    full *= np.float32(1 / (4 * factor * factor))
    return np.rint(full, out=full).astype(np.uint8)


def _upsampled_background(tiles: torch.Tensor, factor: int) -> torch.Tensor:
    """What a record's background decodes to, for a batch of patch grids.

    :param tiles: uint8 ``[B, rows, cols, 3, P, P]``, every patch of the images.
    :param factor: ``k``, the pooling factor per side (dividing ``P``).
    :return: uint8 ``[B, rows, cols, 3, P, P]``: each patch average-pooled ``k x`` per side (as
        :func:`_pool_patches`), the pooled image upsampled ``k x`` (bilinear, half-pixel centres,
        rounded, as :func:`_upsample`), cut back into patches.
    """
    batch, rows, cols, channels, patch, _ = tiles.shape
    low = patch // factor
    blocks = tiles.reshape(batch, rows, cols, channels, low, factor, low, factor).float()
    pooled = (blocks.sum(dim=(5, 7)) / (factor * factor)).round()  # [B, r, c, 3, P/k, P/k]; the sums are exact
    image = pooled.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, rows * low, cols * low)
    scaled = F.interpolate(image, scale_factor=factor, mode="bilinear", align_corners=False).round().clamp(0, 255)
    full = scaled.to(torch.uint8).reshape(batch, channels, rows, patch, cols, patch)
    return full.permute(0, 2, 4, 1, 3, 5)


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
