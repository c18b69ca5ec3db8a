"""Several processes (``torchrun``), through Avalanche's :data:`~avalanche.distributed.DistributedHelper`.

Avalanche 0.6 runs data-parallel training on PyTorch's ``DistributedDataParallel`` (DDP): its
``DistributedHelper`` starts the process group (``init_distributed``), wraps a model in DDP
(``wrap_model``), and its data loaders give each rank a ``DistributedSampler`` shard. This module
holds the few pieces the package adds on top, each used wherever the package needs it:

* :func:`unwrap_model`: the model itself behind a DDP (or ``DataParallel``) wrapper, so that its
  own methods and attributes (``patch_size``, ``masking_scores``, ``embed``, ``adapter``, ...) are
  reached the same way in one process and in several;
* :func:`init_distributed` / :func:`wrap_model`: the helper's, with the device of each rank taken
  from ``LOCAL_RANK`` (Avalanche 0.6 puts rank ``r`` on ``cuda:r``, which only exists on one node);
* :func:`batch_shard` and :func:`gather_shards`: work on a list split by whole batches, one rank a
  batch in turn, and the results put back in list order on every rank (a batch is computed exactly
  as in one process, so gathered scores are bit-identical to a single-process run's);
* :func:`all_reduce_sum`, :func:`rank_aligned_rng`: counts summed over ranks; a section whose work
  depends on the rank run without moving the ranks' global random states apart.

Nothing here does anything in a single process: every function returns its input (or the
single-process answer) when no process group is initialised.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from avalanche.distributed import DistributedHelper
from avalanche.distributed.distributed_helper import RollingSeedContext

__all__ = [
    "unwrap_model",
    "is_distributed",
    "rank",
    "world_size",
    "is_main_process",
    "launched_by_torchrun",
    "init_distributed",
    "local_device",
    "wrap_model",
    "barrier",
    "batch_shard",
    "gather_shards",
    "all_reduce_sum",
    "rank_aligned_rng",
    "gather_objects",
    "check_same_on_all_ranks",
    "close_distributed",
]


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model behind DDP / ``DataParallel`` wrappers (``model`` itself when not wrapped).

    Every place of the package that calls a method or reads an attribute of the model that is not
    ``forward`` goes through this, so a strategy whose model is wrapped for distributed training
    behaves as one whose model is not.
    """
    while isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        model = model.module
    return model


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return DistributedHelper.is_distributed and DistributedHelper.world_size > 1


def rank() -> int:
    """This process's rank (0 in a single process)."""
    return DistributedHelper.rank


def world_size() -> int:
    """The number of processes (1 in a single process)."""
    return DistributedHelper.world_size


def is_main_process() -> bool:
    """Whether this is rank 0 (always, in a single process): the one that writes files."""
    return DistributedHelper.is_main_process


