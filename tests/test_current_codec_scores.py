"""Current data through the codec, scored once an experience (``current_codec_scores: experience``)."""
from __future__ import annotations

import pytest
import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
from avalanche.training.templates import SupervisedTemplate

from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal
from avalanche_exmask.data.sample import MultimodalSample
from avalanche_exmask.masking.image_mask import ImageMaskRule
from avalanche_exmask.masking.text_mask import TextMaskRule
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.storage.budget import budget_from_samples_per_class
from avalanche_exmask.storage.buffer import ByteBudgetBuffer
from avalanche_exmask.storage.codecs import MaskedCodec
from avalanche_exmask.training.codec_augmentation import CurrentThroughCodecPlugin
from avalanche_exmask.training.plugin import ByteBudgetReplayPlugin


def _tiny_config(method: str, scores: str, **train):
    from avalanche_exmask.config import RunConfig

    return RunConfig.from_dict({
        "method": method, "model": {"pretrained": None}, "logging": {"progress": False},
        "benchmark": {"n_experiences": 2, "args": {"n_classes": 4, "train_per_class": 6, "test_per_class": 2}},
        "train": {"epochs": 2, "batch_size": 8, "current_codec_scores": scores, **train},
        "storage": {"budget": {"samples_per_class": 2}},
    })


def test_a_score_free_codec_trains_the_same_inputs_whether_encoded_each_step_or_once_an_experience():
    """JPEG records do not depend on scores: at probability 1 both settings train identical batches."""
    from avalanche_exmask.experiment import run_experiment

    step = run_experiment(_tiny_config("mrdc", "step"))
    experience = run_experiment(_tiny_config("mrdc", "experience"))
    assert experience["accuracy_matrix"] == step["accuracy_matrix"]
    assert experience["class_accuracy_matrix"] == step["class_accuracy_matrix"]
    assert experience["buffer"]["classes"] == step["buffer"]["classes"]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_score_free_codec_passes_current_data_through_in_the_dataset_with_the_steps_bits(monkeypatch, workers):
    """With ``"step"`` at probability 1 JPEG's round trip runs in the training dataset (in the
    loader's workers when it has some): every training batch, replayed samples included, holds the
    bits the in-step round trip gives, and the replacement count is the same."""
    from avalanche_exmask.storage.codecs import JpegCodec

    class BatchRecorder(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

        def before_backward(self, strategy, **kwargs):
            self.batches.append((strategy.mb_x.image.clone(), strategy.mb_x.input_ids.clone(), strategy.mb_y.clone()))

    def train(in_loader: bool, probability: float = 1.0):
        monkeypatch.setattr(CurrentThroughCodecPlugin, "in_loader", property(lambda self: in_loader))
        torch.manual_seed(0)
        benchmark = synthetic_multimodal(n_classes=4, n_experiences=2, train_per_class=6, test_per_class=1, seed=0)
        model = MultimodalCLIPClassifier(pretrained=None)
        codec = JpegCodec(quality=30)
        budget = budget_from_samples_per_class(2, 4, model.image_size, model.context_length)
        plugin = CurrentThroughCodecPlugin(codec, probability=probability, seed=None)  # draws from the global stream
        recorder = BatchRecorder()
        strategy = SupervisedTemplate(
            model=model, optimizer=torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05),
            train_mb_size=8, train_epochs=2, eval_mb_size=8,
            plugins=[ByteBudgetReplayPlugin(mem_size=budget, storage_policy=ByteBudgetBuffer(
                max_size=budget, codec=codec, mode="per_class", total_num_classes=4)), plugin, recorder],
            evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
        )
        for experience in benchmark.train_stream:
            strategy.train(experience, num_workers=workers)
        return recorder.batches, plugin.replaced

    in_step, replaced_in_step = train(in_loader=False)
    in_dataset, replaced_in_dataset = train(in_loader=True)
    untouched, _ = train(in_loader=False, probability=0.0)
    assert replaced_in_step == replaced_in_dataset == 2 * 2 * 12  # 2 experiences x 2 epochs x 12 current samples
    assert len(in_dataset) == len(in_step) == len(untouched)
    for (image, ids, y), (image_ref, ids_ref, y_ref) in zip(in_dataset, in_step, strict=True):
        assert torch.equal(image, image_ref) and torch.equal(ids, ids_ref) and torch.equal(y, y_ref)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(in_step, untouched, strict=True))  # JPEG changed the inputs


