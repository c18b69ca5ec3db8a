"""The training data order under ``torchrun``, drawn as one process draws it.

In one process, a shuffling loader's ``RandomSampler`` draws a seed from torch's global generator
each time it is iterated (``torch.empty((), dtype=torch.int64).random_()``) and yields the
permutation ``torch.randperm(n, generator=torch.Generator().manual_seed(seed))``: a new order every
epoch, which depends on the run's seed and on everything drawn before. Avalanche 0.6's loaders
(``MultiDatasetDataLoader`` and its subclasses: ``SingleDatasetDataLoader``, ``ReplayDataLoader``,
...) instead build a new ``DistributedSampler`` (seed 0, epoch 0) each time they are iterated
under ``torchrun``: the same order in every epoch, whatever the run's seed.

:func:`draw_like_one_process` gives each new shuffling ``DistributedSampler`` of a loader the seed a
``RandomSampler`` would draw at that point (rank 0's draw, sent to every rank, each rank drawing
as many as rank 0 so that their generators stay together) and epoch 0. Its permutation is then the
very permutation one process would have drawn from the same generator state, and rank ``r`` takes
its positions ``r, r + N, r + 2N, ...`` (the sampler's padding aside): each epoch's order depends
on the run's seed and on the epoch exactly as in one process, and is spread over the ranks.
:func:`order_like_one_process` puts that on a loader, for the samplers it builds each epoch and
for those a loader with persistent workers keeps.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import BatchSampler, DistributedSampler

from avalanche_exmask.distributed import gather_objects

__all__ = ["draw_like_one_process", "order_like_one_process"]

_MARK = "_exmask_orders_like_one_process"


def _shuffling(sampler: Any) -> DistributedSampler | None:
    inner = sampler.sampler if isinstance(sampler, BatchSampler) else sampler
    return inner if isinstance(inner, DistributedSampler) and inner.shuffle else None


def draw_like_one_process(samplers: Sequence[Any]) -> Sequence[Any]:
    """Seed every shuffling ``DistributedSampler`` of ``samplers`` (bare or inside a
    ``BatchSampler``) as a ``RandomSampler`` in its place would seed itself from torch's global
    generator, one draw per sampler in order, with rank 0's draws on every rank; set their epoch
    to 0. Other samplers are left as they are. Returns ``samplers``."""
    shuffling = [sampler for sampler in map(_shuffling, samplers) if sampler is not None]
    drawn = [int(torch.empty((), dtype=torch.int64).random_().item()) for _ in shuffling]
    for sampler, seed in zip(shuffling, gather_objects(drawn)[0], strict=True):
        sampler.seed = seed
        sampler.set_epoch(0)
    return samplers


def order_like_one_process(loader: Any) -> None:
    """Make ``loader`` (an Avalanche ``MultiDatasetDataLoader``) draw its samplers' seeds as one
    process would, every epoch (see the module docstring): the samplers it builds when iterated
    pass through :func:`draw_like_one_process`, and so do those of its persistent-workers loader
    when there is one (call this before each epoch). Calling it again on a loader does not draw twice."""
    if not hasattr(loader, "_create_samplers"):
        return
    persistent = getattr(loader, "_persistent_loader", None)
    if persistent is not None:
        draw_like_one_process(persistent.batch_sampler.samplers)
        return
    create: Callable[..., list] = loader._create_samplers
    if getattr(create, _MARK, False):
        return

    def create_drawn(*args: Any, **kwargs: Any) -> list:
        return list(draw_like_one_process(create(*args, **kwargs)))

    setattr(create_drawn, _MARK, True)
    loader._create_samplers = create_drawn
