"""Token-dropping replay, mixed precision, channels-last, torch.compile and the loader settings,
on the tiny model (the same pieces at ViT-B/16 224 px: tests/test_scale_vit_b16.py)."""
from __future__ import annotations

import pytest
import torch
import torch._dynamo
from avalanche.training.plugins import SupervisedPlugin
from conftest import random_batch
from torch.utils.flop_counter import FlopCounterMode

from avalanche_exmask.config import ConfigError, LoaderSection, apply_override, expand_runs
from avalanche_exmask.data.sample import MultimodalSample
from avalanche_exmask.models.acceleration import compile_mlps, use_channels_last
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.training.mixed_precision import MixedPrecisionPlugin


def _with_kept_patches(images: torch.Tensor, kept: list[int], grid: int = 8, patch: int = 8) -> torch.Tensor:
    """Images whose patches beyond ``kept[b]`` random ones are set to 0 (``kept[b] = grid^2``: none)."""
    images = images.clone()
    images[images == 0] = 1  # no accidental empty patch
    blocks = images.view(len(kept), 3, grid, patch, grid, patch)
    generator = torch.Generator().manual_seed(len(kept))
    for b, count in enumerate(kept):
        for n in torch.randperm(grid * grid, generator=generator)[count:].tolist():
            blocks[b, :, n // grid, :, n % grid, :] = 0
    return images


def _pair(mode_a: str, mode_b: str) -> tuple[MultimodalCLIPClassifier, MultimodalCLIPClassifier]:
    torch.manual_seed(0)
    a = MultimodalCLIPClassifier(pretrained=None, skip_empty_patches=mode_a, initial_out_features=3)
    b = MultimodalCLIPClassifier(pretrained=None, skip_empty_patches=mode_b, initial_out_features=3)
    b.load_state_dict(a.state_dict())
    return a, b


def test_dropped_tokens_give_the_attention_masked_forward_and_gradients():
    """Token dropping (fewer tokens) equals the attention mask (all tokens, empty ones unseen):
    same logits and same SSF gradients, on a batch mixing a full image and kept counts 3..40."""
    masked, dropped = _pair("attention_mask", "drop")
    base = random_batch(4)
    images = _with_kept_patches(base.image, [3, 64, 20, 40])
    x = MultimodalSample(image=images, input_ids=base.input_ids, batch_size=[4])
    labels = torch.tensor([0, 1, 2, 0])
    for model in (masked, dropped):
        model.classifier.active_units.fill_(1)  # what Avalanche's adaptation does for seen classes
        model.train()
        torch.nn.functional.cross_entropy(model(x), labels).backward()
    with torch.no_grad():
        torch.testing.assert_close(dropped.eval().embed(x), masked.eval().embed(x), atol=2e-5, rtol=1e-4)
    grads = {name: p.grad for name, p in masked.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert len(grads) > 80
    for name, p in dropped.named_parameters():
        if name in grads:
            torch.testing.assert_close(p.grad, grads[name], atol=1e-5, rtol=1e-3)
    # feeding the black pixels is a different model input
    fed = MultimodalCLIPClassifier(pretrained=None, initial_out_features=3).eval()
    fed.load_state_dict(masked.state_dict())
    with torch.no_grad():
        assert not torch.allclose(fed.embed(x), masked.embed(x), atol=1e-3)


def _image_flops(model: MultimodalCLIPClassifier, images: torch.Tensor) -> int:
    """FLOPs of the image tower; nn.MultiheadAttention's inference fast path is turned off, as
    FlopCounterMode does not count its fused kernel."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.encode_image(images)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops()


def test_dropped_tokens_cut_image_flops_to_about_the_kept_fraction():
    model = MultimodalCLIPClassifier(pretrained=None, skip_empty_patches="drop").eval()
    images = random_batch(4).image
    full = _image_flops(model, _with_kept_patches(images, [64] * 4))
    ratios = {}
    for kept in (8, 16, 32):
        ratios[kept] = _image_flops(model, _with_kept_patches(images, [kept] * 4)) / full
        token_fraction = (1 + kept) / 65
        # linear layers scale with the tokens, attention with their square; the patch embedding
        # (all 64 patches) and the pooling do not shrink
        assert token_fraction * 0.95 < ratios[kept] < token_fraction + 0.06, (kept, ratios[kept])
    assert ratios[8] < ratios[16] < ratios[32] < 0.6
    # a batch costs its longest kept sequence: kept counts [8, 16, 16, 16] cost as [16] x 4
    assert _image_flops(model, _with_kept_patches(images, [8, 16, 16, 16])) == _image_flops(
        model, _with_kept_patches(images, [16] * 4)
    )
    # the attention mask keeps the full cost
    masked = MultimodalCLIPClassifier(pretrained=None, skip_empty_patches="attention_mask").eval()
    assert _image_flops(masked, _with_kept_patches(images, [8] * 4)) >= full


def test_skip_empty_patches_values_are_checked():
    with pytest.raises(ValueError, match="skip_empty_patches"):
        MultimodalCLIPClassifier(pretrained=None, skip_empty_patches="dropped")


class _DtypeProbe:
    def __init__(self, module: torch.nn.Module) -> None:
        self.dtypes: list[torch.dtype] = []
        module.register_forward_hook(lambda _m, _i, out: self.dtypes.append(out.dtype))


class _LossProbe(SupervisedPlugin):
    """Records (logits dtype, loss dtype) before each backward."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[tuple[torch.dtype, torch.dtype]] = []

    def before_backward(self, strategy, **kwargs) -> None:
        self.dtypes.append((strategy.mb_output.dtype, strategy.loss.dtype))


def _strategy(model: torch.nn.Module, plugin: MixedPrecisionPlugin, optimizer: torch.optim.Optimizer):
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

    return Naive(model=model, optimizer=optimizer, train_mb_size=4, train_epochs=1, eval_mb_size=4,
                 plugins=[plugin], evaluator=EvaluationPlugin(loggers=[]))


def _experience(train_per_class: int = 4):
    from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal

    return synthetic_multimodal(n_classes=2, n_experiences=1, train_per_class=train_per_class, test_per_class=2, seed=0)


def test_bf16_autocast_on_cpu_trains_and_evaluates():
    torch.manual_seed(0)
    model = MultimodalCLIPClassifier(pretrained=None)
    probe = _DtypeProbe(model.clip.visual.transformer.resblocks[0].mlp.c_fc)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    plugin = MixedPrecisionPlugin("bf16", "cpu")
    strategy = _strategy(model, plugin, optimizer)
    losses = _LossProbe()
    strategy.plugins.append(losses)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    bench = _experience()
    strategy.train(bench.train_stream[0])
    assert set(probe.dtypes) == {torch.bfloat16}  # inside autocast
    assert losses.dtypes == [(torch.float32, torch.float32)] * 2  # logits and loss in float32
    assert torch.isfinite(strategy.loss)
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert any("ssf" in n or "parametrizations" in n for n in changed) and len(changed) > 10
    probe.dtypes.clear()
    strategy.eval(bench.test_stream)
    assert set(probe.dtypes) == {torch.bfloat16}
    assert not torch.is_autocast_enabled("cpu")  # left after every forward
    model.masking_scores(random_batch(2))  # the scoring pass stays in float32
    assert probe.dtypes[-1] == torch.float32


def test_fp16_scaler_skips_a_step_with_non_finite_gradients():
    class PoisonFirstBackward(SupervisedPlugin):
        """Sets one gradient to inf after the first backward (before the scaler's check)."""

        calls = 0

        def after_backward(self, strategy, **kwargs):
            type(self).calls += 1
            if self.calls == 1:
                next(p for p in strategy.model.parameters() if p.grad is not None).grad.fill_(float("inf"))

    torch.manual_seed(0)
    model = MultimodalCLIPClassifier(pretrained=None)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    plugin = MixedPrecisionPlugin("fp16", "cpu")
    strategy = _strategy(model, plugin, optimizer)
    strategy.plugins.insert(0, PoisonFirstBackward())  # its after_backward runs before the scaler's
    scale = plugin.scaler.get_scale()
    bench = _experience(train_per_class=2)  # 4 samples: one step of batch 4
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    strategy.train(bench.train_stream[0])
    assert plugin.skipped_steps == 1 and plugin.scaler.get_scale() == scale / 2
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)
    strategy.train(bench.train_stream[0])  # a finite step goes through
    assert plugin.skipped_steps == 1
    assert not all(torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="precision"):
        MixedPrecisionPlugin("fp8")


def test_channels_last_and_compiled_mlps_keep_the_outputs():
    torch.manual_seed(0)
    model = MultimodalCLIPClassifier(pretrained=None).eval()
    x = random_batch(2)
    with torch.no_grad():
        reference = model.embed(x)
    assert use_channels_last(model) == 1
    assert model.clip.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert compile_mlps(model.clip.visual, backend="eager") == 4  # every block of the tower
    torch._dynamo.utils.counters.clear()
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), reference, atol=1e-5, rtol=1e-4)
    model.train()
    model.embed(x).sum().backward()  # SSF parametrizations train through the compiled MLPs
    ssf = [p for n, p in model.named_parameters() if "visual__" in n and "mlp__c_fc" in n and p.requires_grad]
    assert len(ssf) == 2 * 4  # gamma and beta of every block's first MLP layer
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ssf)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2 * 4  # no MLP fell back to eager


