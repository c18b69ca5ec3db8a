"""The built-in benchmarks a run config can name, registered in
:data:`~avalanche_exmask.registry.BENCHMARKS` by where their generators live (imported on first use).

``benchmark.name`` in a :class:`~avalanche_exmask.config.RunConfig` is a registered name; the config
validation checks ``benchmark.args`` against the generator's signature
(:func:`avalanche_exmask.run_checks.check_benchmark_args`) and the runner calls it
(:func:`avalanche_exmask.experiment_build.build_benchmark`). A new benchmark is one registration::

    BENCHMARKS.register("mine")(BenchmarkSpec.of(my_generator))
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from avalanche_exmask.registry import BENCHMARKS, BenchmarkSpec

__all__ = ["generator"]

for _name, _module, _function in (
    ("synthetic", "avalanche_exmask.benchmarks.synthetic", "synthetic_multimodal"),
    ("clipart", "avalanche_exmask.benchmarks.clipart", "clipart"),
    ("image_text_folder", "avalanche_exmask.benchmarks.image_text_folder", "image_text_folder"),
    ("mm_imagenet_r", "avalanche_exmask.benchmarks.mm_imagenet_r", "mm_imagenet_r"),
    ("upmc_food101", "avalanche_exmask.benchmarks.upmc_food101", "upmc_food101"),
):
    BENCHMARKS.register(_name)(BenchmarkSpec(_module, _function))


def generator(name: str) -> Callable[..., Any]:
    """The generator function of benchmark ``name`` (its module imported now).

    :raises KeyError: naming the registered benchmarks, for an unknown name.
    """
    return BENCHMARKS.get(name).generator()
