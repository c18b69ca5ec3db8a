"""Wall time of the masking buffer update with loader workers: one pool of workers per class, or one
for the whole update (:class:`~avalanche_exmask.storage.candidate_reader.CandidateReader`).

JPEGs of a realistic size (500 x 375) are written in MM-ImageNet-R's layout (``scale.py``'s
writer), read by :func:`~avalanche_exmask.benchmarks.mm_imagenet_r.mm_imagenet_r` at 224 px, and
the first experience's classes go through ``ByteBudgetBuffer.update`` (reading, scoring pass,
herding, masked encoding) with the tiny towers at 224 px (16-px patches, random weights) and
``--workers`` loader workers. The two readings alternate, ``--repeats`` times each, so they meet
the same load; both store byte-identical buffers (checked). Only the ratio is meaningful on a shared
machine::

    OMP_NUM_THREADS=1 python benchmarks/update_readers.py --out results/overhead/update-readers-cpu.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import register_tiny_224  # noqa: E402
from scale import write_imagenet_r  # noqa: E402

from avalanche_exmask.benchmarks.mm_imagenet_r import mm_imagenet_r  # noqa: E402
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier  # noqa: E402
from avalanche_exmask.storage import candidate_reader  # noqa: E402
from avalanche_exmask.storage.budget import budget_from_samples_per_class  # noqa: E402
from avalanche_exmask.storage.buffer import ByteBudgetBuffer  # noqa: E402
from avalanche_exmask.storage.codecs import MaskedCodec  # noqa: E402


class PoolPerClassReader(candidate_reader.CandidateReader):
    """Starts a new pool of workers for every class (what a DataLoader per class does)."""

    def read(self, indices: list[int]) -> list:
        items = super().read(indices)
        self.close()
        return items


def timed_update(benchmark, model, budget: int, classes: int, workers: int, reader: type) -> tuple[float, str]:
    """Seconds of one update of a fresh buffer over the first experience, and its content digest."""
    original = candidate_reader.CandidateReader
    buffer_module = sys.modules[ByteBudgetBuffer.__module__]
    buffer_module.CandidateReader = reader  # type: ignore[attr-defined]
    try:
        buffer = ByteBudgetBuffer(max_size=budget, codec=MaskedCodec(patch_size=16), mode="per_class", total_num_classes=classes)
        strategy = SimpleNamespace(model=model, device="cpu", experience=benchmark.train_stream[0])
        start = time.perf_counter()
        buffer.update(strategy, num_workers=workers)
        return time.perf_counter() - start, buffer.content_sha256()
    finally:
        buffer_module.CandidateReader = original  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=40, help="classes on disk (2 experiences: half are updated)")
    parser.add_argument("--per-class", type=int, default=6, help="training images per class on disk")
    parser.add_argument("--workers", type=int, default=2, help="loader workers reading the candidates")
    parser.add_argument("--repeats", type=int, default=3, help="updates per reading, alternating")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = parser.parse_args()
    out: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_imagenet_r(root, args.classes, args.per_class)
        model_name = register_tiny_224(root)
        benchmark = mm_imagenet_r(root, root / "captions.jsonl", n_experiences=2, model_name=model_name, seed=0)
        torch.manual_seed(0)
        model = MultimodalCLIPClassifier(model_name, None, initial_out_features=args.classes).eval()
        budget = budget_from_samples_per_class(2, args.classes, 224, model.context_length)
        readers = {"pool per class": PoolPerClassReader, "one pool per update": candidate_reader.CandidateReader}
        seconds: dict[str, list[float]] = {name: [] for name in readers}
        digests: set[str] = set()
        for _ in range(args.repeats):
            for name, reader in readers.items():
                elapsed, digest = timed_update(benchmark, model, budget, args.classes, args.workers, reader)
                seconds[name].append(elapsed)
                digests.add(digest)
                print(f"{name}: {elapsed:.2f} s", flush=True)
    if len(digests) != 1:
        raise SystemExit(f"the two readings stored different buffers: {sorted(digests)}")
    candidates = len(benchmark.train_stream[0].dataset)
    out["candidates"] = candidates
    out["update_s"] = seconds
    out["median_update_s"] = {name: statistics.median(values) for name, values in seconds.items()}
    out["one_pool_over_pool_per_class"] = out["median_update_s"]["one pool per update"] / out["median_update_s"]["pool per class"]
    print(json.dumps({k: out[k] for k in ("candidates", "median_update_s", "one_pool_over_pool_per_class")}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