def test_loader_settings_are_validated_and_passed_to_the_templates():
    section = LoaderSection(num_workers=2, persistent_workers=True)
    assert section.template_kwargs() == {"num_workers": 2, "pin_memory": None, "persistent_workers": True}
    assert LoaderSection().template_kwargs() == {"num_workers": 0, "pin_memory": None}
    for bad, field in (({"num_workers": -1}, "num_workers"), ({"persistent_workers": True}, "persistent_workers"),
                       ({"pin_memory": "yes"}, "loader.pin_memory"),
                       ({"workers": 2}, "loader.workers")):
        with pytest.raises(ConfigError, match=field):
            expand_runs({"method": "raw", "loader": bad}, source="study.yaml")
    values = {"method": "raw"}
    apply_override(values, "loader.num_workers=3")
    apply_override(values, "accelerator.precision=bf16")
    (run,) = expand_runs(values)
    assert run.loader.num_workers == 3 and run.accelerator.precision == "bf16"
    with pytest.raises(ConfigError, match="accelerator.precision"):
        expand_runs({"method": "raw", "accelerator": {"precision": "fp8"}})
    # token dropping needs masked exemplars with black discarded patches
    with pytest.raises(ConfigError, match="background_downsample"):
        expand_runs({"method": "masking", "model": {"skip_empty_patches": "drop"}}, source="study.yaml")
    (run,) = expand_runs({"method": "masking", "model": {"skip_empty_patches": "drop"},
                          "storage": {"options": {"masked": {"background_downsample": None}}}})
    assert run.model.skip_empty_patches == "drop"


