"""Weight aligning (Zhao et al., CVPR 2020): a bias correction of the classifier head.

After an experience, the head's rows of the new classes are rescaled so that their mean L2 norm
equals that of the old classes' rows: ``w_new <- gamma w_new``, ``b_new <- gamma b_new`` with
``gamma = mean ||w_old|| / mean ||w_new||``. Training on many more new-class samples than replayed
old-class ones makes new rows longer and their logits larger; the rescaling removes that part of
the recency bias without touching the features.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from avalanche.training.plugins import SupervisedPlugin

from avalanche_exmask.distributed import unwrap_model

__all__ = ["align_weights", "WeightAligningPlugin"]


@torch.no_grad()
def align_weights(head: torch.nn.Linear, old_classes: Sequence[int], new_classes: Sequence[int]) -> float:
    """Rescale ``head``'s rows of ``new_classes`` in place (see the module docstring).

    :param head: the linear head, weight ``[C, F]`` (row ``c`` is class ``c``).
    :param old_classes: labels seen before the experience.
    :param new_classes: labels of the experience.
    :return: ``gamma`` (``1.0`` when either group is empty).
    """
    old, new = list(old_classes), list(new_classes)
    if not old or not new:
        return 1.0
    norms = head.weight.norm(dim=1)
    gamma = float(norms[old].mean() / norms[new].mean().clamp(min=1e-12))
    head.weight[new] *= gamma
    if head.bias is not None:
        head.bias[new] *= gamma
    return gamma


def _linear_head(model: torch.nn.Module) -> torch.nn.Linear:
    """The ``nn.Linear`` of a model's head: ``model.classifier``, or its inner ``classifier``
    (Avalanche's ``IncrementalClassifier``); a DDP wrapper is looked through."""
    head = unwrap_model(model).classifier
    head = getattr(head, "classifier", head)
    if not isinstance(head, torch.nn.Linear):
        raise TypeError(f"weight aligning needs a linear head at model.classifier; got {type(head).__name__}")
    return head


# Avalanche is read as Any (follow_imports = "skip"), so mypy checks this class keyword against
# object.__init_subclass__; Avalanche's BasePlugin.__init_subclass__ takes ``supports_distributed``.
class WeightAligningPlugin(SupervisedPlugin, supports_distributed=True):  # type: ignore[call-arg]
    """Applies :func:`align_weights` after every experience that follows the first.

    :ivar gammas: the scale applied after each experience (``1.0`` for the first).
    """

    def __init__(self) -> None:
        super().__init__()
        self._seen: list[int] = []
        self.gammas: list[float] = []

    def after_training_exp(self, strategy, **kwargs) -> None:
        new = sorted(set(int(c) for c in strategy.experience.classes_in_this_experience) - set(self._seen))
        self.gammas.append(align_weights(_linear_head(strategy.model), self._seen, new))
        self._seen.extend(new)
