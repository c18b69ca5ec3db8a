"""The benchmark generators a run config can name, looked up by name and imported on first use.

``benchmark.name`` in a :class:`~avalanche_exmask.config.RunConfig` is a key of
:data:`GENERATORS`; the config validation checks ``benchmark.args`` against the generator's
signature (:func:`avalanche_exmask.run_checks.check_benchmark_args`) and the runner calls it
(:func:`avalanche_exmask.experiment.build_benchmark`).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

__all__ = ["GENERATORS", "generator"]

#: Benchmark name -> (module, function) of its generator.
GENERATORS: dict[str, tuple[str, str]] = {
    "synthetic": ("avalanche_exmask.benchmarks.synthetic", "synthetic_multimodal"),
    "clipart": ("avalanche_exmask.benchmarks.clipart", "clipart"),
    "image_text_folder": ("avalanche_exmask.benchmarks.image_text_folder", "image_text_folder"),
    "mm_imagenet_r": ("avalanche_exmask.benchmarks.mm_imagenet_r", "mm_imagenet_r"),
    "upmc_food101": ("avalanche_exmask.benchmarks.upmc_food101", "upmc_food101"),
}


def generator(name: str) -> Callable:
    """The generator function of benchmark ``name`` (its module imported now).

    :raises KeyError: for a name not in :data:`GENERATORS`.
    """
    module, function = GENERATORS[name]
    return getattr(importlib.import_module(module), function)
