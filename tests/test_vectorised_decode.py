"""Every codec's decode equals its reference decode bit for bit (the reference, a straightforward
patch-by-patch implementation with torch's own bilinear kernel, lives only here)."""
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from storage_fakes import random_sample, random_scores

from avalanche_exmask.masking.image_mask import ImageMaskRule
from avalanche_exmask.storage.codecs import JpegCodec, MaskedCodec, RawCodec
from avalanche_exmask.storage.codecs.base import unpack_tokens
from avalanche_exmask.storage.codecs.masked import _bitmap_nbytes, _kept_patches_nbytes, _mosaic_grid
from avalanche_exmask.storage.codecs.resampling import block_mean_batch, upsample_array, upsample_batch


def _reference_upsample(image: np.ndarray, factor: int) -> np.ndarray:
    scaled = F.interpolate(torch.from_numpy(image).float()[None], scale_factor=factor, mode="bilinear", align_corners=False)
    return scaled[0].round().clamp(0, 255).to(torch.uint8).numpy()


def _reference_jpeg(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1)


def _reference_masked(record) -> tuple[np.ndarray, torch.Tensor]:
    """Patch by patch: kept patches copied in place, each discarded one cut from the upsampled
    pooled grid (each kept patch pooled on its own, float32 mean)."""
    layout, data = record.layout, record.data
    n, patch, k = layout.n_patches, layout.patch_size, layout.background_downsample
    head = _bitmap_nbytes(n)
    keep = np.unpackbits(np.frombuffer(data, np.uint8, count=head))[:n].astype(bool)
    kept_nbytes = _kept_patches_nbytes(data, layout, int(keep.sum()))
    if layout.patch_jpeg_quality:
        rows, cols = _mosaic_grid(int(keep.sum()))
        mosaic = _reference_jpeg(data[head + 4 : head + kept_nbytes])
        kept = [mosaic[:, (i // cols) * patch : (i // cols + 1) * patch, (i % cols) * patch : (i % cols + 1) * patch]
                for i in range(int(keep.sum()))]
    else:
        kept = list(np.frombuffer(data, np.uint8, count=kept_nbytes, offset=head).reshape(-1, 3, patch, patch))
    image = np.zeros((3, layout.rows * patch, layout.cols * patch), np.uint8)
    background_nbytes = int((~keep).sum()) * layout.background_patch_nbytes
    if background_nbytes:
        low = patch // k
        stored = iter(np.frombuffer(data, np.uint8, count=background_nbytes, offset=head + kept_nbytes).reshape(-1, 3, low, low))
        grid = np.zeros((3, layout.rows * low, layout.cols * low), np.uint8)
        kept_iter = iter(kept)
        for i in range(n):
            r, c = divmod(i, layout.cols)
            if keep[i]:
                blocks = next(kept_iter).reshape(3, low, k, low, k).astype(np.float32)
                pooled = np.rint(blocks.mean(axis=(2, 4))).astype(np.uint8)
            else:
                pooled = next(stored)
            grid[:, r * low : (r + 1) * low, c * low : (c + 1) * low] = pooled
        image = _reference_upsample(grid, k)
    kept_iter = iter(kept)
    for i in np.flatnonzero(keep):
        r, c = divmod(int(i), layout.cols)
        image[:, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] = next(kept_iter)
    ids = unpack_tokens(memoryview(data)[head + kept_nbytes + background_nbytes :], layout.context_length)
    return image, ids


def _smooth(size: int, generator: torch.Generator) -> torch.Tensor:
    low = torch.randint(0, 256, (1, 3, 5, 5), generator=generator).float()
    return F.interpolate(low, size=(size, size), mode="bicubic").round().clamp(0, 255).to(torch.uint8)[0]


@pytest.mark.parametrize("factor", [1, 2, 4, 8, 16, 32, 3, 7])
def test_upsample_equals_torch_bilinear_bit_for_bit(factor):
    g = np.random.default_rng(factor)
    # random pixels, the extremes, and a ramp full of exact halves
    images = [g.integers(0, 256, (3, 5, 7), dtype=np.uint8), np.full((3, 2, 3), 255, np.uint8),
              np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4) * 5]
    for image in images:
        assert np.array_equal(upsample_array(image, factor), _reference_upsample(image, factor))
        batch = torch.from_numpy(np.stack([image, 255 - image]))
        expected = np.stack([_reference_upsample(one, factor) for one in batch.numpy()])
        assert torch.equal(upsample_batch(batch, factor), torch.from_numpy(expected))


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 8])
def test_block_means_equal_the_rounded_float_means(factor):
    images = torch.from_numpy(np.random.default_rng(factor).integers(0, 256, (2, 3, 24, 48), dtype=np.uint8))
    images[0, :, :factor, :factor] = 0  # and a block of the extremes
    images[1, :, :factor, :factor] = 255
    reference = F.avg_pool2d(images.double(), factor).round().to(torch.uint8)  # exact in float64
    assert torch.equal(block_mean_batch(images, factor), reference)


MASKED = {
    "mean colour": dict(),
    "black": dict(background_downsample=None),
    "half resolution": dict(background_downsample=2),
    "jpeg patches": dict(patch_jpeg_quality=60),
    "jpeg patches, quarter resolution": dict(patch_jpeg_quality=40, background_downsample=4),
}


@pytest.mark.parametrize("size,patch,context", [(64, 8, 32), (224, 16, 77)])
@pytest.mark.parametrize("options", MASKED.values(), ids=MASKED.keys())
def test_masked_decode_equals_reference_bit_for_bit(size, patch, context, options):
    g = torch.Generator().manual_seed(size)
    n = (size // patch) ** 2
    for ratio in (0.01, 0.1, 0.37, 1.0):
        codec = MaskedCodec(image_rule=ImageMaskRule(kind="ratio", ratio=ratio), patch_size=patch, **options)
        for image in (_smooth(size, g), random_sample(size, context, 5, g).image):
            sample = random_sample(size, context, 9, g)
            sample.image = image
            record = codec.encode(sample, random_scores(n, context, g), 3)
            decoded = codec.decode(record)
            image, ids = _reference_masked(record)
            assert np.array_equal(decoded.image.numpy(), image) and torch.equal(decoded.input_ids, ids)


@pytest.mark.parametrize("size", [64, 224])
def test_raw_and_jpeg_decode_equal_reference_bit_for_bit(size):
    g = torch.Generator().manual_seed(1)
    sample = random_sample(size, 32, 7, g)
    sample.image = _smooth(size, g)
    raw = RawCodec().encode(sample, None, 0)
    assert torch.equal(RawCodec().decode(raw).image, sample.image)
    jpeg = JpegCodec(quality=70).encode(sample, None, 0)
    tokens_end = 2 + 2 * int(np.frombuffer(jpeg.data, np.uint16, count=1)[0])
    assert np.array_equal(JpegCodec().decode(jpeg).image.numpy(), _reference_jpeg(jpeg.data[tokens_end:]))
