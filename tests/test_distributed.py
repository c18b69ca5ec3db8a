"""Training on several processes (``torchrun``, gloo on the CPU) against one process.

The launch runs the runner as a user starts it, then the checks of ``distributed_worker.py``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from avalanche_exmask.config import load_runs
from avalanche_exmask.experiment import run_experiment

CONFIG = Path(__file__).parents[1] / "benchmarks" / "configs" / "distributed_tiny.yaml"
RESULTS = "distributed_tiny_masking_seed0.json"
ACCURACY_TOLERANCE = 20.0
"""Points of final accuracy allowed between 2 processes and 1 at the same global batch: the runs
see the same samples in other batches and orders (torch's ``DistributedSampler`` against its
``RandomSampler``); on this 30-sample test set one sample is 3.3 points."""


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    """The 2-process launch's results file and each rank's observations."""
    out = tmp_path_factory.mktemp("two")
    config = out / CONFIG.name
    shutil.copy(CONFIG, config)
    torchrun = Path(sys.executable).with_name("torchrun")
    python_path = os.pathsep.join([str(Path(__file__).parents[1]), str(Path(__file__).parent)])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": python_path}
    worker = str(Path(__file__).with_name("distributed_worker.py"))
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", worker, str(config), str(out)]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return {"out": out, "config": config, "ranks": ranks, "stdout": finished.stdout}


@pytest.fixture(scope="module")
def one_process(launch):
    """The same config in this process, one thread like each rank of the launch (two threads
    oversubscribe a loaded 2-core machine: 70 s instead of about 15)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_experiment(load_runs(launch["config"])[0])
    finally:
        torch.set_num_threads(threads)


def test_runner_writes_one_results_file_from_rank_0(launch):
    files = sorted(p.name for p in (launch["out"] / "results").iterdir())
    assert files == [RESULTS]
    assert [line for line in launch["stdout"].splitlines() if line.startswith("wrote ")] == [
        f"wrote {launch['out'] / 'results' / RESULTS}"
    ]


def test_every_rank_holds_the_same_buffer_within_the_single_process_budget(launch, one_process):
    results = json.loads((launch["out"] / "results" / RESULTS).read_text())
    assert results["environment"]["distributed"] == {"world_size": 2, "backend": "gloo"}
    shas = results["buffer_sha256_per_rank"]
    assert len(shas) == 2 and shas[0] == shas[1] == results["buffer_sha256"]
    assert results["budget_nbytes"] == one_process["budget_nbytes"]
    assert results["buffer"]["budget_nbytes"] == one_process["buffer"]["budget_nbytes"]
    share = results["budget_nbytes"] // results["n_classes"]
    assert results["buffer_nbytes"] == sum(c["nbytes"] for c in results["buffer"]["classes"].values())
    assert all(0 < c["nbytes"] <= share for c in results["buffer"]["classes"].values())
    assert len(results["buffer"]["classes"]) == one_process["n_classes"] == 6
    # each class fills its share up to less than one masked record (a few KB of a ~25 KB share)
    assert min(c["nbytes"] for c in results["buffer"]["classes"].values()) > share / 2
    assert abs(results["final_accuracy"] - one_process["final_accuracy"]) <= ACCURACY_TOLERANCE, (
        results["final_accuracy"], one_process["final_accuracy"])
    assert results["accuracy_matrix"][0][0] > 50 and one_process["accuracy_matrix"][0][0] > 50


def test_per_class_accuracies_are_gathered_over_the_ranks(launch):
    results = json.loads((launch["out"] / "results" / RESULTS).read_text())
    order = results["class_order"]
    for t, (row, per_class) in enumerate(zip(results["accuracy_matrix"], results["class_accuracy_matrix"], strict=True)):
        assert sorted(map(int, per_class)) == sorted(order[: 3 * (t + 1)])
        # 5 test images in every class: an experience's accuracy is the mean of its classes'
        for j in range(t + 1):
            classes = order[3 * j: 3 * (j + 1)]
            assert sum(per_class[str(c)] for c in classes) / 3 == pytest.approx(row[j])


def test_scoring_is_sharded_by_batch_and_gathered_bit_identical_to_one_process(launch):
    first, second = launch["ranks"]
    assert first["batch_shard"] == [0, 1, 2, 6, 7, 8] and second["batch_shard"] == [3, 4, 5, 9, 10]
    assert first["scores_equal_one_process"] and second["scores_equal_one_process"]
    assert first["buffer_sha256"] == second["buffer_sha256"]


def test_current_data_encoded_once_an_experience_are_sharded_and_gathered_identical_to_one_process(launch):
    first, second = launch["ranks"]
    assert first["through_codec_records_equal_one_process"] and second["through_codec_records_equal_one_process"]


