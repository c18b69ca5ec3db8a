"""L2P, DualPrompt and EASE on the frozen multimodal CLIP: they train, only their own parameters
move, selection needs no task id, checkpoints round-trip, and their configs are validated."""
from __future__ import annotations

import pytest
import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin
from conftest import random_batch

from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal
from avalanche_exmask.checkpoint import load_strategy_checkpoint, save_strategy_checkpoint
from avalanche_exmask.config import ConfigError, expand_runs
from avalanche_exmask.models.attention import block_attention_module
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.models.dualprompt import DualPromptCLIP
from avalanche_exmask.models.ease import COMPLETED, EASECLIP, FROM_DATA
from avalanche_exmask.models.l2p import L2PCLIP
from avalanche_exmask.models.prompt_injection import attention_prefixes, prompt_tokens, widen_attention_mask
from avalanche_exmask.models.towers import pooled_features, towers_of
from avalanche_exmask.training.prompting import DualPromptStrategy, EASEStrategy, LearningToPromptCLIP

METHODS = ("l2p", "dualprompt", "ease")


@pytest.fixture(scope="module")
def benchmark():
    return synthetic_multimodal(n_classes=4, n_experiences=2, train_per_class=6, test_per_class=4, seed=1)


def _strategy(method: str, seed: int = 0):
    """A fresh strategy of ``method`` on the shipped tiny CLIP (frozen, no adapter)."""
    torch.manual_seed(seed)
    backbone = MultimodalCLIPClassifier(adapter="none")
    if method == "l2p":
        model, cls = L2PCLIP(backbone, pool_size=4, prompt_length=2, top_k=2), LearningToPromptCLIP
    elif method == "dualprompt":
        model, cls = DualPromptCLIP(backbone, n_tasks=3), DualPromptStrategy
    else:
        model, cls = EASECLIP(backbone, n_tasks=2, n_classes=4, bottleneck=4), EASEStrategy
    return cls(
        model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0), train_mb_size=8, train_epochs=1,
        eval_mb_size=16, evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
    )


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _moved(before: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, int]:
    """``{parameter name: elements that changed}`` (head parameters compared on their common rows)."""
    moved = {}
    for name, parameter in model.named_parameters():
        old, new = before[name], parameter.detach()
        rows = min(old.shape[0], new.shape[0]) if old.ndim else None
        changed = (old[:rows] != new[:rows]) if rows is not None else (old != new)
        if bool(changed.any()):
            moved[name] = int(changed.sum())
    return moved


OWN_PARAMETERS = {
    "l2p": ("pools.",),
    "dualprompt": ("g_prompts.", "e_prompts.", "keys."),
    "ease": ("adapters.",),
}


@pytest.fixture(scope="module")
def trained(benchmark, tmp_path_factory):
    """Per method (trained on first use, then cached): its strategy after two experiences, the
    parameters at the start and after the first experience, and a checkpoint written after the first."""
    runs = {}

    def run(method: str) -> dict:
        if method not in runs:
            strategy = _strategy(method)
            initial = _snapshot(strategy.model)
            strategy.train(benchmark.train_stream[0])
            after_first = _snapshot(strategy.model)
            moved_first = _moved(initial, strategy.model)
            path = tmp_path_factory.mktemp(method) / "after-first.ckpt.safetensors"
            save_strategy_checkpoint(path, strategy)
            strategy.train(benchmark.train_stream[1])
            runs[method] = {"strategy": strategy, "moved_first": moved_first, "after_first": after_first, "checkpoint": path}
        return runs[method]

    return run