def launched_by_torchrun() -> bool:
    """Whether the environment of ``torchrun`` (or another launcher setting ``LOCAL_RANK``,
    ``RANK`` and ``WORLD_SIZE``) is present."""
    return all(name in os.environ for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE"))


def local_device(device: str) -> torch.device:
    """The device of this rank: ``cuda`` (or ``cuda:k``) becomes ``cuda:LOCAL_RANK`` under a
    launcher (one GPU per process); anything else is returned as given."""
    parsed = torch.device(device)
    if parsed.type == "cuda" and launched_by_torchrun():
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return parsed


def init_distributed(seed: int, *, device: str = "cpu", backend: str | None = None) -> torch.device:
    """Start the process group from the launcher's environment with Avalanche's helper (a group
    already started is kept: only the device is returned).

    :param seed: seeds torch, NumPy and Python's ``random`` on every rank (the helper's
        ``set_random_seeds``), so the ranks start alike.
    :param device: ``cpu`` or ``cuda``: each rank then uses ``cuda:LOCAL_RANK``.
    :param backend: ``gloo``, ``nccl`` or ``None`` (``nccl`` on CUDA, ``gloo`` on the CPU).
    :return: this rank's device.
    :raises RuntimeError: outside a launcher (no ``LOCAL_RANK`` / ``RANK`` / ``WORLD_SIZE``), or
        for ``nccl`` without CUDA.
    """
    if not launched_by_torchrun():
        raise RuntimeError("init_distributed needs the environment of torchrun (LOCAL_RANK, RANK, WORLD_SIZE)")
    target = local_device(device)
    if DistributedHelper.is_distributed:
        return target
    use_cuda = target.type == "cuda"
    backend = backend or ("nccl" if use_cuda else "gloo")
    if backend == "nccl" and not use_cuda:
        raise RuntimeError("backend 'nccl' needs device 'cuda'; use backend 'gloo' on the CPU")
    if use_cuda:
        torch.cuda.set_device(target)
    if use_cuda and target.index != int(os.environ["RANK"]):
        # Avalanche 0.6 sets rank r's device to cuda:r (one node only): start the group here and
        # let the helper read it (its rank, world size and collectives read torch.distributed).
        torch.distributed.init_process_group(backend=backend)
        DistributedHelper.set_random_seeds(seed)
        DistributedHelper.use_cuda = True
    else:
        DistributedHelper.init_distributed(random_seed=seed, backend=backend, use_cuda=use_cuda)
    return target


def close_distributed() -> None:
    """Leave the process group (nothing when none was started)."""
    if DistributedHelper.is_distributed:
        torch.distributed.destroy_process_group()


def wrap_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` (unwrapped first) in DDP on ``device`` when distributed, else ``model`` itself.

    Avalanche's ``DistributedHelper.wrap_model`` does it (DDP with ``find_unused_parameters``),
    except on a GPU whose index is not the global rank (ranks of a second node), where DDP is given
    ``device`` itself.
    """
    model = unwrap_model(model)
    if not is_distributed():
        return model
    if device.type == "cuda" and device.index != rank():
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device], find_unused_parameters=True)
    return DistributedHelper.wrap_model(model)


def barrier() -> None:
    """Wait for every rank (nothing in a single process)."""
    DistributedHelper.barrier()


def batch_shard(n_items: int, batch_size: int) -> list[int]:
    """Indices of this rank's items of a list of ``n_items`` cut into batches of ``batch_size``:
    batch ``b`` goes to rank ``b mod world_size``. All indices in one process."""
    if not is_distributed():
        return list(range(n_items))
    starts = range(rank() * batch_size, n_items, world_size() * batch_size)
    return [index for start in starts for index in range(start, min(start + batch_size, n_items))]


def gather_shards(local: Any, indices: Sequence[int], n_items: int) -> Any:
    """Every rank's results, in item order, on every rank.

    :param local: this rank's results for ``indices``: a list (of picklable objects), or anything
        ``torch.cat`` joins and a long tensor indexes (a tensor, a tensorclass); ``None`` when
        ``indices`` is empty.
    :param indices: the items ``local`` holds (:func:`batch_shard`).
    :param n_items: the length of the whole list.
    :return: the results of all ``n_items`` in order (``local`` itself in one process).
    """
    if not is_distributed():
        return local
    shards = DistributedHelper.gather_all_objects((list(indices), local))
    order = [index for shard_indices, _ in shards for index in shard_indices]
    if sorted(order) != list(range(n_items)):
        raise RuntimeError(f"the ranks' shards cover {len(order)} items, not each of the {n_items} once")
    pieces = [values for shard_indices, values in shards if shard_indices]
    position = torch.empty(n_items, dtype=torch.long)
    position[torch.as_tensor(order, dtype=torch.long)] = torch.arange(n_items)
    if isinstance(pieces[0], list):
        joined_list = [value for piece in pieces for value in piece]
        return [joined_list[index] for index in position.tolist()]
    return torch.cat(pieces)[position]


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """``values`` summed over ranks (float64; the values themselves in one process)."""
    if not is_distributed():
        return [float(value) for value in values]
    tensor = torch.tensor([float(value) for value in values], dtype=torch.float64)
    if DistributedHelper.forced_cuda_comm:
        tensor = tensor.cuda()
    torch.distributed.all_reduce(tensor)
    return tensor.cpu().tolist()


@contextlib.contextmanager
def rank_aligned_rng() -> Iterator[None]:
    """Run a section whose work differs between ranks (e.g. a shard of a scoring pass, which
    builds a data loader only where the shard is not empty) without letting it move the global
    random states apart: Avalanche's ``RollingSeedContext`` restores them afterwards and steps
    them once, identically on every rank. Nothing is done in a single process."""
    if not is_distributed():
        yield
        return
    with RollingSeedContext():
        yield


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order, on every rank (``[value]`` in one process)."""
    if not is_distributed():
        return [value]
    return DistributedHelper.gather_all_objects(value)


def check_same_on_all_ranks(value: Any, what: str) -> None:
    """Raise if ``value`` (comparable, picklable) differs between ranks.

    :raises RuntimeError: naming ``what`` and the values.
    """
    values = gather_objects(value)
    if any(other != values[0] for other in values):
        raise RuntimeError(f"{what} differs between ranks: {values}")
