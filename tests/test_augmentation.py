import pytest
import torch
from storage_fakes import END, START, random_ids, random_sample, random_scores

from avalanche_exmask.masking.image_mask import ImageMaskRule
from avalanche_exmask.masking.text_mask import TextMaskRule
from avalanche_exmask.storage.buffer import ByteBudgetBuffer
from avalanche_exmask.storage.codecs import MaskedCodec, RawCodec
from avalanche_exmask.storage.codecs.masked import patchify
from avalanche_exmask.training.augmentation import MultimodalAugmentation, fill_patches, mix_tokens

SIZE, PATCH, CONTEXT = 32, 8, 16
CODEC = MaskedCodec(image_rule=ImageMaskRule(kind="ratio", ratio=0.4), text_rule=TextMaskRule(mode="none"), background_downsample=None)


def _masked_records(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        CODEC.encode(random_sample(SIZE, CONTEXT, 5, g), random_scores((SIZE // PATCH) ** 2, CONTEXT, g), 1) for _ in range(n)
    ]


def test_fill_patches_takes_donor_pixels_where_not_kept():
    image = torch.full((3, 16, 16), 7, dtype=torch.uint8)
    donor = torch.full((3, 16, 16), 9, dtype=torch.uint8)
    keep = torch.tensor([True, False, False, True])
    filled = fill_patches(image, keep, donor, (2, 2))
    assert (filled[:, :8, :8] == 7).all() and (filled[:, 8:, 8:] == 7).all()
    assert (filled[:, :8, 8:] == 9).all() and (filled[:, 8:, :8] == 9).all()


def test_mix_tokens_merges_content_in_order_between_start_and_end():
    ids = torch.tensor([START, 1, 2, 3, END, 0, 0, 0, 0, 0])
    other = torch.tensor([START, 4, 5, END, 0, 0, 0, 0, 0, 0])
    mixed = mix_tokens(ids, other, torch.Generator().manual_seed(0))
    real = mixed[mixed != 0]
    assert real[0] == START and real[-1] == END and len(real) == 7
    body = real[1:-1].tolist()
    assert sorted(body) == [1, 2, 3, 4, 5]
    assert [t for t in body if t <= 3] == [1, 2, 3] and [t for t in body if t > 3] == [4, 5]
    # truncated to the context length, end token kept
    long_ids, long_other = random_ids(6, 8, torch.Generator().manual_seed(1)), random_ids(6, 8, torch.Generator().manual_seed(2))
    truncated = mix_tokens(long_ids, long_other)
    assert truncated.shape == (8,) and truncated[0] == START and truncated[-1] == END and (truncated != 0).all()


def test_probability_zero_is_plain_decode_and_lone_exemplar_is_unchanged():
    records = _masked_records(3)
    augmentation = MultimodalAugmentation(p_fill=0.0, p_token_mix=0.0, p_swap_text=0.0, seed=0)
    out, plain = augmentation(records[0], records, CODEC.decode), CODEC.decode(records[0])
    assert torch.equal(out.image, plain.image) and torch.equal(out.input_ids, plain.input_ids)
    always = MultimodalAugmentation(p_fill=1.0, p_token_mix=1.0, p_swap_text=1.0, seed=0)
    out = always(records[0], records[:1], CODEC.decode)
    assert torch.equal(out.image, plain.image) and torch.equal(out.input_ids, plain.input_ids)


def test_fill_uses_partner_kept_patches_and_swap_takes_partner_text():
    a, b = _masked_records(2)
    augmentation = MultimodalAugmentation(p_fill=1.0, p_swap_text=1.0, seed=0)
    out = augmentation(a, [a, b], CODEC.decode)
    da, db = CODEC.decode(a), CODEC.decode(b)
    patches, pa, pb = (patchify(x.numpy(), PATCH) for x in (out.image, da.image, db.image))
    keep_a, keep_b = a.keep_mask.numpy(), b.keep_mask.numpy()
    assert (patches[keep_a] == pa[keep_a]).all()
    assert (patches[~keep_a & keep_b] == pb[~keep_a & keep_b]).all() and (~keep_a & keep_b).any()
    assert not patches[~keep_a & ~keep_b].any()
    assert torch.equal(out.input_ids, db.input_ids)


def _content(ids):
    return ids[ids != 0][1:-1].tolist()


def test_token_mix_and_seeded_determinism():
    a, b = _masked_records(2)
    outs = [MultimodalAugmentation(p_token_mix=1.0, seed=5)(a, [a, b], CODEC.decode) for _ in range(2)]
    assert torch.equal(outs[0].input_ids, outs[1].input_ids)
    da, db = CODEC.decode(a), CODEC.decode(b)
    body = outs[0].input_ids[(outs[0].input_ids != 0)][1:-1]
    assert sorted(body.tolist()) == sorted(_content(da.input_ids) + _content(db.input_ids))
    assert torch.equal(outs[0].image, da.image)


def test_fill_is_a_no_op_for_unmasked_records_and_validation():
    g = torch.Generator().manual_seed(0)
    raw = [RawCodec().encode(random_sample(SIZE, CONTEXT, 4, g), random_scores(16, CONTEXT, g), 0) for _ in range(2)]
    out = MultimodalAugmentation(p_fill=1.0, seed=0)(raw[0], raw, RawCodec().decode)
    assert torch.equal(out.image, RawCodec().decode(raw[0]).image)
    with pytest.raises(ValueError, match="p_fill"):
        MultimodalAugmentation(p_fill=1.5)


def test_buffer_applies_augmentation_at_decode_time():
    records = _masked_records(4)
    buffer = ByteBudgetBuffer(
        max_size=10**6, codec=CODEC, augmentation=MultimodalAugmentation(p_swap_text=1.0, seed=0)
    )
    buffer._admit({1: records})
    x, y, t = buffer.buffer[0]
    own = CODEC.decode(records[0])
    assert torch.equal(x.image, own.image) and not torch.equal(x.input_ids, own.input_ids)
    assert any(torch.equal(x.input_ids, CODEC.decode(r).input_ids) for r in records[1:])
    assert (y, t) == (1, 0)