def test_training_data_is_split_between_the_ranks_and_the_model_is_ddp_while_training(launch):
    first, second = launch["ranks"]
    assert len(first["train_seen"]) == len(second["train_seen"]) == first["train_size"] // 2
    both = Counter(map(tuple, first["train_seen"] + second["train_seen"]))
    assert both == Counter(map(tuple, first["train_checksums"]))
    assert first["trained_as"] == second["trained_as"] == ["DistributedDataParallel"]
    assert first["unwrapped_after_training"] and second["unwrapped_after_training"]


def test_each_epochs_order_depends_on_the_seed_and_the_epoch_and_is_split_between_the_ranks(launch):
    """Avalanche's loaders alone shuffle every epoch alike (seed 0, epoch 0), whatever the run's seed."""
    first, second = launch["ranks"]
    orders = {seed: [first["epoch_orders"][seed][epoch] + second["epoch_orders"][seed][epoch] for epoch in (0, 1)]
              for seed in ("0", "1")}
    for seed, (epoch0, epoch1) in orders.items():
        assert Counter(map(tuple, epoch0)) == Counter(map(tuple, epoch1)) == Counter(map(tuple, first["train_checksums"])), seed
        assert first["epoch_orders"][seed][0] != first["epoch_orders"][seed][1], seed
        assert second["epoch_orders"][seed][0] != second["epoch_orders"][seed][1], seed
    assert orders["0"][0] != orders["1"][0] and orders["0"][1] != orders["1"][1]


def test_evaluation_is_split_without_padding_and_accuracy_is_gathered(launch):
    first, second = launch["ranks"]
    assert first["test_size"] % 2 == 1  # DistributedSampler would pad one sample
    assert len(first["eval_seen"]) + len(second["eval_seen"]) == first["test_size"]
    assert not set(map(tuple, first["eval_seen"])) & set(map(tuple, second["eval_seen"]))
    assert first["gathered_accuracy"] == second["gathered_accuracy"] == pytest.approx(first["whole_test_accuracy"])


def test_captions_are_shared_among_ranks_resumed_and_merged_once(launch):
    from avalanche_exmask.captions.generate import list_images, part_paths

    first, second = launch["ranks"]
    images = list_images(launch["out"] / "images")
    captions = launch["out"] / "captions.jsonl"
    lines = [json.loads(line) for line in captions.read_text().splitlines()]
    assert [line["image"] for line in lines] == sorted(images)  # one merged file, image order, each once
    assert part_paths(captions) == []
    # images[0] came from the interrupted launch's part file; its torn line's image is captioned again
    assert lines[[line["image"] for line in lines].index(images[0])]["text"] == "a cat"
    assert not set(first["captioned"]) & set(second["captioned"])
    assert sorted(first["captioned"] + second["captioned"]) == sorted(images[1:])
    assert abs(len(first["captioned"]) - len(second["captioned"])) <= 1


# ------------------------------------------------------------------ one process, no process group
def test_the_models_methods_are_reached_through_a_wrapper():
    from conftest import random_batch

    from avalanche_exmask.distributed import batch_shard, gather_shards, unwrap_model
    from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
    from avalanche_exmask.storage.buffer import MaskedExemplarBuffer, default_scorer
    from avalanche_exmask.training.codec_augmentation import through_codec
    from avalanche_exmask.training.strategy import ExemplarMasking
    from avalanche_exmask.training.weight_aligning import _linear_head

    torch.manual_seed(0)
    model = MultimodalCLIPClassifier(pretrained=None)
    wrapped = torch.nn.DataParallel(torch.nn.DataParallel(model))  # what DDP looks like from outside: .module
    assert not hasattr(wrapped, "patch_size") and unwrap_model(wrapped) is model
    strategy = ExemplarMasking(model=wrapped, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), mem_size=10**6)
    assert strategy.buffer.codec.patch_size == model.patch_size
    batch = random_batch(3)
    labels = torch.tensor([0, 1, 0])
    assert torch.equal(through_codec(wrapped, strategy.buffer.codec, batch, labels).image,
                       through_codec(model, strategy.buffer.codec, batch, labels).image)
    assert _linear_head(wrapped) is _linear_head(model)
    candidates = [(batch[i], int(labels[i])) for i in range(3)]
    scores, got = MaskedExemplarBuffer(max_size=10**6)._score(wrapped, candidates, "cpu")
    expected, _ = default_scorer(model, candidates, "cpu", 64)
    assert torch.equal(scores.embedding, expected.embedding) and torch.equal(got, labels)
    assert batch_shard(5, 2) == [0, 1, 2, 3, 4] and gather_shards(labels, [0, 1, 2], 3) is labels


def test_a_global_batch_that_does_not_split_among_the_processes_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from avalanche_exmask import distributed
    from avalanche_exmask.__main__ import main

    config = tmp_path / "tiny.yaml"
    shutil.copy(CONFIG, config)
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(SystemExit, match=r"train.batch_size=8 is the global batch and must be a multiple of the 3 processes"):
        main(["run", str(config), "--out", str(tmp_path / "out")])
    assert not distributed.is_distributed() and not (tmp_path / "out").exists()
