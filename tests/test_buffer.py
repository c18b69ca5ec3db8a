import gc
import tracemalloc
import weakref
from types import SimpleNamespace

import pytest
import torch
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
from hypothesis import given, settings
from hypothesis import strategies as st
from storage_fakes import TinyMaskingModel, random_sample
from torch.utils.data import Dataset

from avalanche_exmask.benchmarks.common import build_class_incremental
from avalanche_exmask.data.sample import MultimodalSample
from avalanche_exmask.masking.image_mask import ImageMaskRule
from avalanche_exmask.storage.budget import budget_from_samples_per_class
from avalanche_exmask.storage.budget_fit import fit_to_budget
from avalanche_exmask.storage.buffer import ByteBudgetBuffer, MaskedExemplarBuffer, default_scorer
from avalanche_exmask.storage.codecs import MaskedCodec, MaskedRecord, RawCodec, Record
from avalanche_exmask.storage.selection import herding_order, random_order

SIZE, PATCH, CONTEXT = 32, 8, 12


class _Samples(Dataset):
    def __init__(self, n_classes, per_class, seed, size=SIZE, context=CONTEXT):
        g = torch.Generator().manual_seed(seed)
        self.items = [
            (random_sample(size, context, int(torch.randint(1, context - 2, (1,), generator=g)), g), label)
            for label in range(n_classes)
            for _ in range(per_class)
        ]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def _benchmark(n_classes=4, per_class=6, size=SIZE, context=CONTEXT):
    train, test = _Samples(n_classes, per_class, 0, size, context), _Samples(n_classes, 2, 1, size, context)
    return build_class_incremental(
        train, test, [y for _, y in train.items], [y for _, y in test.items], n_experiences=2, seed=0
    )


def _strategy(model, experience):
    return SimpleNamespace(model=model, device="cpu", experience=experience)


def _records(label, sizes):
    return [Record(label=label, data=bytes(size)) for size in sizes]


# --------------------------------------------------------------------------- accounting


def test_fit_to_budget_takes_selection_prefix_and_skips_leading_misfits():
    assert fit_to_budget([5, 3, 4], 8) == [0, 1]
    assert fit_to_budget([3, 10, 1], 5) == [0]  # stops at the first that does not fit
    assert fit_to_budget([10, 3, 3, 9, 1], 7) == [1, 2]  # leading misfit skipped
    assert fit_to_budget([10, 9], 8) == []
    consumed = []

    def lazy():
        for size in [2, 2, 5, 1, 1]:
            consumed.append(size)
            yield size

    assert fit_to_budget(lazy(), 5) == [0, 1]
    assert consumed == [2, 2, 5]  # nothing encoded past the first misfit


@st.composite
def _scenarios(draw):
    n_steps = draw(st.integers(1, 5))
    steps, next_label = [], 0
    for _ in range(n_steps):
        if draw(st.booleans()) or not steps:
            n_new = draw(st.integers(1, 3))
            classes = {
                next_label + i: draw(st.lists(st.integers(1, 400), min_size=1, max_size=8)) for i in range(n_new)
            }
            next_label += n_new
            steps.append(("update", classes))
        else:
            steps.append(("resize", draw(st.integers(0, 3000))))
    return draw(st.integers(0, 3000)), draw(st.sampled_from(["total", "per_class"])), steps, next_label


@settings(max_examples=150, deadline=None)
@given(_scenarios())
def test_budget_invariant_under_updates_and_resizes(scenario):
    budget, mode, steps, n_classes = scenario
    buffer = ByteBudgetBuffer(max_size=budget, codec=RawCodec(), mode=mode, total_num_classes=max(n_classes, 1))
    for kind, argument in steps:
        before, before_size = buffer.records, buffer.max_size
        try:
            if kind == "update":
                buffer._admit({label: _records(label, sizes) for label, sizes in argument.items()})
            else:
                buffer.resize(None, argument)
        except ValueError as error:
            # only raised when some class's share cannot hold even its smallest record
            assert "cannot hold one exemplar" in str(error)
            assert buffer.max_size == before_size
            assert {k: [id(r) for r in v] for k, v in buffer.records.items()} == {
                k: [id(r) for r in v] for k, v in before.items()
            }
            candidates = {**{k: [r.nbytes for r in v] for k, v in before.items()}}
            if kind == "update":
                candidates.update(argument)
                size = buffer.max_size
            else:
                size = argument
            share = size // (max(n_classes, 1) if mode == "per_class" else len(candidates))
            assert any(min(sizes) > share for sizes in candidates.values())
            continue
        stored = buffer.records
        assert buffer.accounted_nbytes <= buffer.max_size
        assert all(stored.values()), "a class was left without exemplars"
        assert len(buffer.buffer) == sum(len(v) for v in stored.values())
        for label, group in before.items():  # old classes only lose records
            assert {id(r) for r in stored[label]} <= {id(r) for r in group}


