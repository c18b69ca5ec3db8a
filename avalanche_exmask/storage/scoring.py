"""Scoring exemplar candidates: the buffer's one eval forward pass, and per-text token importance.

A *scorer* (:data:`Scorer`, by default :func:`default_scorer`) turns a dataset of candidates into
the :class:`~avalanche_exmask.models.outputs.MaskingScores` that selection and the codecs read;
:func:`token_importance` is the text-tower importance a codec asks for only for the candidates
it encodes.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch.utils.data import DataLoader, Dataset

from avalanche_exmask.distributed import unwrap_model
from avalanche_exmask.models.outputs import MaskingScores
from avalanche_exmask.models.protocols import MaskScorer, TokenScorer
from avalanche_exmask.models.train_mode import eval_mode

__all__ = ["Scorer", "default_scorer", "token_importance"]

Scorer = Callable[[torch.nn.Module, Sequence[Any], Any, int], tuple[MaskingScores, torch.Tensor]]
"""``scorer(model, dataset, device, batch_size) -> (MaskingScores [n], labels long [n])``, one
forward pass over a dataset of ``(x, y, t)`` items (the buffer passes a list), in dataset order,
results on the CPU."""


def default_scorer(
    model: torch.nn.Module, dataset: Dataset | Sequence[Any], device: Any, batch_size: int
) -> tuple[MaskingScores, torch.Tensor]:
    """Score ``dataset`` with ``model.masking_scores(x) -> MaskingScores [B]``.

    Runs in eval mode under ``torch.no_grad()`` and restores the model's train/eval mode.

    :return: ``(MaskingScores [n], labels long [n])`` on the CPU (without ``token_importance``:
        the buffer computes it for the encoded candidates only).
    """
    scorer = cast(MaskScorer, model)  # the model's contract (see models/protocols.py)
    scores: list[MaskingScores] = []
    labels: list[torch.Tensor] = []
    with eval_mode(model), torch.no_grad():
        # torch's hint asks for a Dataset; a DataLoader reads any sized, indexable sequence (a list).
        for x, y, *_ in DataLoader(dataset, batch_size=batch_size, shuffle=False):  # type: ignore[arg-type]
            x = x.to(device)
            scores.append(scorer.masking_scores(x).cpu())
            labels.append(torch.as_tensor(y))
    # torch.cat of MaskingScores is a MaskingScores (tensordict's __torch_function__); torch's hint
    # says Tensor.
    return cast(MaskingScores, torch.cat(scores)), torch.cat(labels).long()  # type: ignore[arg-type]


def token_importance(model: torch.nn.Module, input_ids: torch.Tensor, device: Any) -> torch.Tensor:
    """``model.token_importance`` (float ``[T]``, on the CPU) of one text, long ``[T]``, in eval mode.

    Asked for lazily, record by record, as the buffer encodes in selection order: its cost (one
    text-tower pass per content token) is paid only for candidates that are encoded.
    """
    model = unwrap_model(model)
    scorer = cast(TokenScorer, model)  # the model's contract (see models/protocols.py)
    with eval_mode(model), torch.no_grad():  # once per encoded record: the cheap switch
        return scorer.token_importance(input_ids[None].to(device))[0].cpu()