@pytest.mark.parametrize("method", METHODS)
def test_trains_two_experiences_moving_only_its_own_parameters(method, benchmark, trained):
    run = trained(method)
    model, moved = run["strategy"].model, run["moved_first"]
    own = OWN_PARAMETERS[method] + ("backbone.classifier.",)
    assert moved and all(name.startswith(own) for name in moved), sorted(moved)
    assert not any(name.startswith("backbone.clip.") for name in moved)
    assert any(name.startswith(OWN_PARAMETERS[method]) for name in moved)  # not the head alone

    after_first = run["after_first"]
    moved = _moved(after_first, model)
    assert all(name.startswith(own) for name in moved), sorted(moved)
    # The head rows of the first experience's classes get no gradient (masked logits, fresh state).
    old_classes = sorted(benchmark.train_stream[0].classes_in_this_experience)
    weight = model.backbone.classifier.classifier.weight
    assert torch.equal(weight[old_classes], after_first["backbone.classifier.classifier.weight"][old_classes])
    if method == "dualprompt":  # experience 1 trains E-prompt 1 only; the unused third stays put
        for name in ("e_prompts.image", "e_prompts.text", "keys.joint"):
            now, before = dict(model.named_parameters())[name], after_first[name]
            assert torch.equal(now[0], before[0]) and not torch.equal(now[1], before[1]) and torch.equal(now[2], before[2])
    if method == "ease":  # experience 1 trains adapter set 1 only
        assert moved and not any(name.startswith("adapters.0.") for name in moved)
        assert any(name.startswith("adapters.1.") for name in moved)
    # What moved in one experience is at most what the model reports as trainable.
    assert 0 < sum(moved.values()) <= model.trainable_parameter_report()["trainable"]
    accuracy = run["strategy"].eval(benchmark.test_stream)["Top1_Acc_Stream/eval_phase/test_stream"]
    assert accuracy > 0.25  # above chance over 4 classes (shipped CLIP weights)


@pytest.mark.parametrize("method", METHODS)
def test_checkpoint_round_trip_resumes_exactly(method, benchmark, trained):
    run = trained(method)
    resumed = _strategy(method, seed=7)  # other initial weights: everything must come from the file
    load_strategy_checkpoint(run["checkpoint"], resumed)
    resumed.train(benchmark.train_stream[1])
    saved = run["strategy"]
    for (name, expected), (_, actual) in zip(saved.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        torch.testing.assert_close(actual, expected, msg=lambda m, name=name: f"{name}: {m}")
    x = random_batch(3)
    saved.model.eval(), resumed.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(resumed.model(x), saved.model(x))


def test_l2p_chooses_prompts_by_key_similarity_without_task_id():
    torch.manual_seed(0)
    model = L2PCLIP(MultimodalCLIPClassifier(adapter="none"), towers=("image",), pool_size=4, prompt_length=2, top_k=1).eval()
    model.backbone.classifier.active_units.fill_(1)  # real logits from the untrained head
    x = random_batch(4)
    queries, _ = pooled_features(model.backbone, x)
    with torch.no_grad():
        model.pools["image"].prompt_key.copy_(torch.roll(queries["image"], 1, dims=0))  # sample i matches key i + 1
        output = model.forward_prompted(x)
        assert output.selected["image"].flatten().tolist() == [1, 2, 3, 0]
        assert float(output.key_similarity) == pytest.approx(1.0, abs=1e-4)  # mean cosine of a perfect match
        # The prompted logits are those of running the tower with the chosen prompts.
        tower = towers_of(model.backbone.clip)["image"]
        with prompt_tokens(tower.transformer, model.pools["image"].prompt[[1, 2, 3, 0]], tower.prompt_position):
            expected = model.backbone(x)
        torch.testing.assert_close(output.logits, expected)
        assert not torch.allclose(output.logits, model.backbone(x))


@pytest.mark.parametrize("selection", ["joint", "per_tower"])
def test_dualprompt_chooses_the_expert_by_key_without_task_id(selection):
    torch.manual_seed(0)
    model = DualPromptCLIP(MultimodalCLIPClassifier(adapter="none"), n_tasks=3, selection=selection).eval()
    model.backbone.classifier.active_units.fill_(1)  # real logits from the untrained head
    model.start_task(1)  # experiences 0 and 1 seen; E-prompt 2 is not a candidate
    x = random_batch(4)
    queries, fused = pooled_features(model.backbone, x)
    queries = {"joint": fused, **queries}
    with torch.no_grad():
        for name, keys in model.keys.items():
            keys[0], keys[1], keys[2] = queries[name][0], queries[name][1], queries[name][2]
        output = model.forward_prompted(x)
        for index in output.selected.values():  # samples 0 and 1 match keys 0 and 1; key 2 is unseen
            assert index.flatten()[:2].tolist() == [0, 1] and 2 not in index.flatten().tolist()
        chosen = next(iter(output.selected.values())).flatten()
        for row in range(2):  # rows where every tower chose the same experience
            alone = model.forward_prompted(x[row : row + 1], task=int(chosen[row])).logits
            torch.testing.assert_close(output.logits[row : row + 1], alone, rtol=1e-4, atol=1e-5)


def test_ease_prototypes_completion_and_scores_need_no_task_id(benchmark, trained):
    model = trained("ease")["strategy"].model.eval()
    first = sorted(benchmark.train_stream[0].classes_in_this_experience)
    second = sorted(benchmark.train_stream[1].classes_in_this_experience)
    assert (model.prototype_source[first, 0] == FROM_DATA).all() and (model.prototype_source[first, 1] == COMPLETED).all()
    assert (model.prototype_source[second] == FROM_DATA).all()
    # A completed prototype is a convex combination of the new classes' prototypes in that subspace.
    new = model.prototypes[second, 1]
    completed = model.prototypes[first[0], 1]
    weights = torch.linalg.lstsq(new.T, completed[:, None]).solution.flatten()
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-4) and bool((weights > -1e-4).all())
    # Scores: the mean over both subspaces of the cosine to each class's prototype.
    x = torch.stack([benchmark.test_stream[0].dataset[0][0], benchmark.test_stream[1].dataset[0][0]])
    with torch.no_grad():
        scores = model(x)
        expected = sum(
            torch.nn.functional.normalize(model.embed_in(x, task), dim=-1)
            @ torch.nn.functional.normalize(model.prototypes[:4, task], dim=-1).T
            for task in (0, 1)
        ) / 2
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-5)


