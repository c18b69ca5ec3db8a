"""MultimodalCLIPClassifier: attention capture, SSF, adapters, weights loading, bad input."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import random_batch
from torch import nn

from avalanche_exmask.data.sample import MultimodalSample
from avalanche_exmask.models.attention import AttentionRecorder, attention_rollout, block_attention_module
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.models.factory import create_clip, load_weights


def _randomise_ssf(model: MultimodalCLIPClassifier, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.adapter.trainable_parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))


def test_attention_recorder_matches_need_weights_true(batch):
    """Recomputed attention equals what nn.MultiheadAttention returns with need_weights=True."""
    model = MultimodalCLIPClassifier(pretrained=None)
    _randomise_ssf(model)  # the recomputation must see the SSF-adapted in-projection
    for tower, run in (
        (model.clip.visual.transformer, lambda: model.clip.encode_image(model.normalize_images(batch.image))),
        (model.clip.transformer, lambda: model.clip.encode_text(batch.input_ids)),
    ):
        attn = block_attention_module(tower, -1)
        inputs = {}
        handle = attn.register_forward_pre_hook(
            lambda m, a, kw, inputs=inputs: inputs.update(x=a[0], mask=kw.get("attn_mask")), with_kwargs=True
        )
        with AttentionRecorder(attn) as recorder, torch.no_grad():
            run()
        handle.remove()
        with torch.no_grad():
            _, reference = attn(inputs["x"], inputs["x"], inputs["x"], attn_mask=inputs["mask"],
                                need_weights=True, average_attn_weights=True)
        assert recorder.probabilities.shape == reference.shape
        torch.testing.assert_close(recorder.probabilities, reference, atol=1e-5, rtol=1e-4)


def test_masking_scores_shapes_and_semantics(batch):
    model = MultimodalCLIPClassifier(pretrained=None).eval()
    with torch.no_grad():
        scores = model.masking_scores(batch)
        embedding = model.embed(batch)
    n, t, e = model.num_patches, model.context_length, model.embed_dim
    assert scores.patch_attention.shape == (4, n)
    assert scores.token_attention.shape == (4, t)
    assert scores.patch_features.shape == (4, n, e) and scores.token_features.shape == (4, t, e)
    torch.testing.assert_close(scores.embedding, embedding, atol=1e-5, rtol=1e-5)
    # [CLS] row minus its self-attention: patches get the rest of a softmax row.
    assert torch.all(scores.patch_attention.sum(-1) <= 1.0 + 1e-5)
    # causal text attention: nothing after the pooled (end-of-text) token
    eot = batch.input_ids.argmax(-1)
    for row in range(4):
        assert torch.all(scores.token_attention[row, eot[row] + 1 :] == 0)
        torch.testing.assert_close(scores.token_attention[row].sum(), torch.tensor(1.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(scores.patch_features.norm(dim=-1), torch.ones(4, n), atol=1e-4, rtol=0)


def test_class_activation_is_the_predicted_class_map(batch):
    """CAM: the predicted class's image-part head row dotted with each patch's normalised feature."""
    model = MultimodalCLIPClassifier(pretrained=None, initial_out_features=3).eval()
    with torch.no_grad():
        weight = model.classifier.classifier.weight
        weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)))
        scores = model.masking_scores(batch)
        predicted = model(batch).argmax(-1)
    assert scores.class_activation.shape == (4, model.num_patches)
    weights = model.classifier.classifier.weight[:, : model.embed_dim]
    for row in range(4):
        expected = scores.patch_features[row] @ weights[predicted[row]]
        torch.testing.assert_close(scores.class_activation[row], expected, atol=1e-5, rtol=1e-5)
        other = scores.patch_features[row] @ weights[(predicted[row] + 1) % 3]
        assert not torch.allclose(scores.class_activation[row], other)


def test_ssf_at_init_leaves_outputs_unchanged(batch):
    torch.manual_seed(0)
    plain = create_clip("exmask-tiny", pretrained=None)
    adapted = MultimodalCLIPClassifier(pretrained=None, adapter="ssf")
    adapted.clip.load_state_dict(
        {k.replace("parametrizations.", "").replace(".original", ""): v for k, v in adapted.clip.state_dict().items()},
        strict=False,
    )
    # Copy the plain model's weights into the adapted one through the SSF originals.
    state = plain.state_dict()
    with torch.no_grad():
        for name, module in adapted.clip.named_modules():
            if hasattr(module, "parametrizations"):
                for tensor_name, plist in module.parametrizations.items():
                    key = f"{name}.{tensor_name}"
                    plist.original.copy_(state[key] if key in state else torch.zeros_like(plist.original))
        for name, param in adapted.clip.named_parameters():
            if "parametrizations" not in name and name in state:
                param.copy_(state[name])
    with torch.no_grad():
        image = adapted.normalize_images(batch.image)
        torch.testing.assert_close(adapted.clip.encode_image(image), plain.encode_image(image))
        torch.testing.assert_close(adapted.clip.encode_text(batch.input_ids), plain.encode_text(batch.input_ids))


def test_merged_ssf_gives_same_outputs(batch, tmp_path):
    model = MultimodalCLIPClassifier(pretrained=None).eval()
    _randomise_ssf(model)
    path = tmp_path / "ssf.safetensors"
    model.adapter.save(path)
    with torch.no_grad():
        before = model(batch)
    reloaded = MultimodalCLIPClassifier(pretrained=None).eval()
    reloaded.clip.load_state_dict(model.clip.state_dict())
    reloaded.classifier.load_state_dict(model.classifier.state_dict())
    reloaded.adapter.load(path)
    model.adapter.merge()
    assert not any("parametrizations" in name for name, _ in model.clip.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(model(batch), before, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(reloaded(batch), before, atol=1e-5, rtol=1e-5)
    assert path.stat().st_size < 200_000  # the adapter alone, not the model


@pytest.mark.parametrize("adapter", ["ssf", "lora", "ia3", "none"])
def test_only_adapter_and_head_receive_gradients(adapter, batch):
    model = MultimodalCLIPClassifier(pretrained=None, adapter=adapter)
    _adapt(model, [0, 1])
    loss = nn.functional.cross_entropy(model(batch), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    adapter_params = {id(p) for p in model.adapter.trainable_parameters()}
    head_params = {id(p) for p in model.classifier.parameters()}
    for name, param in model.named_parameters():
        receives = param.grad is not None and bool(param.grad.abs().sum() > 0)
        if id(param) in adapter_params | head_params:
            assert param.requires_grad, name
        else:
            assert not param.requires_grad and param.grad is None, name
        if id(param) in head_params:
            assert receives, name
    if adapter != "none":
        assert model.adapter.num_parameters() > 0
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapter.trainable_parameters())
    report = model.trainable_parameter_report()
    assert report["trainable"] == report["adapter"] + report["head"]


def test_deepcopy_keeps_ssf_linked(batch):
    model = MultimodalCLIPClassifier(pretrained=None).eval()
    with torch.no_grad():
        before = model.embed(batch)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for param in clone.adapter.trainable_parameters():
            param.mul_(0.5)
        torch.testing.assert_close(model.embed(batch), before)
        assert not torch.allclose(clone.embed(batch), before, atol=1e-3)


def _adapt(model: nn.Module, classes: list[int]) -> None:
    """Grow the head as Avalanche does at the start of an experience with these classes."""
    from types import SimpleNamespace

    from avalanche.models.dynamic_modules import avalanche_model_adaptation

    dataset = SimpleNamespace(targets=SimpleNamespace(uniques=set(classes)))
    avalanche_model_adaptation(model, SimpleNamespace(dataset=dataset, classes_in_this_experience=classes))


def test_head_grows_with_avalanche_adaptation():
    model = MultimodalCLIPClassifier(pretrained=None, initial_out_features=2)
    _adapt(model, [0, 1, 2, 3, 4])
    assert model(random_batch(2)).shape == (2, 5)


def test_bad_input_errors(tmp_path, batch):
    with pytest.raises(ValueError, match="unknown open_clip model name 'ViT-Nope'"):
        create_clip("ViT-Nope", pretrained=None)
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        create_clip("exmask-tiny", pretrained=missing)
    wrong = tmp_path / "wrong.pt"
    torch.save({"visual.conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="wrong.pt do not fit model config 'exmask-tiny'"):
        load_weights(create_clip("exmask-tiny", pretrained=None), wrong, model_name="exmask-tiny")
    model = MultimodalCLIPClassifier(pretrained=None)
    with pytest.raises(ValueError, match="image must be uint8"):
        model(MultimodalSample(image=batch.image.float(), input_ids=batch.input_ids, batch_size=[4]))
    with pytest.raises(ValueError, match=r"input_ids must be long \[..., 32\]"):
        model(MultimodalSample(image=batch.image, input_ids=batch.input_ids[:, :10], batch_size=[4]))
    with pytest.raises(TypeError, match="expected a MultimodalSample"):
        model({"image": batch.image})
    with pytest.raises(ValueError, match="unknown adapter 'prefix'"):
        MultimodalCLIPClassifier(pretrained=None, adapter="prefix")


def test_local_weights_roundtrip(tmp_path, batch):
    from safetensors.torch import save_file

    source = create_clip("exmask-tiny", pretrained=None)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.half().contiguous() for k, v in source.state_dict().items()}, str(path))
    model = MultimodalCLIPClassifier(pretrained=path).eval()
    with torch.no_grad():
        expected = source.encode_text(batch.input_ids)
        torch.testing.assert_close(model.clip.encode_text(batch.input_ids), expected, atol=2e-2, rtol=2e-2)


def test_image_attention_sources(batch):
    """'rollout' equals the rollout of every block's recorded attention; an index picks that block."""
    last = MultimodalCLIPClassifier(pretrained=None).eval()
    first = MultimodalCLIPClassifier(pretrained=None, image_attention=0).eval()
    rollout = MultimodalCLIPClassifier(pretrained=None, image_attention="rollout").eval()
    for other in (first, rollout):
        other.load_state_dict(last.state_dict())
    import contextlib

    blocks = last.clip.visual.transformer.resblocks
    with torch.no_grad(), contextlib.ExitStack() as stack:
        recorders = [stack.enter_context(AttentionRecorder(block_attention_module(last.clip.visual.transformer, i)))
                     for i in range(len(blocks))]
        last.clip.encode_image(last.normalize_images(batch.image))
        probabilities = [r.probabilities for r in recorders]
        torch.testing.assert_close(last.masking_scores(batch).patch_attention, probabilities[-1][:, 0, 1:])
        torch.testing.assert_close(first.masking_scores(batch).patch_attention, probabilities[0][:, 0, 1:])
        expected = attention_rollout(probabilities)[:, 0, 1:]
        torch.testing.assert_close(rollout.masking_scores(batch).patch_attention, expected)
    # rollout rows stay distributions
    torch.testing.assert_close(attention_rollout(probabilities).sum(-1), torch.ones(4, 65), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="image_attention"):
        MultimodalCLIPClassifier(pretrained=None, image_attention="mean")
    with pytest.raises(ValueError, match="out of range"):
        MultimodalCLIPClassifier(pretrained=None, image_attention=7)


