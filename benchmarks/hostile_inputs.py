"""Figures of issue 26: how fast hostile configs are refused, and what refusing a sparse oversized
checkpoint costs in memory.

Prints, for each config of ``tests/test_config.py``'s ``HOSTILE`` list, the time ``load_runs``
takes to refuse it in a process that has imported the packages once (milliseconds) and the
message; then builds a tiny trained checkpoint, rewrites it to declare a 3 GiB buffer payload (a
sparse file) and prints the peak resident growth while loading it is refused, against the
model's state (bytes, read from ``/proc/self/status`` after resetting the peak).

Usage::

    PYTHONPATH=. python benchmarks/hostile_inputs.py
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def refusal_times(folder: Path) -> None:
    """Print the time to refuse each hostile config, warm."""
    from test_config import HOSTILE

    from avalanche_exmask.config import ConfigError, load_runs

    (folder / "warm.yaml").write_text("method: masking\n")
    load_runs(folder / "warm.yaml")
    for k, (text, _) in enumerate(HOSTILE):
        path = folder / f"hostile{k}.yaml"
        path.write_text("method: masking\n" + text)
        start = time.perf_counter()
        try:
            load_runs(path)
            print(f"ACCEPTED  {text[:60]!r}")
        except ConfigError as error:
            message = str(error).split(": ", 1)[1]
            print(f"{1000 * (time.perf_counter() - start):7.1f} ms  {message[:100]}")


def sparse_refusal(folder: Path) -> None:
    """Print the peak resident growth while a 3 GiB sparse checkpoint is refused."""
    import test_checkpoint as helpers

    from avalanche_exmask.checkpoint import CheckpointError, load_strategy_checkpoint, save_strategy_checkpoint

    strategy = helpers._strategy(seed=0)
    benchmark = helpers.synthetic_multimodal(n_classes=4, n_experiences=2, train_per_class=8, test_per_class=3, seed=3)
    strategy.train(benchmark.train_stream[0])
    save_strategy_checkpoint(folder / "whole.safetensors", strategy)
    helpers._sparse_copy(folder / "whole.safetensors", folder / "sparse.safetensors", "buffer/payload", "U8", [3 * 2**30])
    fresh = helpers._strategy(seed=1)
    model_nbytes = sum(t.numel() * t.element_size() for t in fresh.model.state_dict().values())
    if not helpers._peak_rss_reset():
        print("cannot reset the peak resident size here (/proc/self/clear_refs)")
        return
    before = helpers._rss_kib("VmRSS")
    try:
        load_strategy_checkpoint(folder / "sparse.safetensors", fresh)
        print("ACCEPTED the sparse checkpoint")
    except CheckpointError as error:
        print("refused:", str(error).split(": ", 1)[1])
    growth = (helpers._rss_kib("VmHWM") - before) * 1024
    size = (folder / "sparse.safetensors").stat().st_size
    print(f"file {size} bytes (sparse); model state {model_nbytes} bytes; peak growth while refusing "
          f"{growth} bytes = {growth / model_nbytes:.3f} x the model's state")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        refusal_times(Path(scratch))
        sparse_refusal(Path(scratch))
