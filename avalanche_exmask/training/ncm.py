"""Nearest-class-mean readout over the stored exemplars (iCaRL's classifier).

Each class is represented by the mean of its stored exemplars' L2-normalised fused embeddings (as
the buffer decodes them, without augmentation); a test sample goes to the class whose normalised
mean is closest in cosine. Unlike the trained head, this readout uses the exemplars directly, so it
shows what the stored exemplars themselves are worth.
"""
from __future__ import annotations

from typing import Any, cast

import torch
from torch.utils.data import DataLoader, Subset

from avalanche_exmask.data.sample import MultimodalSample
from avalanche_exmask.distributed import all_reduce_sum, is_distributed, rank, unwrap_model, world_size
from avalanche_exmask.models.protocols import Embedder

__all__ = ["exemplar_class_means", "ncm_accuracy"]


@torch.no_grad()
def exemplar_class_means(model: torch.nn.Module, buffer: Any, device: Any, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means of the stored exemplars' embeddings.

    :param model: has ``embed(x) -> [B, F]``.
    :param buffer: has ``records`` (label -> list of records) and ``codec.decode``.
    :return: labels long ``[C]`` and unit-norm means float ``[C, F]``.
    """
    model = unwrap_model(model)
    model.eval()
    embedder = cast(Embedder, model)  # the documented contract of ``model`` (see models/protocols.py)
    labels, means = [], []
    for label, records in sorted(buffer.records.items()):
        # torch.stack of decoded MultimodalSamples is a batched MultimodalSample (tensordict's
        # __torch_function__); torch's type hint says Tensor.
        samples = cast(MultimodalSample, torch.stack([buffer.codec.decode(record) for record in records]))
        embeddings = torch.cat(
            [embedder.embed(samples[i : i + batch_size].to(device)).float() for i in range(0, len(samples), batch_size)]
        )
        labels.append(label)
        means.append(torch.nn.functional.normalize(embeddings, dim=1).mean(dim=0))
    return torch.tensor(labels), torch.nn.functional.normalize(torch.stack(means), dim=1)


@torch.no_grad()
def ncm_accuracy(model: torch.nn.Module, buffer: Any, dataset: Any, device: Any, batch_size: int = 128) -> float:
    """Accuracy (%) of the nearest-class-mean readout on ``dataset`` (items ``(x, y, ...)``).

    Under ``torchrun`` each rank reads its ``rank::world_size`` shard and the counts are summed:
    every rank returns the accuracy over the whole ``dataset``.
    """
    model = unwrap_model(model)
    embedder = cast(Embedder, model)  # the documented contract of ``model`` (see models/protocols.py)
    labels, means = exemplar_class_means(model, buffer, device, batch_size)
    means = means.to(device)
    if is_distributed():
        dataset = Subset(dataset, range(rank(), len(dataset), world_size()))
    correct = total = 0.0
    for batch in DataLoader(dataset, batch_size=batch_size):
        x, y = batch[0].to(device), batch[1]
        embeddings = torch.nn.functional.normalize(embedder.embed(x).float(), dim=1)
        predicted = labels[(embeddings @ means.T).argmax(dim=1).cpu()]
        correct += int((predicted == y).sum())
        total += len(y)
    correct, total = all_reduce_sum([correct, total])
    return 100.0 * correct / max(total, 1)
