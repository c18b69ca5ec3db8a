"""The batched round trip of current data through a codec equals its records' decoding, bit for bit."""
from __future__ import annotations

import itertools

import pytest
import torch
from storage_fakes import random_sample, random_scores

from avalanche_exmask.data.sample import MultimodalSample, make_sample
from avalanche_exmask.masking.image_mask import ImageMaskRule
from avalanche_exmask.masking.text_mask import TextMaskRule
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.storage.codecs import MaskedCodec
from avalanche_exmask.storage.codecs.base import BatchRoundTrip, pack_tokens, repack_tokens, unpack_tokens
from avalanche_exmask.storage.codecs.cim import CimCodec
from avalanche_exmask.storage.codecs.jpeg import JpegCodec

CLASS_TOKENS = {0: torch.tensor([320]), 1: torch.tensor([321, 5])}


def _batch(n: int, size: int, context: int, n_patches: int, seed: int) -> tuple[MultimodalSample, object, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    samples = [random_sample(size, context, 5, g) for _ in range(n)]
    scores = [random_scores(n_patches, context, g) for _ in range(n)]
    for one in scores:
        one.class_activation = torch.randn(n_patches, generator=g)
    x = MultimodalSample(image=torch.stack([s.image for s in samples]), input_ids=torch.stack([s.input_ids for s in samples]),
                         batch_size=[n])
    return x, torch.stack(scores), torch.randint(0, 2, (n,), generator=g)


def _decoded_records(codec, x, scores, labels) -> tuple[torch.Tensor, torch.Tensor]:
    decoded = [codec.decode(codec.encode(make_sample(x.image[i], x.input_ids[i]), scores[i], int(labels[i])))
               for i in range(len(labels))]
    return torch.stack([d.image for d in decoded]), torch.stack([d.input_ids for d in decoded])


MASKED = [
    MaskedCodec(image_rule=rule, text_rule=text, background_downsample=background, patch_size=8, class_token_ids=CLASS_TOKENS)
    for rule, text, background in itertools.product(
        [ImageMaskRule(), ImageMaskRule(kind="ratio", ratio=0.3)],
        [None, TextMaskRule(mode="class", class_source="names"), TextMaskRule(mode="both", class_source="attention")],
        [None, "patch", 1, 2, 4],
    )
]
CIM = [
    CimCodec(threshold=threshold, downsample=downsample, saliency=saliency, pixels_once=once, patch_size=8)
    for threshold, downsample, saliency, once in itertools.product(
        [0.0, 0.6, 1.0], [2, 3], ["attention", "class_activation"], [False, True]
    )
]


@pytest.mark.parametrize("codec", MASKED + CIM, ids=lambda c: repr(c)[:90])
@pytest.mark.parametrize("size", [64, 40])
def test_the_batched_round_trip_is_the_records_decoding_bit_for_bit(codec, size):
    """Image and ids, for every image rule, text rule and background of the masked codec and every
    CIM setting (its low-resolution image: 20 or 14 px at 40 px, not a power of two)."""
    x, scores, labels = _batch(10, size, 16, (size // 8) ** 2, seed=size)
    images, ids = _decoded_records(codec, x, scores, labels)
    got = codec.round_trip(x, scores, labels)
    assert torch.equal(got.image, images)
    assert torch.equal(got.input_ids, ids)


def test_a_constant_saliency_keeps_the_whole_image_and_the_masked_background_is_not_the_image():
    """The two ends the comparison above could miss: CIM keeps every pixel of a constant map, and
    the masked codec's round trip does change the discarded patches."""
    x, scores, labels = _batch(3, 64, 16, 64, seed=1)
    scores.patch_attention = torch.full_like(scores.patch_attention, 1 / 64)
    assert torch.equal(CimCodec(patch_size=8).round_trip(x, scores, labels).image, x.image)
    x, scores, labels = _batch(3, 64, 16, 64, seed=2)
    codec = MaskedCodec(image_rule=ImageMaskRule(kind="ratio", ratio=0.25), background_downsample=None)
    black = (codec.round_trip(x, scores, labels).image == 0).all(dim=1).float().mean()
    assert 0.70 <= float(black) <= 0.80  # 48 of 64 patches are black (random pixels are rarely all 0)


def test_repacked_tokens_are_the_unpacked_stored_tokens():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 50_000, (6, 12), generator=g)
    ids[:, 9:] = 0
    ids[2, 4] = 0  # padding inside a text is dropped too
    keep = torch.rand(6, 12, generator=g) < 0.5
    for mask in (None, keep):
        expected = torch.stack([unpack_tokens(pack_tokens(ids[i], None if mask is None else mask[i]), 12) for i in range(6)])
        assert torch.equal(repack_tokens(ids, mask), expected)
    with pytest.raises(ValueError, match="uint16"):
        repack_tokens(torch.tensor([[70_000, 3, 0]]))


def test_a_masked_codec_with_jpeg_patches_declines_and_jpeg_has_no_round_trip():
    x, scores, labels = _batch(2, 64, 16, 64, seed=4)
    assert MaskedCodec(patch_jpeg_quality=50).round_trip(x, scores, labels) is None
    assert not isinstance(JpegCodec(), BatchRoundTrip)
    assert isinstance(CimCodec(), BatchRoundTrip) and isinstance(MaskedCodec(), BatchRoundTrip)
    with pytest.raises(ValueError, match=r"uint8 images \[B, 3, H, W\]"):
        MaskedCodec().round_trip(MultimodalSample(image=x.image.float(), input_ids=x.input_ids, batch_size=[2]), scores, labels)


@pytest.mark.parametrize("codec", [MaskedCodec(), MaskedCodec(patch_jpeg_quality=50), CimCodec(saliency="class_activation")],
                         ids=["masked", "masked-jpeg-patches", "cim"])
def test_current_data_through_the_codec_take_the_batched_path_where_there_is_one(monkeypatch, codec):
    """``through_codec`` encodes no record for a codec with a round trip, and its result is the
    records' decoding either way (the model's own scores)."""
    from avalanche_exmask.training.codec_augmentation import _encode_batch, through_codec

    model = MultimodalCLIPClassifier(pretrained=None).eval()
    x, _, labels = _batch(4, 64, model.context_length, 64, seed=5)
    records = _encode_batch(model, codec, x, labels)
    encoded = []
    original_encode = type(codec).encode
    monkeypatch.setattr(type(codec), "encode", lambda self, *a: encoded.append(1) or original_encode(self, *a))
    decoded = through_codec(model, codec, x, labels)
    assert len(encoded) == (4 if codec.name == "masked" and codec.patch_jpeg_quality else 0)
    assert torch.equal(decoded.image, torch.stack([codec.decode(r).image for r in records]))
    assert torch.equal(decoded.input_ids, torch.stack([codec.decode(r).input_ids for r in records]))
