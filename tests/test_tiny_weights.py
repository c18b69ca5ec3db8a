"""The packaged ``exmask-tiny`` weights, and the script that makes them."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from avalanche_exmask.benchmarks.synthetic import benchmark_classes, generate_synthetic
from avalanche_exmask.models.factory import PACKAGED_WEIGHTS, create_clip, get_tokenizer

WEIGHTS = PACKAGED_WEIGHTS["exmask-tiny"]["synthetic"]
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "pretrain_tiny_clip.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("pretrain_tiny_clip", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _embeddings(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    samples = generate_synthetic(n_per_class=2, classes=benchmark_classes()[:4], seed=0)
    images = torch.from_numpy(samples.images).float() / 255.0
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(get_tokenizer("exmask-tiny")(samples.texts))


def test_packaged_weights_are_small_and_fp16():
    assert WEIGHTS.is_file(), f"missing {WEIGHTS}: run benchmarks/pretrain_tiny_clip.py"
    assert WEIGHTS.stat().st_size <= 10 * 2**20
    from safetensors import safe_open

    with safe_open(str(WEIGHTS), framework="pt") as weights:
        assert {weights.get_slice(k).get_dtype() for k in weights.keys()} == {"F16"}


def test_packaged_weights_load_offline_and_differ_from_random_init():
    model = create_clip("exmask-tiny", "synthetic")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.random.fork_rng():
        torch.manual_seed(0)
        random_model = create_clip("exmask-tiny", None)
    pretrained_image, pretrained_text = _embeddings(model)
    random_image, random_text = _embeddings(random_model)
    assert torch.isfinite(pretrained_image).all() and torch.isfinite(pretrained_text).all()
    assert not torch.allclose(pretrained_image, random_image, atol=1e-3)
    assert not torch.allclose(pretrained_text, random_text, atol=1e-3)


def test_record_beside_the_weights_describes_the_run():
    record = json.loads(WEIGHTS.with_suffix(".json").read_text())
    assert record["model_name"] == "exmask-tiny"
    assert {"seed", "steps", "lr"} <= set(record["arguments"])
    assert record["final_loss"] > 0 and record["train_seconds"] > 0
    assert "attention_prior_weight" in record["arguments"]
    if record["arguments"]["attention_prior_weight"] > 0:
        assert record["final_contrastive_loss"] > 0 and record["final_attention_prior_loss"] >= 0


def test_attention_prior_loss_is_differentiable_and_prefers_the_object():
    script = _load_script()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_clip("exmask-tiny", None)
    samples = generate_synthetic(n_per_class=1, classes=benchmark_classes()[:4], seed=0)
    masks = torch.from_numpy(samples.object_patch_masks)
    capture = script._QueryCapture(model.visual.transformer.resblocks[-1].attn)
    try:
        model.encode_image(script.normalise(torch.from_numpy(samples.images), model))
        attention = capture.cls_attention()
    finally:
        capture.remove()
    assert attention.shape == masks.shape
    assert torch.allclose(attention.sum(1), torch.ones(len(attention)), atol=1e-5)
    loss = script.attention_prior_loss(attention, masks)
    loss.backward()
    assert loss.item() > 0
    assert model.visual.transformer.resblocks[-1].attn.in_proj_weight.grad.abs().sum() > 0
    assert model.visual.transformer.resblocks[0].attn.in_proj_weight.grad.abs().sum() > 0
    # The object distribution itself has zero loss; attention away from the object costs more.
    target = masks.float() / masks.float().sum(1, keepdim=True)
    assert script.attention_prior_loss(target, masks).item() < 1e-6
    away = (~masks).float() / (~masks).float().sum(1, keepdim=True)
    assert script.attention_prior_loss(away, masks).item() > loss.item()


@pytest.mark.timeout(120)
def test_pretraining_script_runs_a_few_steps_deterministically(tmp_path):
    script = _load_script()
    threads = torch.get_num_threads()
    outputs = []
    try:
        with torch.random.fork_rng():
            for run in range(2):
                path = tmp_path / f"run{run}" / "tiny.safetensors"
                record = script.main(["--steps", "2", "--output", str(path), "--skip-evaluation", "--quiet"])
                outputs.append(path)
                assert path.is_file() and path.with_suffix(".json").is_file()
                assert record["arguments"]["steps"] == 2 and len(record["loss_every_50_steps"]) == 1
                # The default run exercises the attention prior; the total is the weighted sum.
                weight = record["arguments"]["attention_prior_weight"]
                assert weight > 0 and record["final_attention_prior_loss"] > 0
                assert record["final_loss"] == pytest.approx(
                    record["final_contrastive_loss"] + weight * record["final_attention_prior_loss"], abs=1e-3
                )
    finally:
        torch.set_num_threads(threads)
    first, second = (create_clip("exmask-tiny", path).state_dict() for path in outputs)
    assert all(torch.equal(first[k], second[k]) for k in first)
