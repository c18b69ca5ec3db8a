"""The whole pipeline at the real geometry: open_clip ViT-B-16 (random weights), 224 px images,
196 patches, 77 tokens, on the CPU: SSF parameter count, attention capture and masking scores,
every codec, the byte budget at 5 samples/class, one buffer update and one training step with
token-dropping replay. A ViT-B/16 forward + backward of one 224 px image costs about 118 GFLOPs,
so the test is kept to one scoring pass over two images and one training step over one current
and one replayed image (about 25 s of CPU time); throughput figures are in benchmarks/scale.py."""
from __future__ import annotations

from types import SimpleNamespace

import open_clip
import pytest
import torch

from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal
from avalanche_exmask.masking.image_mask import ImageMaskRule
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.registry import CODECS
from avalanche_exmask.storage.budget import budget_from_samples_per_class, plain_exemplar_nbytes
from avalanche_exmask.storage.buffer import ByteBudgetBuffer
from avalanche_exmask.storage.codecs import MaskedCodec

KEEP_RATIO = 0.25  # 49 of 196 patches: replayed exemplars cost about a quarter of the image tower


@pytest.fixture(scope="module")
def vit_b16() -> MultimodalCLIPClassifier:
    torch.manual_seed(0)
    return MultimodalCLIPClassifier("ViT-B-16", pretrained=None, skip_empty_patches="drop", initial_out_features=2)


@pytest.fixture(scope="module")
def samples():
    """Two 224 px synthetic samples (an object on a background, a caption), one per class."""
    benchmark = synthetic_multimodal(n_classes=2, n_experiences=1, train_per_class=1, test_per_class=1,
                                     model_name="ViT-B-16", seed=0)
    dataset = benchmark.train_stream[0].dataset
    return [dataset[i] for i in range(len(dataset))], benchmark


def test_vit_b16_geometry_and_ssf_parameter_count(vit_b16):
    assert (vit_b16.image_size, vit_b16.patch_size, vit_b16.num_patches, vit_b16.context_length) == (224, 16, 196, 77)
    config = open_clip.get_model_config("ViT-B-16")
    vision, text = config["vision_cfg"]["width"], config["text_cfg"]["width"]
    layers_v, layers_t = config["vision_cfg"]["layers"], config["text_cfg"]["layers"]
    # SSF channels per block: fused qkv (3w) + out_proj (w) + MLP (4w + w) + two LayerNorms (2w) = 11w;
    # vision also conv1, ln_pre, ln_post (3w); text ln_final (w); gamma and beta for each channel
    expected = 2 * (3 * vision + 11 * vision * layers_v + text + 11 * text * layers_t)
    report = vit_b16.trainable_parameter_report()
    assert report["adapter"] == expected == 343_552
    assert report["head"] == 2 * (2 * 512) + 2  # concat fusion: 1024 features, 2 classes
    assert report["total"] > 149_000_000 and report["trainable"] == report["adapter"] + report["head"]