def test_scores_once_an_experience_leave_the_training_steps_free_of_codec_work_and_train_the_records():
    benchmark = synthetic_multimodal(n_classes=4, n_experiences=2, train_per_class=8, test_per_class=2, seed=0)
    model = MultimodalCLIPClassifier(pretrained=None)
    codec = MaskedCodec(image_rule=ImageMaskRule(kind="ratio", ratio=0.25), text_rule=TextMaskRule(mode="none"),
                        background_downsample=None, patch_size=model.patch_size)
    scoring_calls = {"training": 0, "eval": 0}

    def counting(real):
        def counted(*args, **kwargs):
            scoring_calls["training" if counting.in_step else "eval"] += 1
            return real(*args, **kwargs)
        return counted

    counting.in_step = False
    model.masking_scores = counting(model.masking_scores)
    model.patch_attention_scores = counting(model.patch_attention_scores)

    class StepWatcher(SupervisedPlugin):
        """Marks scoring calls made inside a training step, and records the current samples' black share."""

        def __init__(self):
            super().__init__()
            self.current_black: list[float] = []

        def before_training_iteration(self, strategy, **kwargs):
            counting.in_step = True

        def after_training_iteration(self, strategy, **kwargs):
            counting.in_step = False

        def before_backward(self, strategy, **kwargs):
            current = torch.isin(strategy.mb_y.cpu(), torch.tensor(sorted(strategy.experience.classes_in_this_experience)))
            black = (strategy.mb_x.image == 0).all(dim=1).flatten(1).float().mean(1).cpu()
            self.current_black.extend(black[current].tolist())

    budget = budget_from_samples_per_class(2, 4, model.image_size, model.context_length)
    buffer = ByteBudgetBuffer(max_size=budget, codec=codec, mode="per_class", total_num_classes=4)
    plugin = CurrentThroughCodecPlugin(codec, probability=1.0, seed=0, scores="experience")
    watcher = StepWatcher()
    strategy = SupervisedTemplate(
        model=model, optimizer=torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0),
        train_mb_size=8, train_epochs=2, eval_mb_size=5,
        plugins=[ByteBudgetReplayPlugin(mem_size=budget, storage_policy=buffer), plugin, watcher],
        evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
    )
    for experience in benchmark.train_stream:
        strategy.train(experience, num_workers=1)  # records decoded in the loader's worker
    assert scoring_calls["training"] == 0
    # 16 current samples an experience, scored in batches of 5 (4 calls), then the buffer's own pass
    assert plugin.replaced == 32 and len(plugin.pass_seconds) == 2
    assert scoring_calls["eval"] >= 8
    # every current sample is trained as its record: 75% of its patches discarded (black), in both epochs
    assert len(watcher.current_black) == 2 * 2 * 16
    assert all(0.70 <= share <= 0.80 for share in watcher.current_black)


def test_records_in_place_serve_each_replaced_sample_as_its_decoded_record():
    from avalanche_exmask.training.codec_augmentation import RecordsInPlaceDataset, encode_through_codec

    benchmark = synthetic_multimodal(n_classes=2, n_experiences=1, train_per_class=3, test_per_class=1, seed=0)
    dataset = benchmark.train_stream[0].dataset
    model = MultimodalCLIPClassifier(pretrained=None)
    codec = MaskedCodec(image_rule=ImageMaskRule(kind="ratio", ratio=0.5), text_rule=TextMaskRule(mode="none"),
                        background_downsample=None, patch_size=model.patch_size)
    records = encode_through_codec(model, codec, torch.utils.data.Subset(dataset, [1, 4]), "cpu", batch_size=2)
    assert len(records) == 2
    served = RecordsInPlaceDataset(dataset, {1: records[0], 4: records[1]}, codec.decode)
    assert len(served) == len(dataset)
    for index in range(len(dataset)):
        x, y, *_ = dataset[index]
        got, label = served[index]
        assert label == int(y)
        if index in (1, 4):
            expected = codec.decode(records[(1, 4).index(index)])
            assert torch.equal(got.image, expected.image) and not torch.equal(got.image, x.image)
        else:
            assert torch.equal(got.image, x.image)


def test_an_unknown_current_codec_scores_setting_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="current_codec_scores"):
        _tiny_config("masking", "batch")
    codec = MaskedCodec()
    with pytest.raises(ValueError, match="scores"):
        CurrentThroughCodecPlugin(codec, probability=1.0, scores="epoch")  # type: ignore[arg-type]


@pytest.mark.parametrize("text_rule", [TextMaskRule(mode="none"), TextMaskRule(mode="class", class_source="names"),
                                       TextMaskRule(mode="context")])