def test_widened_masks_keep_causality_and_expose_the_prompts():
    causal = torch.full((3, 3), float("-inf")).triu(1)
    widened = widen_attention_mask(causal, 2, 0, rows=True)
    visible = widened == 0
    assert visible[:2].tolist() == [[True, True, False, False, False]] * 2  # prompts see prompts only
    assert visible[2:, :2].all() and torch.equal(widened[2:, 2:], causal)  # tokens see prompts + causal past
    prefixed = widen_attention_mask(causal.bool(), 2, 0, rows=False)
    assert prefixed.shape == (3, 5) and not prefixed[:, :2].any() and torch.equal(prefixed[:, 2:], causal.bool())


def test_prefixes_duplicating_the_keys_leave_attention_unchanged_and_others_change_it():
    torch.manual_seed(0)
    clip = MultimodalCLIPClassifier(adapter="none").clip
    attn = block_attention_module(clip.visual.transformer, 0)
    x = torch.randn(2, 5, attn.embed_dim)
    plain = attn(x, x, x, need_weights=False)[0]
    with attention_prefixes(attn, x, x):  # every key/value twice: the same softmax-weighted mean
        same = attn(x, x, x, need_weights=False)[0]
    with attention_prefixes(attn, torch.randn(2, 3, attn.embed_dim), torch.randn(2, 3, attn.embed_dim)):
        other = attn(x, x, x, need_weights=False)[0]
    torch.testing.assert_close(same, plain, rtol=1e-5, atol=1e-6)
    assert same.shape == plain.shape == other.shape and not torch.allclose(other, plain)


def test_text_prompts_keep_the_text_tower_causal():
    torch.manual_seed(0)
    model = MultimodalCLIPClassifier(adapter="none")
    tower = towers_of(model.clip)["text"]
    x = random_batch(1)
    changed = x.input_ids.clone()
    changed[0, 5] = 1234  # a later token
    prompts = torch.randn(1, 3, tower.width)
    outputs = []
    with prompt_tokens(tower.transformer, prompts, tower.prompt_position):
        for ids in (x.input_ids, changed):
            captured = {}
            handle = tower.final_norm.register_forward_hook(lambda _m, _i, out, captured=captured: captured.setdefault("tokens", out))
            model.clip.encode_text(ids)
            handle.remove()
            outputs.append(captured["tokens"])
    assert outputs[0].shape[1] == x.input_ids.shape[1]  # prompts removed from the output
    torch.testing.assert_close(outputs[0][:, :5], outputs[1][:, :5])  # earlier tokens do not see later ones
    with torch.no_grad():
        plain = tower.transformer(model.clip.token_embedding(x.input_ids) + model.clip.positional_embedding, attn_mask=model.clip.attn_mask)
    assert not torch.allclose(outputs[0][:, :5], model.clip.ln_final(plain)[:, :5])  # the prompts are seen