def test_replay_loader_and_buffer_update_use_the_loader_settings():
    """Records decode in the replay loader's workers; the buffer reads candidates in workers and
    stores the same records as without them."""
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

    from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal
    from avalanche_exmask.storage.budget import budget_from_samples_per_class
    from avalanche_exmask.storage.buffer import ByteBudgetBuffer
    from avalanche_exmask.storage.codecs import MaskedCodec
    from avalanche_exmask.training.plugin import ByteBudgetReplayPlugin

    class LoaderProbe(SupervisedPlugin):
        def before_training_epoch(self, strategy, **kwargs):
            self.loader_kwargs = getattr(strategy.dataloader, "loader_kwargs", None)

    benchmark = synthetic_multimodal(n_classes=4, n_experiences=2, train_per_class=2, test_per_class=1, seed=0)
    torch.manual_seed(0)
    model = MultimodalCLIPClassifier(pretrained=None)
    budget = budget_from_samples_per_class(1, 4, model.image_size, model.context_length)

    def masked_buffer() -> ByteBudgetBuffer:
        return ByteBudgetBuffer(max_size=budget, codec=MaskedCodec(), mode="per_class", total_num_classes=4)

    buffer, probe = masked_buffer(), LoaderProbe()
    strategy = Naive(model=model, optimizer=torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0),
                     train_mb_size=8, plugins=[ByteBudgetReplayPlugin(mem_size=budget, storage_policy=buffer), probe],
                     evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]))
    settings = {"num_workers": 1, "pin_memory": False, "persistent_workers": True}
    strategy.train(benchmark.train_stream[0], **settings)  # the buffer update reads candidates in a worker
    reference = masked_buffer()
    reference.post_adapt(strategy, benchmark.train_stream[0])  # the same update (lr 0: same model), read here
    assert len(buffer.records) == 2 and buffer.content_sha256() == reference.content_sha256()
    strategy.train(benchmark.train_stream[1], **settings)
    assert probe.loader_kwargs["num_workers"] == 1 and probe.loader_kwargs["pin_memory"] is False  # the replay loader
    assert probe.loader_kwargs["persistent_workers"] is True


def test_run_config_sections_reach_the_strategy(monkeypatch):
    """``loader`` / ``accelerator`` / ``model.skip_empty_patches: drop`` from a config drive a run."""
    from avalanche_exmask.experiment import run_experiment
    from avalanche_exmask.storage.candidate_reader import CandidateReader

    seen = {"autocast": 0, "read_workers": [], "drop": 0}
    original_enter, original_read = MixedPrecisionPlugin._enter, CandidateReader.read
    original_drop = MultimodalCLIPClassifier._dropping_empty_patches

    def counting_enter(self):
        seen["autocast"] += self.dtype == torch.bfloat16
        original_enter(self)

    def spying_read(self, indices):
        seen["read_workers"].append(self.num_workers)
        return original_read(self, indices)

    def counting_drop(self, images):
        seen["drop"] += 1
        return original_drop(self, images)

    monkeypatch.setattr(MixedPrecisionPlugin, "_enter", counting_enter)
    monkeypatch.setattr(CandidateReader, "read", spying_read)
    monkeypatch.setattr(MultimodalCLIPClassifier, "_dropping_empty_patches", counting_drop)
    (run,) = expand_runs({
        "method": "masking", "benchmark": {"n_experiences": 2, "args": {"n_classes": 4, "train_per_class": 2, "test_per_class": 1}},
        "model": {"pretrained": None, "skip_empty_patches": "drop"}, "train": {"epochs": 1, "batch_size": 4},
        "storage": {"options": {"masked": {"background_downsample": None}}}, "eval": {"ncm": False},
        "logging": {"progress": False}, "loader": {"num_workers": 1}, "accelerator": {"precision": "bf16", "channels_last": True},
    })
    results = run_experiment(run)
    assert results["accuracy_matrix"] and results["exemplars_per_class"] >= 1
    assert seen["autocast"] > 0 and seen["read_workers"] and set(seen["read_workers"]) == {1}
    assert seen["drop"] > 0  # current data through the codec and replayed records lose their black patches
