"""Shared fixtures: a tiny randomly initialised model and random batches (no downloads)."""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import pytest
import torch

from avalanche_exmask.data.sample import MultimodalSample

logging.getLogger().setLevel(logging.ERROR)  # open_clip warns on random init
torch.set_num_threads(2)


class PidLoggingDataset(torch.utils.data.Dataset):
    """``items`` as they are, each read appending the reading process's pid to the file ``log``
    (one line a read): which processes read what, for tests of loader workers."""

    def __init__(self, items, log: Path | str) -> None:
        self.items, self.log = items, log
        self.targets = list(getattr(items, "targets", []))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        with open(self.log, "a") as log:
            log.write(f"{os.getpid()}\n")
        return self.items[index]


def random_batch(batch: int = 4, image_size: int = 64, context_length: int = 32, seed: int = 0) -> MultimodalSample:
    """A batch of random images and token sequences (start, 3-10 words, end, zero padding)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8, generator=generator)
    ids = torch.zeros(batch, context_length, dtype=torch.long)
    for row in range(batch):
        n_words = int(torch.randint(3, 11, (1,), generator=generator))
        ids[row, 0] = 49406
        ids[row, 1 : 1 + n_words] = torch.randint(300, 40000, (n_words,), generator=generator)
        ids[row, 1 + n_words] = 49407
    return MultimodalSample(image=images, input_ids=ids, batch_size=[batch])


@pytest.fixture
def batch() -> MultimodalSample:
    return random_batch()


RUN_STUDY_SCRIPT = Path(__file__).parent.parent / "benchmarks" / "run_study.py"


@pytest.fixture(scope="session")
def run_study():
    """``benchmarks/run_study.py`` imported as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("run_study", RUN_STUDY_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