def test_records_from_the_patch_attention_alone_equal_those_from_the_full_scores(text_rule):
    """A masked codec whose text rule reads no scores is scored by the image tower's attention alone
    (no text tower); its records are byte for byte those of the full scoring pass. A text rule that
    reads scores gets the full pass."""
    from dataclasses import replace

    from avalanche_exmask.training.codec_augmentation import _scores, through_codec

    benchmark = synthetic_multimodal(n_classes=2, n_experiences=1, train_per_class=3, test_per_class=1, seed=0)
    x, y = next(iter(torch.utils.data.DataLoader(benchmark.train_stream[0].dataset, batch_size=6)))[:2]
    model = MultimodalCLIPClassifier(pretrained=None).train()
    codec = MaskedCodec(image_rule=ImageMaskRule(kind="threshold"), text_rule=text_rule,
                        class_token_ids={0: torch.tensor([320]), 1: torch.tensor([321])}, patch_size=model.patch_size)
    cheap = text_rule.mode != "context"
    assert codec.reads_patch_attention_only is cheap
    scores = _scores(model, codec, x)
    assert model.training  # restored
    assert hasattr(scores, "embedding") is not cheap
    if cheap:
        with pytest.raises(AttributeError):
            _ = scores.token_attention

    class FullScores:  # the same codec, without the declaration: the full pass
        def __init__(self, inner):
            self.inner = inner

        def encode(self, *args):
            return self.inner.encode(*args)

        def decode(self, record):
            return self.inner.decode(record)

    from avalanche_exmask.training.codec_augmentation import _encode_batch

    records = _encode_batch(model, codec, x, y)
    reference = _encode_batch(model, FullScores(replace(codec)), x, y)
    assert [r.data for r in records] == [r.data for r in reference]
    decoded = through_codec(model, codec, x, y)
    assert torch.equal(decoded.image, torch.stack([codec.decode(r).image for r in reference]))


@pytest.mark.parametrize("scores", ["step", "experience"])
def test_an_experience_draws_the_same_current_samples_however_the_run_got_there(monkeypatch, scores):
    """The draw of which current samples go through the codec (probability 0.5) depends on the seed and
    the experience only: an experience trained right after a resume draws what it draws uninterrupted."""
    from types import SimpleNamespace

    import avalanche_exmask.training.codec_augmentation as augmentation

    benchmark = synthetic_multimodal(n_classes=6, n_experiences=3, train_per_class=6, test_per_class=1, seed=0)
    drawn: list[list[int]] = []
    monkeypatch.setattr(augmentation, "encode_through_codec",
                        lambda model, codec, subset, *a, **k: drawn.append(list(subset.indices)) or [None] * len(subset.indices))
    monkeypatch.setattr(augmentation, "through_codec", lambda model, codec, x, labels: drawn.append(labels.tolist()) or x)
    monkeypatch.setattr(augmentation, "RecordsInPlaceDataset", lambda dataset, records, decode: dataset)

    def draws(plugin, experiences):
        drawn.clear()
        for experience in experiences:
            dataset = experience.dataset
            images = torch.zeros(12, 3, 64, 64, dtype=torch.uint8)
            batch = MultimodalSample(image=images, input_ids=torch.zeros(12, 32, dtype=torch.long), batch_size=[12])
            strategy = SimpleNamespace(experience=experience, adapted_dataset=dataset, model=None, device="cpu", eval_mb_size=4,
                                       mb_y=torch.as_tensor(list(dataset.targets)[:12]), mbatch=[batch])
            plugin.before_train_dataset_adaptation(strategy)
            plugin.after_train_dataset_adaptation(strategy)
            plugin.before_forward(strategy)
        return [list(d) for d in drawn]

    codec = MaskedCodec(patch_size=8)

    def plugin():
        return CurrentThroughCodecPlugin(codec, probability=0.5, seed=3, scores=scores)

    uninterrupted = draws(plugin(), benchmark.train_stream)
    resumed = draws(plugin(), [benchmark.train_stream[2]])
    assert len(uninterrupted) == 3 and resumed == uninterrupted[2:]
    assert draws(plugin(), [benchmark.train_stream[0]]) == uninterrupted[:1]
    other_seed = CurrentThroughCodecPlugin(codec, probability=0.5, seed=4, scores=scores)
    assert draws(other_seed, benchmark.train_stream) != uninterrupted


def test_the_experience_pass_reads_in_loader_workers_and_makes_the_same_records(tmp_path):
    import os

    from conftest import PidLoggingDataset

    from avalanche_exmask.training.codec_augmentation import encode_through_codec

    benchmark = synthetic_multimodal(n_classes=2, n_experiences=1, train_per_class=4, test_per_class=1, seed=0)
    torch.manual_seed(0)
    model = MultimodalCLIPClassifier(pretrained=None)
    codec = MaskedCodec(patch_size=model.patch_size)
    made, readers = [], []
    for workers in (0, 2):
        log = tmp_path / f"reads-{workers}.txt"
        rng_before = torch.get_rng_state()
        items = PidLoggingDataset(benchmark.train_stream[0].dataset, log)
        records = encode_through_codec(model, codec, items, "cpu", 3, num_workers=workers)
        assert torch.equal(rng_before, torch.get_rng_state())  # the training order is not touched
        made.append([record.data for record in records])
        readers.append(set(log.read_text().split()))
    assert len(made[0]) == 8 and made[0] == made[1]
    assert readers[0] == {str(os.getpid())} and len(readers[1]) == 2 and str(os.getpid()) not in readers[1]