def test_vit_b16_scores_codecs_budget_buffer_and_a_token_dropping_step(vit_b16, samples):
    items, benchmark = samples
    x = torch.stack([item[0] for item in items])
    labels = torch.tensor([int(item[1]) for item in items])
    # attention capture and masking scores: one eval forward pass
    vit_b16.eval()
    with torch.no_grad():
        scores = vit_b16.masking_scores(x)
    assert scores.patch_attention.shape == (2, 196) and scores.token_attention.shape == (2, 77)
    assert scores.patch_features.shape == (2, 196, 512) and scores.embedding.shape == (2, 1024)
    assert torch.all(scores.patch_attention > 0) and torch.all(scores.patch_attention.sum(-1) < 1)

    # every codec at 224 px, against the byte budget of 5 samples per class
    plain = plain_exemplar_nbytes(224, 77)
    assert plain == 3 * 224 * 224 + 2 * 77 == 150_682
    share = budget_from_samples_per_class(5, 2, 224, 77) // 2
    n_tokens = int((x.input_ids[0] != 0).sum())
    sizes = {}
    for name in CODECS.names():
        options = {"patch_size": 16} if "patch_size" in CODECS.get(name).codec.__dataclass_fields__ else {}
        codec = CODECS.get(name)(**options)
        record = codec.encode(x[0], scores[0], int(labels[0]))
        decoded = codec.decode(record)
        assert decoded.image.shape == (3, 224, 224) and decoded.image.dtype == torch.uint8
        assert torch.equal(decoded.input_ids, x.input_ids[0])  # no text mask by default
        sizes[name] = record.nbytes
    assert sizes["raw"] == 3 * 224 * 224 + 2 * n_tokens and share // sizes["raw"] == 5
    kept = int(ImageMaskRule()(scores.patch_attention[0]).sum())
    assert sizes["masked"] == 25 + kept * 3 * 16 * 16 + (196 - kept) * 3 + 2 * n_tokens  # bitmap, patches, mean colours, ids
    for name in ("masked", "jpeg"):
        assert sizes[name] < sizes["raw"] and share // sizes[name] > 5, (name, sizes)
    # CIM's box spans the random model's diffuse attention (the whole image); on an attention map
    # concentrated on a 4 x 4-patch object, the box is small and the rest is stored at 1/2 per side
    peaked = scores[0].clone()
    grid = torch.zeros(14, 14)
    grid[5:9, 5:9] = 1.0
    peaked.patch_attention = grid.flatten() / grid.sum()
    cim = CODECS.get("cim")(patch_size=16).encode(x[0], peaked, int(labels[0]))
    assert 3 * 112 * 112 < cim.nbytes < 3 * 112 * 112 + 3 * 64 * 64 + 2 * n_tokens + 64

    # one buffer update: masked exemplars with black discarded patches (token-dropping replay)
    codec = MaskedCodec(image_rule=ImageMaskRule(kind="ratio", ratio=KEEP_RATIO), patch_size=16, background_downsample=None)

    def reuse_scores(_model, candidates, *_args, **_kwargs):
        """The scores above for a class's candidates (one per class here), not a second pass."""
        rows = torch.tensor([labels.tolist().index(int(item[1])) for item in candidates])
        return scores[rows], labels[rows]

    buffer = ByteBudgetBuffer(max_size=2 * share, codec=codec, mode="per_class", total_num_classes=2, scorer=reuse_scores)
    experience = benchmark.train_stream[0]
    buffer.update(SimpleNamespace(model=vit_b16, device=torch.device("cpu"), experience=experience))
    stats = buffer.stats()
    assert {label: c.n_exemplars for label, c in stats.classes.items()} == {0: 1, 1: 1}
    record = buffer.records[int(labels[1])][0]
    assert record.kept_patch_fraction == 49 / 196

    # the replayed exemplar's 147 discarded patches are black: the model drops them from its tokens
    # (that this equals the attention-masked forward is tested on the tiny model in
    # test_acceleration.py, and measured at 224 px by benchmarks/scale.py: max abs difference 1e-7)
    replayed = buffer.buffer[int(torch.nonzero(torch.as_tensor(list(buffer.buffer.targets)) == labels[1])[0])][0]
    assert torch.equal(vit_b16.empty_patches(replayed.image[None])[0], ~record.keep_mask)

    # one training step: a current image (197 tokens) and a replayed one (1 + 49 tokens)
    vit_b16.train()
    vit_b16.classifier.adaptation(experience)  # the head's units for classes 0 and 1 (Avalanche does this in train mode)
    trainable = {n: p for n, p in vit_b16.named_parameters() if p.requires_grad}
    frozen_before = vit_b16.clip.visual.transformer.resblocks[5].mlp.c_fc.parametrizations.weight.original.detach().clone()
    before = {n: p.detach().clone() for n, p in trainable.items()}
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-3)
    batch = torch.stack([x[0], replayed])
    loss = torch.nn.functional.cross_entropy(vit_b16(batch), torch.tensor([int(labels[0]), int(labels[1])]))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    changed = [n for n, p in trainable.items() if not torch.equal(p, before[n])]
    assert len(changed) == len(trainable)  # every SSF gamma and beta of both towers, and the head, moved
    assert torch.equal(vit_b16.clip.visual.transformer.resblocks[5].mlp.c_fc.parametrizations.weight.original, frozen_before)