def test_total_mode_rebalances_by_evicting_the_tail():
    buffer = ByteBudgetBuffer(max_size=1000, codec=RawCodec())
    buffer._admit({0: _records(0, [100] * 10)})
    first = buffer.records[0]
    assert len(first) == 10
    buffer._admit({1: _records(1, [100] * 10)})
    assert buffer.exemplars_per_class() == {0: 5, 1: 5}
    assert buffer.records[0] == first[:5]
    buffer.resize(None, 400)
    assert buffer.exemplars_per_class() == {0: 2, 1: 2} and buffer.accounted_nbytes == 400
    buffer.resize(None, 4000)  # growing adds nothing before the next update
    assert buffer.exemplars_per_class() == {0: 2, 1: 2}


def test_per_class_mode_has_a_fixed_share():
    buffer = ByteBudgetBuffer(max_size=1000, codec=RawCodec(), mode="per_class", total_num_classes=4)
    buffer._admit({0: _records(0, [100] * 10)})
    assert buffer.exemplars_per_class() == {0: 2}
    buffer._admit({1: _records(1, [60] * 10)})
    assert buffer.exemplars_per_class() == {0: 2, 1: 4}
    with pytest.raises(ValueError, match="total_num_classes"):
        buffer._admit({c: _records(c, [1]) for c in range(2, 5)})
    with pytest.raises(ValueError, match="total_num_classes"):
        ByteBudgetBuffer(max_size=1000, codec=RawCodec(), mode="per_class")


def test_too_small_budget_names_budget_class_and_smallest_record():
    buffer = ByteBudgetBuffer(max_size=300, codec=RawCodec())
    buffer._admit({0: _records(0, [120, 90])})
    with pytest.raises(ValueError, match=r"budget of 100 bytes for class 2 .* smallest record is 130 bytes"):
        buffer._admit({1: _records(1, [50]), 2: _records(2, [200, 130])})
    assert buffer.exemplars_per_class() == {0: 2}
    with pytest.raises(ValueError, match="max_size"):
        ByteBudgetBuffer(max_size=-1, codec=RawCodec())
    with pytest.raises(ValueError, match="selection"):
        ByteBudgetBuffer(max_size=1, codec=RawCodec(), selection="kmeans")


# --------------------------------------------------------------------------- update with a model


def test_update_scores_once_selects_by_herding_and_stores_compact_records():
    bench = _benchmark()
    model = TinyMaskingModel(4, PATCH)
    scored = []

    def counting_scorer(model, dataset, device, batch_size):
        scored.append(len(dataset))
        return default_scorer(model, dataset, device, batch_size)

    plain = 3 * SIZE * SIZE + 2 * CONTEXT
    budget = 4 * plain
    buffer = MaskedExemplarBuffer(
        max_size=budget, codec=MaskedCodec(image_rule=ImageMaskRule(kind="ratio", ratio=0.25)), scorer=counting_scorer, batch_size=4
    )
    model.train()
    experience = bench.train_stream[0]
    buffer.update(_strategy(model, experience))
    assert model.training  # train mode restored
    classes = sorted(set(experience.classes_in_this_experience))
    assert scored == [6, 6]  # one pass over each new class's candidates
    assert buffer.accounted_nbytes <= budget
    counts = buffer.exemplars_per_class()
    assert sorted(counts) == classes and all(n > 2 for n in counts.values())  # > 2 plain exemplars per class

    # the first stored record is the herding choice, encoded by the codec
    dataset = experience.dataset.eval()
    label = classes[0]
    indices = [i for i, y in enumerate(dataset.targets) if y == label]
    subset = torch.utils.data.Subset(dataset, indices)
    scores, _ = default_scorer(model, subset, "cpu", 8)
    best = int(herding_order(scores.embedding)[0])
    expected = buffer.codec.encode(subset[best][0], scores[best], label)
    assert buffer.records[label][0].data == expected.data
    assert all(isinstance(r, MaskedRecord) for group in buffer.records.values() for r in group)

    x, y, t = buffer.buffer[0]
    assert isinstance(x, MultimodalSample) and x.image.shape == (3, SIZE, SIZE) and x.input_ids.shape == (CONTEXT,)
    assert t == 0 and y in classes
    stats = buffer.stats()
    assert stats.accounted_nbytes == buffer.accounted_nbytes and stats.codec == "masked"
    assert all(0 < c.kept_patch_fraction <= 0.25 for c in stats.classes.values())
    assert all(0 < c.kept_token_fraction <= 1 for c in stats.classes.values())
    assert stats.to_dict()["classes"][str(label)]["n_exemplars"] == counts[label]

    buffer.update(_strategy(model, bench.train_stream[1]))
    assert len(buffer.exemplars_per_class()) == 4 and buffer.accounted_nbytes <= budget


