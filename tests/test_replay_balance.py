"""Class-rate balanced replay, weight aligning and the nearest-class-mean readout."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin

from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.storage.budget import budget_from_samples_per_class
from avalanche_exmask.storage.buffer import ByteBudgetBuffer
from avalanche_exmask.storage.codecs import RawCodec
from avalanche_exmask.training.ncm import exemplar_class_means, ncm_accuracy
from avalanche_exmask.training.plugin import ByteBudgetReplayPlugin, memory_batch_size
from avalanche_exmask.training.weight_aligning import WeightAligningPlugin, align_weights


def test_memory_batch_size_balances_class_rates():
    # 8 new classes in a batch of 32 (4 per class); 24 old classes need 96 replayed samples.
    assert memory_batch_size("class_balanced", 32, n_old_classes=24, n_new_classes=8) == 96
    assert memory_batch_size("class_balanced", 32, n_old_classes=5, n_new_classes=3) == 54  # ceil(53.3)
    assert memory_batch_size("fixed", 32, 24, 8) == 32
    assert memory_batch_size("fixed", 32, 24, 8, fixed_size=10) == 10
    assert memory_batch_size("class_balanced", 32, 0, 8) == 0
    with pytest.raises(ValueError, match="memory batch mode"):
        memory_batch_size("uniform", 32, 1, 1)


class _CountLabels(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def before_forward(self, strategy, **kwargs):
        self.counts.update(strategy.mb_y.tolist())


@pytest.mark.parametrize("mode", ["class_share", "class_balanced", "fixed"])
def test_replay_draws_old_and_new_classes_at_the_rates_of_the_mode(mode):
    # 6 classes in 3 experiences, 1 raw exemplar per class: at the last experience the memory
    # (4 records) is smaller than the balanced memory batch, so the buffer must be repeated.
    benchmark = synthetic_multimodal(n_classes=6, n_experiences=3, train_per_class=16, test_per_class=2, seed=0)
    torch.manual_seed(0)
    model = MultimodalCLIPClassifier(pretrained=None)
    budget = budget_from_samples_per_class(1, 6, model.image_size, model.context_length)
    buffer = ByteBudgetBuffer(max_size=budget, codec=RawCodec(), mode="per_class", total_num_classes=6)
    plugin = ByteBudgetReplayPlugin(mem_size=budget, storage_policy=buffer, memory_batch=mode)
    counter = _CountLabels()
    strategy = Naive(
        model=model, optimizer=torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0),
        train_mb_size=8, plugins=[plugin, counter], evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
    )
    for experience in benchmark.train_stream:
        counter.counts.clear()
        strategy.train(experience)
    new = benchmark.train_stream[2].classes_in_this_experience
    old = set(range(6)) - set(new)
    per_new = sum(counter.counts[c] for c in new) / len(new)
    per_old = sum(counter.counts[c] for c in old) / len(old)
    if mode == "class_balanced":
        assert plugin.timings[-1]["memory_batch"] == 16  # 8 x 4 old / 2 new
        assert per_old == per_new  # 2 batches: 16 new + 16 replayed (4 old x 1 exemplar, 4 times)
    elif mode == "class_share":
        # a batch of 8 + 8 split 2 new classes : 4 old = 5 current + 11 replayed; 32 current
        # samples make 7 batches, and every memory batch is full (4 records repeated to 12: with
        # Avalanche's loader the batches would alternate 11 and 1, 47 replayed in all)
        assert (plugin.timings[-1]["current_batch"], plugin.timings[-1]["memory_batch"]) == (5, 11)
        assert per_new == 16 and per_old == 7 * 11 / 4
    else:
        assert plugin.timings[-1]["memory_batch"] == 8
        assert per_old < per_new / 2  # Avalanche's: the 4 old records at most once per batch
    assert [t["memory_batch"] for t in plugin.timings][0] == 0


def test_align_weights_equalises_mean_norms_of_new_and_old_rows():
    head = torch.nn.Linear(4, 5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 5.0], [0, 0, 0, 0]]))
        head.bias.copy_(torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0]))
    gamma = align_weights(head, old_classes=[0, 1], new_classes=[2, 3])
    assert gamma == pytest.approx(1.0 / 4.0)
    norms = head.weight.detach().norm(dim=1)
    assert float(norms[[2, 3]].mean()) == pytest.approx(float(norms[[0, 1]].mean()))
    assert head.bias.tolist() == pytest.approx([0.0, 0.0, 0.25, 0.25, 0.0])
    assert align_weights(head, [], [2]) == 1.0


def test_weight_aligning_plugin_runs_after_each_experience():
    benchmark = synthetic_multimodal(n_classes=4, n_experiences=2, train_per_class=8, test_per_class=2, seed=0)
    model = MultimodalCLIPClassifier(pretrained=None)
    plugin = WeightAligningPlugin()
    strategy = Naive(
        model=model, optimizer=torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1),
        train_mb_size=8, plugins=[plugin], evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
    )
    for experience in benchmark.train_stream:
        strategy.train(experience)
    weight = model.classifier.classifier.weight.detach()
    old, new = sorted(benchmark.train_stream[0].classes_in_this_experience), sorted(benchmark.train_stream[1].classes_in_this_experience)
    assert plugin.gammas[0] == 1.0 and plugin.gammas[1] != 1.0
    assert weight[new].norm(dim=1).mean() == pytest.approx(float(weight[old].norm(dim=1).mean()), rel=1e-5)


class _OneHotModel(torch.nn.Module):
    """embed(x) = the first pixel's RGB as a 3-d vector: class c's exemplars point along axis c."""

    def embed(self, x):
        return x.image[:, :, 0, 0].float()


class _FakeBuffer:
    def __init__(self, samples):
        self.records = {label: [s for s, y in samples if y == label] for label in {y for _, y in samples}}
        self.codec = type("Identity", (), {"decode": staticmethod(lambda record: record)})()


def test_ncm_classifies_by_the_nearest_exemplar_mean():
    from avalanche_exmask.data.sample import make_sample

    def sample(rgb):
        image = torch.zeros(3, 2, 2, dtype=torch.uint8)
        image[:, 0, 0] = torch.tensor(rgb, dtype=torch.uint8)
        return make_sample(image, torch.tensor([1, 2, 0]))

    exemplars = [(sample([9, 1, 0]), 0), (sample([8, 0, 1]), 0), (sample([0, 9, 0]), 2), (sample([1, 7, 1]), 2)]
    labels, means = exemplar_class_means(_OneHotModel(), _FakeBuffer(exemplars), "cpu")
    assert labels.tolist() == [0, 2] and means.norm(dim=1).tolist() == pytest.approx([1.0, 1.0])
    test = [(sample([5, 1, 0]), 0), (sample([1, 5, 0]), 2), (sample([0, 6, 0]), 0)]  # the last one is wrong
    assert ncm_accuracy(_OneHotModel(), _FakeBuffer(exemplars), test, "cpu") == pytest.approx(200 / 3)


def test_current_data_through_codec_replaces_only_current_samples_at_the_rate():
    from avalanche_exmask.masking.image_mask import ImageMaskRule
    from avalanche_exmask.masking.text_mask import TextMaskRule
    from avalanche_exmask.storage.codecs import MaskedCodec
    from avalanche_exmask.training.codec_augmentation import CurrentThroughCodecPlugin, through_codec

    benchmark = synthetic_multimodal(n_classes=4, n_experiences=2, train_per_class=16, test_per_class=2, seed=0)
    model = MultimodalCLIPClassifier(pretrained=None)
    codec = MaskedCodec(image_rule=ImageMaskRule(kind="ratio", ratio=0.25), text_rule=TextMaskRule(mode="none"), background_downsample=None)
    x = torch.stack([benchmark.train_stream[0].dataset[i][0] for i in range(3)])
    decoded = through_codec(model, codec, x, torch.tensor([0, 0, 0]))
    black = (decoded.image == 0).all(dim=1)  # [3, 64, 64]: pixels of discarded patches
    assert 0.70 <= float(black.float().mean()) <= 0.80  # 75% of the patches discarded
    assert torch.equal(decoded.input_ids, x.input_ids)

    class Recorder(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.black_fraction = {"old": [], "new": []}

        def before_backward(self, strategy, **kwargs):  # after the replacement in before_forward
            new = torch.isin(strategy.mb_y.cpu(), torch.tensor(sorted(strategy.experience.classes_in_this_experience)))
            black = (strategy.mb_x.image == 0).all(dim=1).flatten(1).float().mean(1).cpu() > 0.5
            self.black_fraction["new"].extend(black[new].tolist())
            self.black_fraction["old"].extend(black[~new].tolist())

    budget = budget_from_samples_per_class(2, 4, model.image_size, model.context_length)
    buffer = ByteBudgetBuffer(max_size=budget, codec=codec, mode="per_class", total_num_classes=4)
    plugin = CurrentThroughCodecPlugin(codec, probability=0.5, seed=0)
    recorder = Recorder()
    strategy = Naive(
        model=model, optimizer=torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0), train_mb_size=8,
        plugins=[ByteBudgetReplayPlugin(mem_size=budget, storage_policy=buffer), plugin, recorder],
        evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
    )
    for experience in benchmark.train_stream:
        strategy.train(experience)
    new = recorder.black_fraction["new"]
    assert plugin.replaced == sum(new) and 0.3 < sum(new) / len(new) < 0.7  # 64 current samples, p = 0.5
    assert all(recorder.black_fraction["old"])  # replayed exemplars are masked anyway
    with pytest.raises(ValueError, match="probability"):
        CurrentThroughCodecPlugin(codec, probability=1.5)


def test_class_share_splits_a_fixed_batch_by_class_counts():
    from avalanche_exmask.training.plugin import batch_split

    assert batch_split(64, n_old_classes=25, n_new_classes=5) == (11, 53)  # 64 x 5/30 = 10.7
    assert batch_split(64, n_old_classes=5, n_new_classes=5) == (32, 32)
    assert batch_split(64, n_old_classes=0, n_new_classes=5) == (64, 0)
    assert batch_split(4, n_old_classes=100, n_new_classes=1) == (1, 3)  # at least one current sample
    assert sum(batch_split(50, 7, 3)) == 50


def test_current_through_a_lossless_codec_costs_no_forward_pass():
    from types import SimpleNamespace

    from avalanche_exmask.training.codec_augmentation import CurrentThroughCodecPlugin

    class NoScoring(torch.nn.Module):
        def masking_scores(self, x, **kwargs):
            raise AssertionError("a lossless codec needs no scores")

    plugin = CurrentThroughCodecPlugin(RawCodec(), probability=1.0)
    strategy = SimpleNamespace(model=NoScoring(), mb_y=torch.tensor([0, 1]), mbatch=[None],
                               experience=SimpleNamespace(classes_in_this_experience=[0, 1]))
    plugin.before_forward(strategy)
    assert plugin.replaced == 0


def test_per_class_replay_rate_draws_every_class_alike_whatever_its_record_count():
    from avalanche.benchmarks.utils import _make_taskaware_classification_dataset
    from torch.utils.data import TensorDataset

    from avalanche_exmask.training.plugin import FullMemoryBatchLoader, per_class_weights

    def dataset(labels):
        targets = torch.tensor(labels)
        return _make_taskaware_classification_dataset(
            TensorDataset(torch.zeros(len(labels), 1), targets), targets=targets, task_labels=0
        )

    current = dataset([9] * 400)
    memory_labels = [0] * 2 + [1] * 18  # e.g. a class of large records beside one of small ones
    memory = dataset(memory_labels)
    weights = per_class_weights(torch.tensor(memory_labels))
    torch.testing.assert_close(weights, torch.tensor([1 / 2] * 2 + [1 / 18] * 18, dtype=torch.float64))
    counts = {}
    for rate, memory_weights in (("per_record", None), ("per_class", weights)):
        torch.manual_seed(0)
        loader = FullMemoryBatchLoader(current, memory, batch_size=4, batch_size_mem=4, memory_weights=memory_weights)
        drawn = Counter()
        for batch in loader:
            drawn.update(label for label in batch[1].tolist() if label != 9)
        counts[rate] = drawn
    assert counts["per_record"][1] > 5 * counts["per_record"][0]  # 9:1 in expectation
    total = counts["per_class"][0] + counts["per_class"][1]
    assert total == sum(counts["per_record"].values())  # the same number of replayed samples
    assert abs(counts["per_class"][0] - total / 2) < 0.15 * total


def test_per_class_replay_rate_is_refused_with_a_fixed_memory_batch():
    buffer = ByteBudgetBuffer(max_size=100, codec=RawCodec(), mode="total")
    with pytest.raises(ValueError, match="per_class"):
        ByteBudgetReplayPlugin(mem_size=100, storage_policy=buffer, memory_batch="fixed", replay_rate="per_class")
    with pytest.raises(ValueError, match="replay_rate"):
        ByteBudgetReplayPlugin(mem_size=100, storage_policy=buffer, replay_rate="per_sample")


def test_current_through_a_score_free_codec_runs_no_forward_pass_and_decodes_its_record():
    from avalanche_exmask.storage.codecs import JpegCodec
    from avalanche_exmask.training.codec_augmentation import through_codec

    class NoScoring(torch.nn.Module):
        def masking_scores(self, x, **kwargs):
            raise AssertionError("JPEG records do not depend on scores")

    benchmark = synthetic_multimodal(n_classes=2, n_experiences=1, train_per_class=2, test_per_class=1, seed=0)
    x = torch.stack([benchmark.train_stream[0].dataset[i][0] for i in range(2)])
    codec = JpegCodec(quality=20)
    decoded = through_codec(NoScoring(), codec, x, torch.tensor([0, 1]))
    for i in range(2):
        expected = codec.decode(codec.encode(x[i], None, i))
        assert torch.equal(decoded[i].image, expected.image) and not torch.equal(decoded[i].image, x[i].image)
