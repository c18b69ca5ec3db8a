import math

import numpy as np
import pytest
import torch
from storage_fakes import random_sample, random_scores

from avalanche_exmask.data.sample import make_sample
from avalanche_exmask.masking.image_mask import ImageMaskRule
from avalanche_exmask.masking.text_mask import TextMaskRule
from avalanche_exmask.storage.budget import budget_from_samples_per_class, plain_exemplar_nbytes
from avalanche_exmask.storage.codecs import (
    CimCodec,
    JpegCodec,
    MaskedCodec,
    MaskedRecord,
    RawCodec,
    Record,
    RecordDecodeError,
)
from avalanche_exmask.storage.codecs.cim import salient_box
from avalanche_exmask.storage.codecs.masked import patchify


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _smooth_image(size):
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    image = torch.stack([x * 255 // size, y * 255 // size, (x + y) * 127 // size])
    return image.to(torch.uint8)


@pytest.mark.parametrize("size,patch,context", [(64, 8, 32), (224, 16, 77)])
def test_masked_roundtrip_keeps_exactly_kept_patches_and_tokens(size, patch, context):
    g = _gen()
    sample = random_sample(size, context, 12, g)
    n = (size // patch) ** 2
    scores = random_scores(n, context, g)
    codec = MaskedCodec(
        image_rule=ImageMaskRule(kind="ratio", ratio=0.3), text_rule=TextMaskRule(class_source="attention"),
        patch_size=patch, background_downsample=None,
    )
    record = codec.encode(sample, scores, label=7)
    keep = ImageMaskRule(kind="ratio", ratio=0.3)(scores.patch_attention)
    token_keep = TextMaskRule(class_source="attention")(sample.input_ids, scores, keep)
    decoded = codec.decode(record)

    assert isinstance(record, MaskedRecord) and record.label == 7
    assert torch.equal(record.keep_mask, keep)
    original, restored = patchify(sample.image.numpy(), patch), patchify(decoded.image.numpy(), patch)
    assert np.array_equal(restored[keep.numpy()], original[keep.numpy()])
    assert not restored[~keep.numpy()].any()  # dropped patches are black
    kept_ids = sample.input_ids[token_keep]
    assert torch.equal(decoded.input_ids[: len(kept_ids)], kept_ids)
    assert not decoded.input_ids[len(kept_ids) :].any() and decoded.input_ids.shape == (context,)
    k, m = int(keep.sum()), len(kept_ids)
    assert record.nbytes == len(record.data) == math.ceil(n / 8) + k * 3 * patch * patch + 2 * m
    assert record.kept_patch_fraction == pytest.approx(k / n)
    assert record.kept_token_fraction == pytest.approx(m / 14)


@pytest.mark.parametrize("size,patch,context", [(64, 8, 32), (224, 16, 77)])
def test_masked_record_at_30_percent_patches_is_much_smaller_than_raw(size, patch, context):
    g = _gen(1)
    sample = random_sample(size, context, context - 2, g)
    scores = random_scores((size // patch) ** 2, context, g)
    masked = MaskedCodec(image_rule=ImageMaskRule(kind="ratio", ratio=0.3)).encode(sample, scores, 0)
    raw = RawCodec().encode(sample, scores, 0)
    assert raw.nbytes / masked.nbytes >= 2.5
    assert raw.nbytes <= plain_exemplar_nbytes(size, context)


def test_masked_infers_and_checks_patch_size():
    g = _gen()
    sample, scores = random_sample(32, 8, 3, g), random_scores(16, 8, g)
    assert MaskedCodec().encode(sample, scores, 0).layout.patch_size == 8
    with pytest.raises(ValueError, match="patch_size"):
        MaskedCodec(patch_size=16).encode(sample, scores, 0)
    with pytest.raises(ValueError, match="patch size"):
        MaskedCodec().encode(sample, random_scores(15, 8, g), 0)


def test_raw_roundtrip_stores_only_real_tokens():
    g = _gen()
    sample, scores = random_sample(32, 16, 5, g), random_scores(16, 16, g)
    record = RawCodec().encode(sample, scores, 3)
    decoded = RawCodec().decode(record)
    assert torch.equal(decoded.image, sample.image) and torch.equal(decoded.input_ids, sample.input_ids)
    assert record.nbytes == 3 * 32 * 32 + 2 * 7
    with pytest.raises(ValueError, match="uint16"):
        RawCodec().encode(make_sample(sample.image, torch.tensor([49406, 70000, 49407])), scores, 0)


def test_jpeg_quality_lowers_bytes_and_decodes_close():
    g = _gen()
    sample = make_sample(_smooth_image(64), random_sample(64, 32, 6, g).input_ids)
    scores = random_scores(64, 32, g)
    high, low = JpegCodec(quality=90).encode(sample, scores, 0), JpegCodec(quality=10).encode(sample, scores, 0)
    assert low.nbytes < high.nbytes < RawCodec().encode(sample, scores, 0).nbytes
    decoded = JpegCodec(quality=90).decode(high)
    assert torch.equal(decoded.input_ids, sample.input_ids)
    assert (decoded.image.float() - sample.image.float()).abs().mean() < 3
    assert high.nbytes == len(high.data) == 2 + 2 * 8 + len(high.data[18:])
    with pytest.raises(ValueError, match="quality"):
        JpegCodec(quality=0)


def test_jpeg_full_chroma_costs_more_and_keeps_colour_closer():
    sample = make_sample(_smooth_image(64), random_sample(64, 32, 6, _gen()).input_ids)
    scores = random_scores(64, 32, _gen())
    half, full = (JpegCodec(quality=97, chroma_subsampling=c) for c in ("4:2:0", "4:4:4"))
    half_record, full_record = half.encode(sample, scores, 0), full.encode(sample, scores, 0)
    assert full_record.nbytes > half_record.nbytes
    error = [(c.decode(r).image.float() - sample.image.float()).abs().mean() for c, r in ((half, half_record), (full, full_record))]
    assert error[1] < error[0]
    default = JpegCodec(quality=50).encode(sample, scores, 0).data
    assert default == JpegCodec(quality=50, chroma_subsampling="4:2:0").encode(sample, scores, 0).data
    with pytest.raises(ValueError, match="chroma_subsampling"):
        JpegCodec(chroma_subsampling="4:1:1")
    with pytest.raises(ValueError, match="quality"):
        JpegCodec(quality=101)


def test_cim_keeps_box_at_full_resolution_and_rest_downsampled():
    g = _gen()
    sample = make_sample(_smooth_image(64), random_sample(64, 32, 6, g).input_ids)
    scores = random_scores(64, 32, g)
    attention = torch.zeros(8, 8)
    attention[2:4, 3:5] = 1.0  # a salient 2x2-patch region
    scores.patch_attention = attention.flatten()
    top, left, bottom, right = salient_box(scores.patch_attention, (8, 8), (64, 64), 0.6)
    assert 12 <= top < 20 and 20 <= left < 28 and 28 < bottom <= 36 and 36 < right <= 44
    record = CimCodec().encode(sample, scores, 0)
    decoded = CimCodec().decode(record)
    assert torch.equal(decoded.image[:, top:bottom, left:right], sample.image[:, top:bottom, left:right])
    assert (decoded.image.float() - sample.image.float()).abs().mean() < 2  # smooth image survives 2x
    assert torch.equal(decoded.input_ids, sample.input_ids)
    box_area = (bottom - top) * (right - left)
    assert record.nbytes == 8 + 3 * 32 * 32 + 3 * box_area + 2 * 8
    assert record.nbytes < RawCodec().encode(sample, scores, 0).nbytes


def test_cim_constant_attention_keeps_whole_image_without_low_resolution_copy():
    g = _gen()
    sample, scores = random_sample(32, 8, 2, g), random_scores(16, 8, g)
    scores.patch_attention = torch.full((16,), 1 / 16)
    record = CimCodec().encode(sample, scores, 0)
    assert record.nbytes == 8 + 3 * 32 * 32 + 2 * 4
    assert torch.equal(CimCodec().decode(record).image, sample.image)


@pytest.mark.parametrize("size,downsample", [(64, 2), (30, 4)])
def test_cim_pixels_once_decodes_as_stored_twice_for_fewer_bytes(size, downsample):
    g = _gen()
    sample = make_sample(_smooth_image(size), random_sample(size, 32, 6, g).input_ids)
    grid = 8 if size % 8 == 0 else 6
    scores = random_scores(grid * grid, 32, g)
    attention = torch.zeros(grid, grid)
    attention[1:5, 2:5] = 1.0
    scores.patch_attention = attention.flatten()
    twice = CimCodec(downsample=downsample).encode(sample, scores, 0)
    once = CimCodec(downsample=downsample, pixels_once=True).encode(sample, scores, 0)
    top, left, bottom, right = salient_box(scores.patch_attention, (grid, grid), (size, size), 0.6)
    # the cells wholly inside the box (adaptive pooling's cell bounds) are the bytes saved
    low = -(-size // downsample)
    starts = [(i * size) // low for i in range(low)]
    ends = [-(-(i + 1) * size // low) for i in range(low)]
    inside_rows = sum(1 for a, b in zip(starts, ends, strict=True) if a >= top and b <= bottom)
    inside_cols = sum(1 for a, b in zip(starts, ends, strict=True) if a >= left and b <= right)
    assert inside_rows * inside_cols > 0
    assert twice.nbytes - once.nbytes == 3 * inside_rows * inside_cols
    assert torch.equal(CimCodec().decode(once).image, CimCodec().decode(twice).image)


def test_cim_class_activation_saliency_reads_the_class_activation_map():
    g = _gen()
    sample = make_sample(_smooth_image(64), random_sample(64, 32, 6, g).input_ids)
    scores = random_scores(64, 32, g)
    cam = torch.zeros(8, 8)
    cam[5:7, 0:2] = 1.0
    scores.class_activation = cam.flatten()
    scores.patch_attention = torch.flip(cam, dims=(0, 1)).flatten()  # salient elsewhere
    record = CimCodec(saliency="class_activation").encode(sample, scores, 0)
    top, left, bottom, right = (int(v) for v in np.frombuffer(record.data, dtype=np.uint16, count=4))
    assert (top, left, bottom, right) == salient_box(scores.class_activation, (8, 8), (64, 64), 0.6)
    assert top >= 36 and right <= 20
    scores.class_activation = None
    with pytest.raises(ValueError, match="class_activation"):
        CimCodec(saliency="class_activation").encode(sample, scores, 0)
    with pytest.raises(ValueError, match="saliency"):
        CimCodec(saliency="cam")


@pytest.mark.parametrize(
    "codec", [MaskedCodec(), RawCodec(), JpegCodec(), CimCodec(), CimCodec(pixels_once=True)], ids=lambda c: repr(c)[:40]
)
def test_corrupt_records_raise_clear_errors(codec):
    g = _gen()
    sample, scores = random_sample(32, 8, 3, g), random_scores(16, 8, g)
    record = codec.encode(sample, scores, 1)
    assert record.nbytes == len(record.data)
    truncated = type(record).__new__(type(record))
    for slot in ("label", "layout", "n_tokens"):
        if hasattr(record, slot):
            setattr(truncated, slot, getattr(record, slot))
    corruptions = [record.data[:5], record.data[:-3]]
    if codec.name == "jpeg":  # JPEG readers ignore trailing bytes; a broken header must fail
        soi = record.data.index(b"\xff\xd8")  # JPEG start-of-image marker
        corruptions.append(record.data[:soi] + b"\x00\x00" + record.data[soi + 2 :])
    else:
        corruptions.append(record.data + b"\x01")
    for data in corruptions:
        truncated.data = data
        with pytest.raises(RecordDecodeError):
            codec.decode(truncated)
    others = [c for c in (MaskedCodec(), RawCodec(), JpegCodec(), CimCodec()) if c.name != codec.name]
    for other in others:
        with pytest.raises(RecordDecodeError):
            other.decode(record)


def test_masked_bitmap_padding_bits_must_be_zero():
    g = _gen()
    sample, scores = random_sample(24, 8, 3, g), random_scores(9, 8, g)  # 9 patches -> 2 bitmap bytes
    record = MaskedCodec().encode(sample, scores, 0)
    record.data = record.data[:1] + bytes([record.data[1] | 0x01]) + record.data[2:]
    with pytest.raises(RecordDecodeError, match="bitmap"):
        MaskedCodec().decode(record)


def test_record_resident_bytes_close_to_accounted():
    record = Record(label=3, data=bytes(4000))
    assert record.nbytes == 4000
    assert 4000 < record.resident_nbytes() < 4000 * 1.05


def test_budget_helpers():
    assert plain_exemplar_nbytes(224, 77) == 224 * 224 * 3 + 154
    assert plain_exemplar_nbytes((64, 32), 32) == 64 * 32 * 3 + 64
    assert budget_from_samples_per_class(5, 10, 64, 32) == 5 * 10 * (64 * 64 * 3 + 64)
    with pytest.raises(ValueError):
        budget_from_samples_per_class(0, 10, 64, 32)


@pytest.mark.parametrize("background,low", [("patch", 1), (4, 2)])
def test_masked_background_stores_discarded_patches_at_low_resolution(background, low):
    """Discarded patches cost 3 (P/k)^2 bytes each and decode close to their pooled colours."""
    g = _gen()
    size, patch, context = 64, 8, 32
    sample = make_sample(_smooth_image(size), random_sample(size, context, 12, g).input_ids)
    scores = random_scores((size // patch) ** 2, context, g)
    rule = ImageMaskRule(kind="ratio", ratio=0.3)
    black = MaskedCodec(image_rule=rule, patch_size=patch, background_downsample=None).encode(sample, scores, label=1)
    codec = MaskedCodec(image_rule=rule, patch_size=patch, background_downsample=background)
    record = codec.encode(sample, scores, label=1)
    keep = record.keep_mask
    dropped = int((~keep).sum())
    assert record.nbytes == black.nbytes + dropped * 3 * low * low
    assert record.kept_token_fraction == pytest.approx(black.kept_token_fraction)
    decoded = codec.decode(record)
    original, restored = patchify(sample.image.numpy(), patch), patchify(decoded.image.numpy(), patch)
    assert np.array_equal(restored[keep.numpy()], original[keep.numpy()])  # kept: exact
    error = np.abs(restored[~keep.numpy()].astype(int) - original[~keep.numpy()].astype(int)).mean()
    assert error < 12  # a smooth gradient is well approximated by a low-resolution background
    black_codec = MaskedCodec(image_rule=rule, patch_size=patch, background_downsample=None)
    assert torch.equal(decoded.input_ids, black_codec.decode(black).input_ids)
    with pytest.raises(ValueError, match="background_downsample"):
        MaskedCodec(patch_size=8, background_downsample=3)


@pytest.mark.parametrize("size,patch,context", [(64, 8, 32), (224, 16, 77)])
def test_masked_jpeg_patches_decode_close_at_their_places_and_cost_their_jpeg(size, patch, context):
    """``patch_jpeg_quality``: the kept patches come back near their pixels (a smooth image), at
    their own places, the discarded ones with about the background raw patches give; the record
    costs the JPEG file + 4 bytes in place of ``3 k P^2``, and token accounting is unchanged."""
    g = _gen(3)
    sample = make_sample(_smooth_image(size), random_sample(size, context, 12, g).input_ids)
    scores = random_scores((size // patch) ** 2, context, g)
    rule = ImageMaskRule(kind="ratio", ratio=0.3)
    raw_codec = MaskedCodec(image_rule=rule, text_rule=TextMaskRule(class_source="attention"), patch_size=patch)
    codec = MaskedCodec(image_rule=rule, text_rule=TextMaskRule(class_source="attention"), patch_size=patch, patch_jpeg_quality=75)
    plain, record = raw_codec.encode(sample, scores, 2), codec.encode(sample, scores, 2)
    keep = record.keep_mask
    assert torch.equal(keep, plain.keep_mask) and record.layout.patch_jpeg_quality == 75
    k, n = int(keep.sum()), keep.numel()
    head = math.ceil(n / 8)
    jpeg_nbytes = int(np.frombuffer(record.data, dtype=np.uint32, count=1, offset=head)[0])
    assert record.data[head + 4 : head + 6] == b"\xff\xd8"  # a JPEG file starts there
    assert record.nbytes == plain.nbytes - k * 3 * patch * patch + 4 + jpeg_nbytes
    assert record.nbytes < plain.nbytes / 2
    assert record.kept_token_fraction == pytest.approx(plain.kept_token_fraction)
    decoded, reference = codec.decode(record), raw_codec.decode(plain)
    original = patchify(sample.image.numpy(), patch).astype(int)
    restored = patchify(decoded.image.numpy(), patch).astype(int)
    kept_error = np.abs(restored[keep.numpy()] - original[keep.numpy()]).mean()
    shuffled_error = np.abs(restored[keep.numpy()] - np.roll(original[keep.numpy()], 1, axis=0)).mean()
    assert kept_error < 8 and shuffled_error > 30  # close to its own patch (mean error 6 / 2.4), not to its neighbour's
    # the background is interpolated from the pooled colours, kept patches' included (JPEG-decoded here)
    assert np.abs(restored[~keep.numpy()] - patchify(reference.image.numpy(), patch)[~keep.numpy()]).mean() < 1
    assert torch.equal(decoded.input_ids, reference.input_ids)


def test_masked_jpeg_patches_corrupt_or_out_of_range_raise():
    g = _gen()
    sample, scores = random_sample(32, 8, 3, g), random_scores(16, 8, g)
    codec = MaskedCodec(patch_size=8, patch_jpeg_quality=50)
    record = codec.encode(sample, scores, 1)
    head = 2
    broken = MaskedRecord(label=1, data=record.data[: head + 4] + b"\x00\x00" + record.data[head + 6 :],
                          layout=record.layout, n_tokens=record.n_tokens)
    with pytest.raises(RecordDecodeError, match="JPEG"):
        codec.decode(broken)
    too_long = MaskedRecord(label=1, data=record.data[:head] + np.uint32(10**6).tobytes() + record.data[head + 4 :],
                            layout=record.layout, n_tokens=record.n_tokens)
    with pytest.raises(RecordDecodeError, match="kept patches"):
        codec.decode(too_long)
    with pytest.raises(ValueError, match="patch_jpeg_quality"):
        MaskedCodec(patch_jpeg_quality=0)