def test_configs_fill_the_frozen_backbone_and_name_bad_fields():
    base = {"benchmark": {"n_experiences": 2}, "logging": {"progress": False}}
    runs = expand_runs({**base, "methods": ["l2p", "raw"], "method_options": {"l2p": {"pool_size": 6, "top_k": 2}}})
    l2p, raw = runs
    assert l2p.model.adapter == "none" and raw.model.adapter == "ssf"
    assert l2p.method_options["l2p"]["pool_size"] == 6 and l2p.method_options["l2p"]["towers"] == "both"
    assert raw.method_options == {}
    assert l2p.method_options["l2p"]["lr"] == 0.03  # Avalanche's LearningToPrompt default, not train.lr
    with pytest.raises(ConfigError, match=r"model\.adapter must be 'none' for method 'ease'"):
        expand_runs({**base, "method": "ease", "model": {"adapter": "lora"}})
    with pytest.raises(ConfigError, match=r"method_options\.dualprompt\.selection must be one of"):
        expand_runs({**base, "method": "dualprompt", "method_options": {"dualprompt": {"selection": "both"}}})
    with pytest.raises(ConfigError, match=r"method_options\.l2p: top_k must be <= pool_size"):
        expand_runs({**base, "method": "l2p", "method_options": {"l2p": {"pool_size": 2, "top_k": 3}}})
    with pytest.raises(ConfigError, match=r"method_options\.ease applies to none of the methods \['l2p'\]"):
        expand_runs({**base, "method": "l2p", "method_options": {"ease": {}}})
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['method_options\.ease\.rank'\]"):
        expand_runs({**base, "method": "ease", "method_options": {"ease": {"rank": 4}}})


def test_runner_builds_the_registered_methods_without_replay():
    from avalanche_exmask.experiment import run_experiment

    [config] = expand_runs(
        {
            "method": "dualprompt", "benchmark": {"n_experiences": 2, "args": {"n_classes": 4, "train_per_class": 4, "test_per_class": 2}},
            "train": {"epochs": 1, "batch_size": 8}, "logging": {"progress": False}, "method_options": {"dualprompt": {"towers": "image"}},
        }
    )
    results = run_experiment(config)
    # E-prompts (2 experiences x 2 blocks x key/value x 5 x width 128), G-prompt (1 block), joint keys (fused width 256)
    assert results["method_parameters"]["prompts"] == 2 * 2 * 2 * 5 * 128 + 1 * 2 * 5 * 128 + 2 * 256
    assert "trainable_parameters" in results["figures"] and "buffer" not in results
    assert len(results["accuracy_matrix"]) == 2


def test_the_runner_builds_the_optimizer_at_the_method_learning_rate():
    """A method's own ``lr`` reaches the optimizer the runner builds (no builder rewrites it after)."""
    from avalanche_exmask.experiment_build import build_benchmark, build_context
    from avalanche_exmask.registry import METHODS

    base = {"benchmark": {"n_experiences": 2, "args": {"n_classes": 4, "train_per_class": 2, "test_per_class": 1}},
            "model": {"pretrained": None}, "train": {"lr": 0.005}, "logging": {"progress": False}}
    l2p, ease, raw = expand_runs({**base, "methods": ["l2p", "ease", "raw"]})
    assert METHODS.get("l2p").optimizer_lr(l2p) == 0.03
    assert METHODS.get("ease").optimizer_lr(ease) == 0.005 and METHODS.get("raw").optimizer_lr(raw) == 0.005
    context = build_context(l2p, METHODS.get("l2p"), build_benchmark(l2p))
    assert [group["lr"] for group in context.optimizer.param_groups] == [0.03]
    METHODS.get("l2p").build(context)
    assert [group["lr"] for group in context.optimizer.param_groups] == [0.03]
