"""L2P, DualPrompt and EASE on a frozen multimodal CLIP, as Avalanche ``SupervisedTemplate`` strategies.

No replay and no task labels at test time: prompts (L2P), E-prompts (DualPrompt) and subspaces
(EASE) are chosen from the sample alone. Training follows Avalanche's ``LearningToPrompt``:

* logits of classes outside the current experience are set to ``-inf`` while training
  (``mask_old_logits``; Avalanche's ``use_mask``), so old head rows get no gradient;
* the optimizer's state is reset at every experience (Avalanche's L2P builds a new optimizer
  each experience), so no stale momentum moves a parameter that gets no gradient (give it no
  weight decay, as the runner does: decoupled decay would still shrink the old classes' rows);
* the loss adds the key-matching (surrogate) term, ``- key_coefficient x key_similarity``.

Models: :class:`~avalanche_exmask.models.l2p.L2PCLIP`, :class:`~avalanche_exmask.models.dualprompt.DualPromptCLIP`,
:class:`~avalanche_exmask.models.ease.EASECLIP` (see their docstrings for the two-tower mapping and
what Avalanche's ``LearningToPrompt`` could and could not give). Checkpoints: the models' state
(prompts, keys, adapters, prototypes and counters are parameters or buffers) round-trips through
:func:`avalanche_exmask.checkpoint.save_strategy_checkpoint` like any strategy's.
"""
from __future__ import annotations

from typing import Any

import torch
from avalanche.training.templates import SupervisedTemplate

from avalanche_exmask.models.dualprompt import DualPromptCLIP
from avalanche_exmask.models.ease import EASECLIP
from avalanche_exmask.models.l2p import L2PCLIP

__all__ = ["FrozenBackboneTemplate", "LearningToPromptCLIP", "DualPromptStrategy", "EASEStrategy"]


class FrozenBackboneTemplate(SupervisedTemplate):
    """Shared training rules of the three methods (see the module docstring).

    :param model: an :class:`L2PCLIP`, :class:`DualPromptCLIP` or :class:`EASECLIP`.
    :param mask_old_logits: mask the logits of classes outside the current experience in training.
    :param key_coefficient: weight of the key-matching term (0 for methods without keys).
    Other keyword arguments go to Avalanche's ``SupervisedTemplate``.
    """

    def __init__(self, *, model: torch.nn.Module, mask_old_logits: bool = True, key_coefficient: float = 0.0, **kwargs: Any) -> None:
        super().__init__(model=model, **kwargs)
        self.mask_old_logits = mask_old_logits
        self.key_coefficient = key_coefficient
        self.key_similarity: torch.Tensor | None = None

    def make_optimizer(self, reset_optimizer_state: bool = False, **kwargs: Any) -> None:
        """Avalanche's ``make_optimizer`` with the state always reset."""
        super().make_optimizer(reset_optimizer_state=True, **kwargs)

    def model_adaptation(self, model=None):
        """Avalanche's adaptation (the head grows), then the model starts the experience."""
        model = super().model_adaptation(model)
        if hasattr(model, "start_task"):
            model.start_task(int(self.experience.current_experience))
        return model

    def _training_logits(self) -> torch.Tensor:
        """Logits ``[B, C]`` of the current mini-batch in training (sets ``key_similarity``)."""
        self.key_similarity = None
        return self.model(self.mb_x)

    def forward(self) -> torch.Tensor:
        if not self.is_training:
            return self.model(self.mb_x)
        logits = self._training_logits()
        if self.mask_old_logits:
            current = torch.as_tensor(sorted(self.experience.classes_in_this_experience), device=logits.device)
            keep = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
            keep[current[current < logits.shape[1]]] = True
            logits = logits.masked_fill(~keep, float("-inf"))
        return logits

    def criterion(self) -> torch.Tensor:
        loss = self._criterion(self.mb_output, self.mb_y)
        if self.is_training and self.key_similarity is not None:
            loss = loss - self.key_coefficient * self.key_similarity
        return loss


class LearningToPromptCLIP(FrozenBackboneTemplate):
    """L2P on the multimodal CLIP (Avalanche's ``LearningToPrompt`` for :class:`L2PCLIP`).

    :param model: an :class:`L2PCLIP`.
    :param key_coefficient: weight of the surrogate loss (Avalanche's ``sim_coefficient``; L2P: 0.1).
    """

    def __init__(self, *, model: L2PCLIP, key_coefficient: float = 0.1, **kwargs: Any) -> None:
        if not isinstance(model, L2PCLIP):
            raise TypeError(f"LearningToPromptCLIP needs an L2PCLIP model; got {type(model).__name__}")
        super().__init__(model=model, key_coefficient=key_coefficient, **kwargs)

    def _training_logits(self) -> torch.Tensor:
        output = self.model.forward_prompted(self.mb_x)
        self.key_similarity = output.key_similarity
        return output.logits


class DualPromptStrategy(FrozenBackboneTemplate):
    """DualPrompt on the multimodal CLIP: training uses the current experience's E-prompt (the task
    identity of the *training* data, which class-incremental learning gives), tests choose by key.

    :param model: a :class:`DualPromptCLIP`.
    :param key_coefficient: weight of the key-matching loss (DualPrompt: 1).
    """

    def __init__(self, *, model: DualPromptCLIP, key_coefficient: float = 1.0, **kwargs: Any) -> None:
        if not isinstance(model, DualPromptCLIP):
            raise TypeError(f"DualPromptStrategy needs a DualPromptCLIP model; got {type(model).__name__}")
        super().__init__(model=model, key_coefficient=key_coefficient, **kwargs)

    def _training_logits(self) -> torch.Tensor:
        output = self.model.forward_prompted(self.mb_x, task=int(self.experience.current_experience))
        self.key_similarity = output.key_similarity
        return output.logits


class EASEStrategy(FrozenBackboneTemplate):
    """EASE on the multimodal CLIP: after each experience, the prototypes of its classes in every
    subspace and the completed prototypes of the old classes (:meth:`EASECLIP.update_prototypes`),
    from the experience's training data in evaluation mode.

    :param model: an :class:`EASECLIP`.
    """

    def __init__(self, *, model: EASECLIP, **kwargs: Any) -> None:
        if not isinstance(model, EASECLIP):
            raise TypeError(f"EASEStrategy needs an EASECLIP model; got {type(model).__name__}")
        super().__init__(model=model, key_coefficient=0.0, **kwargs)

    def _after_training_exp(self, **kwargs: Any) -> None:
        from torch.utils.data import DataLoader

        dataset = self.experience.dataset.eval()
        loader = DataLoader(dataset, batch_size=self.eval_mb_size, shuffle=False)
        batches = ((batch[0].to(self.device), batch[1]) for batch in loader)
        self.model.update_prototypes(batches, int(self.experience.current_experience))
        super()._after_training_exp(**kwargs)