def test_empty_patches_are_left_out_of_attention(batch):
    """A masked image with skip_empty_patches equals the tower run on its kept patch tokens alone."""
    model = MultimodalCLIPClassifier(pretrained=None, skip_empty_patches=True).eval()
    images = batch.image.clone()
    images[images == 0] = 1  # no accidental empty patches
    keep = torch.zeros(4, 64, dtype=torch.bool)
    keep[:, [0, 9, 18, 27, 36, 63]] = True
    grid = images.view(4, 3, 8, 8, 8, 8)
    for b in range(4):
        for n in range(64):
            if not keep[b, n]:
                grid[b, :, n // 8, :, n % 8, :] = 0
    assert torch.equal(model.empty_patches(images), ~keep)
    masked = MultimodalSample(image=images, input_ids=batch.input_ids, batch_size=[4])
    visual = model.clip.visual
    with torch.no_grad():
        tokens = visual._embeds(model.normalize_images(images))  # [B, 65, D]
        expected = []
        for b in range(4):
            kept_tokens = torch.cat([tokens[b : b + 1, :1], tokens[b : b + 1, 1:][:, keep[b]]], dim=1)
            pooled, _ = visual._pool(visual.transformer(kept_tokens))
            expected.append(pooled @ visual.proj)
        expected = torch.cat(expected)
        got = model.embed(masked)[:, : model.embed_dim]
        torch.testing.assert_close(got, torch.nn.functional.normalize(expected, dim=-1), atol=1e-5, rtol=1e-4)
        scores = model.masking_scores(masked)
        assert torch.all(scores.patch_attention[~keep] == 0)
        black = MultimodalCLIPClassifier(pretrained=None, skip_empty_patches=False).eval()
        black.load_state_dict(model.state_dict())
        assert not torch.allclose(black.embed(masked)[:, : model.embed_dim], got, atol=1e-3)


def test_mask_scores_from_the_pretrained_model_disable_the_adapter_only_for_the_mask(batch):
    adapted = MultimodalCLIPClassifier(pretrained=None).eval()
    pretrained_source = MultimodalCLIPClassifier(pretrained=None, mask_scores_from="pretrained").eval()
    pretrained_source.load_state_dict(adapted.state_dict())
    with torch.no_grad():
        at_init = adapted.masking_scores(batch)  # SSF at init is the identity: the pretrained model
        _randomise_ssf(adapted)
        _randomise_ssf(pretrained_source)
        ssf_before = pretrained_source.adapter.state_dict_of_adapter()
        from_adapted = adapted.masking_scores(batch)
        from_pretrained = pretrained_source.masking_scores(batch)
    torch.testing.assert_close(from_pretrained.patch_attention, at_init.patch_attention, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(from_adapted.patch_attention, at_init.patch_attention, atol=1e-4)
    torch.testing.assert_close(from_pretrained.embedding, from_adapted.embedding)  # herding reads the adapted model
    for key, value in pretrained_source.adapter.state_dict_of_adapter().items():
        assert torch.equal(value, ssf_before[key])  # the adapter is restored
    with pytest.raises(ValueError, match="mask_scores_from"):
        MultimodalCLIPClassifier(pretrained=None, mask_scores_from="frozen")


@pytest.mark.parametrize("adapter", ["lora", "ia3"])
def test_peft_adapters_can_be_disabled(adapter, batch):
    model = MultimodalCLIPClassifier(pretrained=None, adapter=adapter).eval()
    with torch.no_grad():
        before = model.embed(batch)
        for param in model.adapter.trainable_parameters():
            param.add_(0.5)
        changed = model.embed(batch)
        with model.adapter.disabled():
            disabled = model.embed(batch)
        after = model.embed(batch)
    assert not torch.allclose(changed, before, atol=1e-4)
    torch.testing.assert_close(disabled, before, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(after, changed)


@pytest.mark.parametrize("options", [
    {}, {"image_attention": 0}, {"image_attention": "rollout"}, {"mask_scores_from": "pretrained"},
    {"skip_empty_patches": True},
])
def test_patch_attention_alone_equals_the_full_scores_and_skips_the_rest_of_the_pass(batch, options):
    """``patch_attention_scores`` gives masking_scores' patch attention bit for bit (also over empty
    patches and with the pretrained source), without the text tower or the image tower's last MLP."""
    model = MultimodalCLIPClassifier(pretrained=None, **options).eval()
    _randomise_ssf(model)
    images = batch.image.clone()
    images[:2, :, :16, :] = 0  # two rows of empty patches in two samples
    x = MultimodalSample(image=images, input_ids=batch.input_ids, batch_size=[4])
    runs = {"text": 0, "last_mlp": 0}
    model.clip.transformer.register_forward_hook(lambda *_: runs.__setitem__("text", runs["text"] + 1))
    model.clip.visual.transformer.resblocks[-1].mlp.register_forward_hook(
        lambda *_: runs.__setitem__("last_mlp", runs["last_mlp"] + 1))
    with torch.no_grad():
        full = model.masking_scores(x).patch_attention
        assert runs["text"] == 1 and runs["last_mlp"] >= 1
        runs.update(text=0, last_mlp=0)
        alone = model.patch_attention_scores(x.image)
    assert torch.equal(alone, full)
    assert runs == {"text": 0, "last_mlp": 0}
    # the hooks are gone: a whole pass afterwards runs every block again
    with torch.no_grad():
        model.embed(x)
    assert runs["last_mlp"] >= 1
