"""The buffer update's candidate reader: one pool of loader workers for all of an update's classes."""
from __future__ import annotations

import multiprocessing
import os

import pytest
import torch
from conftest import PidLoggingDataset
from torch.utils.data import Dataset

from avalanche_exmask.storage.candidate_reader import CandidateReader


class _WhoReads(Dataset):
    """Item ``i`` is ``(i, pid of the process that read it)``."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> tuple[int, int]:
        return index, os.getpid()


def test_reads_every_class_in_order_with_one_pool_of_workers():
    classes = [[0, 3, 5], [1, 2], [11, 7, 4, 9], [6]]
    with CandidateReader(_WhoReads(), num_workers=2) as reader:
        items = [reader.read(indices) for indices in classes]
    assert [[index for index, _ in group] for group in items] == classes
    worker_pids = {pid for group in items[:3] for _, pid in group}
    # one pool of 2 workers served the three classes (a loader per class would start 6 processes)
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    assert items[3] == [(6, os.getpid())]  # a single candidate is read here, as without workers


def test_without_workers_reads_here():
    reader = CandidateReader(_WhoReads(), num_workers=0)
    assert reader.read([4, 2]) == [(4, os.getpid()), (2, os.getpid())]


def test_leaves_the_global_random_stream_a_loader_per_class_would_leave():
    torch.manual_seed(3)
    with CandidateReader(_WhoReads(), num_workers=1) as reader:
        for indices in ([0, 1], [2], [3, 4, 5], [6, 7]):
            reader.read(indices)
    after_reads = torch.get_rng_state()
    torch.manual_seed(3)
    for _ in range(3):  # the three reads in workers; the single-item read draws nothing
        torch.empty((), dtype=torch.int64).random_()
    assert torch.equal(after_reads, torch.get_rng_state())


def test_close_stops_the_workers():
    before = set(multiprocessing.active_children())
    reader = CandidateReader(_WhoReads(), num_workers=2)
    reader.read([0, 1, 2])
    assert len(set(multiprocessing.active_children()) - before) == 2
    reader.close()
    assert set(multiprocessing.active_children()) - before == set()


def test_refuses_a_negative_worker_count():
    with pytest.raises(ValueError, match="num_workers must be >= 0; got -1"):
        CandidateReader(_WhoReads(), num_workers=-1)


def test_a_buffer_update_starts_its_readers_once_and_stores_what_it_stores_without_them(tmp_path):
    from types import SimpleNamespace

    from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal
    from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
    from avalanche_exmask.storage.budget import budget_from_samples_per_class
    from avalanche_exmask.storage.buffer import ByteBudgetBuffer
    from avalanche_exmask.storage.codecs import MaskedCodec

    benchmark = synthetic_multimodal(n_classes=3, n_experiences=1, train_per_class=3, test_per_class=1, seed=0)
    torch.manual_seed(0)
    model = MultimodalCLIPClassifier(pretrained=None).eval()
    budget = budget_from_samples_per_class(2, 3, model.image_size, model.context_length)
    digests, pids = [], []
    for workers in (2, 0):
        log = tmp_path / f"reads-{workers}.txt"
        experience = SimpleNamespace(dataset=PidLoggingDataset(benchmark.train_stream[0].dataset.eval(), log))
        buffer = ByteBudgetBuffer(max_size=budget, codec=MaskedCodec(), mode="per_class", total_num_classes=3)
        buffer.update(SimpleNamespace(model=model, device="cpu", experience=experience), num_workers=workers)
        digests.append(buffer.content_sha256())
        pids.append(log.read_text().split())
    assert len(pids[0]) == len(pids[1]) == 9  # every candidate read once
    assert len(set(pids[0])) == 2 and str(os.getpid()) not in pids[0]  # one pool of 2 workers for 3 classes
    assert set(pids[1]) == {str(os.getpid())}
    assert digests[0] == digests[1] and sum(buffer.exemplars_per_class().values()) >= 3
