import pytest
import torch

from avalanche_exmask.masking.text_mask import (
    TextMaskRule,
    class_token_mask,
    context_similarity,
    context_token_mask,
    special_token_mask,
)
from avalanche_exmask.models.outputs import MaskingScores

START, END = 49406, 49407
IDS = torch.tensor([START, 11, 12, 13, 14, END, 0, 0])  # 4 content tokens at positions 1..4


def _scores(token_attention, token_features, patch_features):
    n = patch_features.shape[0]
    return MaskingScores(
        embedding=torch.zeros(4),
        patch_attention=torch.ones(n) / n,
        token_attention=token_attention,
        token_features=token_features,
        patch_features=patch_features,
        batch_size=[],
    )


def _context_features():
    """Patches 0, 1 are e0, e1; token 2 is e1, token 3 is e0, token 4 is mostly e2 with a bit of e1."""
    eye = torch.eye(4)
    patches = torch.stack([eye[0], eye[1]])
    tokens = torch.stack([eye[3], eye[2], eye[1], eye[0], eye[2] + 0.1 * eye[1], eye[3], eye[3], eye[3]])
    return tokens, patches


def test_special_tokens_are_start_and_argmax():
    assert special_token_mask(IDS).tolist() == [True, False, False, False, False, True, False, False]
    truncated = torch.tensor([START, 5, 6, END])
    assert special_token_mask(truncated).tolist() == [True, False, False, True]
    assert not special_token_mask(torch.zeros(4, dtype=torch.long)).any()


def test_class_threshold_uses_mean_over_content_tokens():
    attention = torch.tensor([0.9, 0.1, 0.3, 0.2, 0.2, 0.5, 0.0, 0.0])  # content mean 0.2
    assert class_token_mask(IDS, attention).tolist() == [False, False, True, True, True, False, False, False]
    assert class_token_mask(IDS, attention, tau=1.2).tolist() == [False, False, True, False, False, False, False, False]
    ratio = class_token_mask(IDS, attention, kind="ratio", ratio=0.25)
    assert ratio.tolist() == [False, False, True, False, False, False, False, False]


def test_context_tokens_follow_discarded_patches():
    tokens, patches = _context_features()
    keep_patch0 = torch.tensor([True, False])  # patch 1 (e1) discarded
    similarity = context_similarity(tokens, patches, keep_patch0)
    assert similarity[2] == pytest.approx(1.0)  # token 2 = e1, the discarded patch
    assert similarity[3] == pytest.approx(0.0)  # token 3 = e0 matches only the kept patch
    assert similarity[4] == pytest.approx(0.1 / (1.01**0.5))
    mask = context_token_mask(IDS, tokens, patches, keep_patch0, kind="ratio", ratio=0.25)
    assert mask.tolist() == [False, False, True, False, False, False, False, False]
    mask = context_token_mask(IDS, tokens, patches, keep_patch0, kind="threshold", threshold=0.05)
    assert mask.tolist() == [False, False, True, False, True, False, False, False]
    # nothing discarded: no contextual token
    assert not context_token_mask(IDS, tokens, patches, torch.tensor([True, True]), ratio=1.0).any()


def test_rule_modes_keep_specials_never_padding_and_order():
    tokens, patches = _context_features()
    attention = torch.tensor([0.9, 0.5, 0.1, 0.1, 0.1, 0.5, 0.0, 0.0])  # class-related: token 1
    scores = _scores(attention, tokens, patches)
    keep = torch.tensor([True, False])
    args = dict(class_source="attention", class_kind="ratio", class_ratio=0.25, context_kind="ratio", context_ratio=0.25)
    assert TextMaskRule(mode="class", **args)(IDS, scores, keep).nonzero().flatten().tolist() == [0, 1, 5]
    assert TextMaskRule(mode="context", **args)(IDS, scores, keep).nonzero().flatten().tolist() == [0, 2, 5]
    assert TextMaskRule(mode="both", **args)(IDS, scores, keep).nonzero().flatten().tolist() == [0, 1, 2, 5]
    assert TextMaskRule(mode="none")(IDS, scores, keep).tolist() == (IDS != 0).tolist()
    extreme = TextMaskRule(class_source="attention", class_ratio=1.0, context_ratio=1.0, class_kind="ratio")(IDS, scores, keep)
    assert extreme.tolist() == (IDS != 0).tolist()


def test_text_without_content_keeps_start_and_end_only():
    ids = torch.tensor([START, END, 0, 0, 0, 0, 0, 0])
    tokens, patches = _context_features()
    scores = _scores(torch.rand(8), tokens, patches)
    rule = TextMaskRule(class_source="attention", class_kind="ratio", class_ratio=1.0, context_ratio=1.0)
    keep = rule(ids, scores, torch.tensor([True, False]))
    assert keep.tolist() == [True, True, False, False, False, False, False, False]