def test_token_importance_is_computed_only_for_the_candidates_that_are_encoded():
    from avalanche_exmask.masking.text_mask import TextMaskRule

    class ImportanceModel(TinyMaskingModel):
        def __init__(self):
            super().__init__(4, PATCH)
            self.asked = []

        def token_importance(self, input_ids):
            self.asked.append(input_ids.clone())
            return (input_ids % 7).float()

    encoded = []

    class CountingCodec(MaskedCodec):
        def encode(self, sample, scores, label):
            assert torch.equal(scores.token_importance, (sample.input_ids % 7).float())
            encoded.append(sample.input_ids)
            return super().encode(sample, scores, label)

    model = ImportanceModel()
    rule = TextMaskRule(mode="both", context_source="text_embedding", class_source="attention")
    codec = CountingCodec(image_rule=ImageMaskRule(kind="ratio", ratio=0.25), text_rule=rule)
    bench = _benchmark()
    buffer = ByteBudgetBuffer(max_size=2 * 1800, codec=codec, batch_size=4)  # 2 records (~850 bytes) per class
    buffer.update(_strategy(model, bench.train_stream[0]))
    assert list(buffer.exemplars_per_class().values()) == [2, 2]
    # one text per encoded record (the two stored and the first that did not fit), not 6 per class
    assert len(model.asked) == len(encoded) == 6
    assert all(a.shape == (1, CONTEXT) and torch.equal(a[0], e) for a, e in zip(model.asked, encoded, strict=True))


def test_scores_of_a_class_are_freed_before_the_next_class_is_scored():
    bench = _benchmark()
    alive_when_scored = []
    previous = []

    def scorer(model, dataset, device, batch_size):
        gc.collect()
        alive_when_scored.append([ref() is not None for ref in previous])
        scores, labels = default_scorer(model, dataset, device, batch_size)
        previous.append(weakref.ref(scores.patch_features))
        return scores, labels

    buffer = ByteBudgetBuffer(max_size=5 * (3 * SIZE * SIZE + 2 * CONTEXT), codec=RawCodec(), scorer=scorer)
    buffer.update(_strategy(TinyMaskingModel(4, PATCH), bench.train_stream[0]))
    assert alive_when_scored == [[], [False]]
    assert all(n == 2 for n in buffer.exemplars_per_class().values())  # the walk stopped early


def test_random_selection_is_seeded_and_candidates_are_capped():
    bench = _benchmark()
    model = TinyMaskingModel(4, PATCH)
    runs = []
    for _ in range(2):
        buffer = ByteBudgetBuffer(max_size=10**6, codec=RawCodec(), selection="random", seed=3, candidates_per_class=4)
        buffer.update(_strategy(model, bench.train_stream[0]))
        runs.append([r.data for group in buffer.records.values() for r in group])
        assert all(n == 4 for n in buffer.exemplars_per_class().values())
    assert runs[0] == runs[1]
    assert random_order(5, torch.Generator().manual_seed(0)).sort().values.tolist() == list(range(5))


def test_buffer_does_not_keep_the_dataset_alive():
    train = _Samples(2, 4, 0)
    ref = weakref.ref(train)
    bench = build_class_incremental(train, _Samples(2, 1, 1), [y for _, y in train.items], [0, 1], n_experiences=1)
    buffer = ByteBudgetBuffer(max_size=10**6, codec=RawCodec())
    buffer.update(_strategy(TinyMaskingModel(2, PATCH), bench.train_stream[0]))
    del train, bench
    gc.collect()
    assert ref() is None
    assert len(buffer.buffer) == 8