def test_batched_rule_equals_per_sample():
    g = torch.Generator().manual_seed(1)
    b, t, n, e = 4, 10, 9, 6
    ids = torch.zeros(b, t, dtype=torch.long)
    for i, length in enumerate([0, 3, 5, 8]):
        ids[i, : length + 2] = torch.cat([torch.tensor([START]), torch.randint(1, 999, (length,), generator=g), torch.tensor([END])])
    scores = MaskingScores(
        embedding=torch.zeros(b, 3),
        patch_attention=torch.rand(b, n, generator=g),
        token_attention=torch.rand(b, t, generator=g),
        patch_features=torch.randn(b, n, e, generator=g),
        token_features=torch.randn(b, t, e, generator=g),
        batch_size=[b],
    )
    patch_keep = torch.rand(b, n, generator=g) > 0.5
    patch_keep[0] = True
    rule = TextMaskRule(class_source="attention", context_ratio=0.4)
    batched = rule(ids, scores, patch_keep)
    assert torch.equal(batched, torch.stack([rule(ids[i], scores[i], patch_keep[i]) for i in range(b)]))


def test_rule_validation_names_the_field():
    for kwargs, field in [
        (dict(mode="all"), "mode"),
        (dict(class_kind="top"), "class_kind"),
        (dict(context_kind="x"), "context_kind"),
        (dict(class_tau=-1.0), "class_tau"),
        (dict(class_ratio=1.5), "class_ratio"),
        (dict(context_ratio=-0.1), "context_ratio"),
        (dict(context_threshold=2.0), "context_threshold"),
    ]:
        with pytest.raises(ValueError, match=field):
            TextMaskRule(**kwargs)


def test_class_name_rule_keeps_every_class_word_and_only_them_without_context():
    from avalanche_exmask.masking.text_mask import class_name_token_ids
    from avalanche_exmask.models.factory import get_tokenizer

    tokenizer = get_tokenizer("exmask-tiny")
    names = class_name_token_ids(["red striped triangle", "blue dotted star"], tokenizer)
    assert names[0].tolist() == sorted(set(tokenizer(["red striped triangle"])[0, 1:4].tolist()))
    ids = tokenizer(["a small red circle near a red striped triangle on a blue background"])[0]
    n = int((ids != 0).sum())
    scores = _scores(torch.rand(ids.shape[0]), torch.randn(ids.shape[0], 4), torch.randn(3, 4))
    keep = TextMaskRule(mode="class")(ids, scores, torch.tensor([True, False, False]), names[0])
    words = [tokenizer.decode([int(i)]).strip() for i in ids[keep]]
    # both "red"s, "striped", "triangle", and the start / end tokens; never "blue" (the other class's word)
    assert words[1:-1] == ["red", "red", "striped", "triangle"]
    assert keep[0] and keep[n - 1] and not keep[n:].any()
    with pytest.raises(ValueError, match="class-name token ids"):
        TextMaskRule(mode="class")(ids, scores, torch.tensor([True, False, False]))


def test_codec_needs_class_names_for_the_name_rule():
    from avalanche_exmask.storage.codecs import MaskedCodec

    with pytest.raises(ValueError, match="class_token_ids"):
        MaskedCodec(text_rule=TextMaskRule())
    assert MaskedCodec().text_rule.mode == "none"
    assert MaskedCodec(text_rule=TextMaskRule(), class_token_ids={0: torch.tensor([5])}).text_rule.class_source == "names"


def test_text_embedding_context_keeps_the_most_important_tokens_and_needs_importance():
    scores = _scores(torch.rand(8), torch.randn(8, 4), torch.randn(2, 4))
    scores.token_importance = torch.tensor([0.0, 0.01, 0.3, 0.02, 0.2, 0.0, 0.0, 0.0])
    rule = TextMaskRule(mode="context", context_source="text_embedding", context_ratio=0.5)
    assert rule.needs_token_importance and not TextMaskRule(class_source="attention").needs_token_importance
    assert rule(IDS, scores, torch.tensor([True, False])).nonzero().flatten().tolist() == [0, 2, 4, 5]
    scores.token_importance = None
    with pytest.raises(ValueError, match="token_importance"):
        rule(IDS, scores, torch.tensor([True, False]))
    with pytest.raises(ValueError, match="context_source"):
        TextMaskRule(context_source="image")


def test_token_importance_is_leave_one_out_on_the_text_tower():
    from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
    from avalanche_exmask.models.factory import get_tokenizer

    torch.manual_seed(0)
    model = MultimodalCLIPClassifier(pretrained=None).eval()
    ids = get_tokenizer("exmask-tiny")(["a red striped triangle on a grey background", "a star"])
    importance = model.token_importance(ids, batch_size=3)
    special_or_pad = (ids == 0) | special_token_mask(ids)
    assert not importance[special_or_pad].any() and (importance[~special_or_pad] > 0).all()
    # token 2 of the first text, recomputed by hand
    shortened = torch.cat([ids[0, :2], ids[0, 3:], torch.zeros(1, dtype=torch.long)])
    with torch.no_grad():
        full, without = (torch.nn.functional.normalize(model.clip.encode_text(t[None]), dim=-1) for t in (ids[0], shortened))
    assert float(importance[0, 2]) == pytest.approx(float(1 - (full * without).sum()), abs=1e-5)