def test_resident_bytes_within_five_percent_of_accounted():
    bench = _benchmark(per_class=10, size=64, context=32)  # the tiny model's geometry (patch 8)
    model = TinyMaskingModel(4, PATCH)
    buffer = MaskedExemplarBuffer(max_size=10**6)
    for experience in bench.train_stream:
        buffer.update(_strategy(model, experience))
    records = [r for group in buffer.records.values() for r in group]
    assert len(records) == 40
    # measure what copies of the records really allocate
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    copies = [
        MaskedRecord(label=r.label, data=bytes(bytearray(r.data)), layout=r.layout, n_tokens=r.n_tokens) for r in records
    ]
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    accounted = sum(r.nbytes for r in copies)
    assert accounted == buffer.accounted_nbytes
    assert traced / accounted <= 1.05
    assert buffer.resident_nbytes() / buffer.accounted_nbytes <= 1.05
    assert abs(buffer.resident_nbytes() - traced) / traced < 0.02


# --------------------------------------------------------------------------- Avalanche integration


@pytest.mark.filterwarnings("ignore:No loggers specified")
def test_works_under_avalanche_replay_plugin():
    bench = _benchmark()
    model = TinyMaskingModel(4, PATCH)
    batch_sizes = []
    original_forward = model.forward

    def forward(x):
        batch_sizes.append(x.image.shape[0])
        return original_forward(x)

    model.forward = forward
    budget = budget_from_samples_per_class(2, 4, SIZE, CONTEXT)
    buffer = MaskedExemplarBuffer(max_size=budget, batch_size=8)
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=4,
        train_epochs=1,
        eval_mb_size=8,
        device="cpu",
        plugins=[ReplayPlugin(mem_size=budget, storage_policy=buffer)],
        evaluator=EvaluationPlugin(loggers=[]),
    )
    strategy.train(bench.train_stream[0])
    assert max(batch_sizes) == 4
    assert len(buffer.exemplars_per_class()) == 2
    batch_sizes.clear()
    strategy.train(bench.train_stream[1])
    assert max(batch_sizes) == 8  # current + memory batches
    counts = buffer.exemplars_per_class()
    assert len(counts) == 4 and min(counts.values()) >= 2
    assert buffer.accounted_nbytes <= budget
    strategy.eval(bench.test_stream)


def test_avalanche_selection_strategies_order_the_candidates():
    from avalanche.training.storage_policy import ExemplarsSelectionStrategy, HerdingSelectionStrategy

    benchmark = _benchmark(n_classes=2, per_class=6)
    experience = benchmark.train_stream[0]
    model = TinyMaskingModel(2, PATCH)
    budget = budget_from_samples_per_class(2, 2, SIZE, CONTEXT)

    class Reversed(ExemplarsSelectionStrategy):
        """The candidates in reverse order (a non-feature strategy gets the candidates as a dataset)."""

        def make_sorted_indices(self, strategy, data):
            self.seen = len(data)
            return list(range(len(data)))[::-1]

    reverse = Reversed()
    by_reverse = ByteBudgetBuffer(max_size=budget, codec=RawCodec(), mode="per_class", total_num_classes=2, selection=reverse)
    by_reverse.post_adapt(_strategy(model, experience), experience)
    in_order = ByteBudgetBuffer(max_size=budget * 3, codec=RawCodec(), mode="per_class", total_num_classes=2, selection="random", seed=0)
    in_order.post_adapt(_strategy(model, experience), experience)
    label = sorted(experience.classes_in_this_experience)[0]
    candidates = [x for x, y in _Samples(2, 6, 0).items if y == label]
    assert reverse.seen == 6
    stored = [RawCodec().decode(r).image for r in by_reverse.records[label]]
    assert torch.equal(stored[0], candidates[-1].image) and torch.equal(stored[1], candidates[-2].image)

    # a feature-based strategy is fed the fused embeddings of the buffer's own scoring pass
    herding = HerdingSelectionStrategy(model=torch.nn.Identity(), layer_name="")
    by_avalanche = ByteBudgetBuffer(max_size=budget, codec=RawCodec(), mode="per_class", total_num_classes=2, selection=herding)
    by_avalanche.post_adapt(_strategy(model, experience), experience)
    assert by_avalanche.exemplars_per_class() == {c: 2 for c in experience.classes_in_this_experience}
    with pytest.raises(ValueError, match="ExemplarsSelectionStrategy"):
        ByteBudgetBuffer(max_size=1, codec=RawCodec(), selection=object())
