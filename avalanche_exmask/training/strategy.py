"""``ExemplarMasking``: the paper's method as an Avalanche strategy."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch.nn import CrossEntropyLoss, Module
from torch.optim import Optimizer

from avalanche.training.plugins import SupervisedPlugin
from avalanche.training.plugins.evaluation import default_evaluator
from avalanche.training.templates import SupervisedTemplate

from avalanche_exmask.masking.image_mask import ImageMaskRule
from avalanche_exmask.masking.text_mask import TextMaskRule
from avalanche_exmask.storage.buffer import MaskedExemplarBuffer
from avalanche_exmask.storage.codecs import MaskedCodec
from avalanche_exmask.training.augmentation import MultimodalAugmentation
from avalanche_exmask.training.plugin import ExemplarMaskingPlugin

__all__ = ["ExemplarMasking"]


class ExemplarMasking(SupervisedTemplate):
    """Multimodal class-incremental learning with masked exemplar replay (Lee et al., 2024).

    Training is plain fine-tuning of the (SSF-adapted) model on each experience with replay of
    masked exemplars. After each experience, exemplars of its classes are chosen by herding on
    the fused embedding and masked: image patches the [CLS] token ignores are dropped, text
    tokens are kept if class-related or describing the dropped region. One eval forward pass
    gives all the scores. Masked exemplars are stored compactly in a byte budget, so it holds
    about 3x more of them than plain exemplars, and they are replayed with a multimodal
    augmentation.

    :param model: a :class:`~avalanche_exmask.models.MultimodalCLIPClassifier` (or any model with
        ``masking_scores(x) -> MaskingScores`` and a patch size).
    :param optimizer: the optimizer (over the trainable parameters).
    :param mem_size: the replay budget in **bytes**, shared by all classes of the stream
        (:func:`~avalanche_exmask.storage.budget.budget_from_samples_per_class` converts the paper's
        "samples per class").
    :param total_num_classes: classes of the whole stream; given, each class gets a fixed
        ``mem_size // total_num_classes`` bytes (``mode="per_class"``), else the budget is re-divided
        among the classes seen so far (``mode="total"``).
    :param image_rule: which patches to keep (default: the paper's rule, ``>= 1.0 x`` mean attention).
    :param text_rule: which tokens to keep (default: class-related or contextual).
    :param background_downsample: how discarded patches are stored: ``"patch"`` (default: one
        mean colour per patch, 3 bytes), ``None`` (the paper: nothing, decoded black) or ``k``
        (average-pooled ``k x`` per side). See the README's ablation for why the default.
    :param augmentation: augmentation of replayed exemplars, or ``None`` for none (default; the
        README's ablation shows no gain from it on the embedded benchmark).
    :param selection: ``"herding"`` or ``"random"`` exemplar order.
    :param batch_size_mem: replayed exemplars per batch (default: ``train_mb_size``).
    :param seed: seeds selection and augmentation.

    The remaining arguments are those of Avalanche's ``SupervisedTemplate``.
    """

    def __init__(
        self,
        *,
        model: Module,
        optimizer: Optimizer,
        mem_size: int,
        criterion=CrossEntropyLoss(),
        total_num_classes: Optional[int] = None,
        image_rule: ImageMaskRule = ImageMaskRule(),
        text_rule: TextMaskRule = TextMaskRule(),
        background_downsample: Optional[Union[int, str]] = "patch",
        augmentation: Optional[MultimodalAugmentation] = None,
        selection: str = "herding",
        batch_size_mem: Optional[int] = None,
        seed: int = 0,
        train_mb_size: int = 32,
        train_epochs: int = 1,
        eval_mb_size: Optional[int] = 64,
        device: Union[str, torch.device] = "cpu",
        plugins: Optional[Sequence[SupervisedPlugin]] = None,
        evaluator=default_evaluator,
        eval_every: int = -1,
    ) -> None:
        buffer = MaskedExemplarBuffer(
            max_size=mem_size,
            codec=MaskedCodec(
                image_rule=image_rule, text_rule=text_rule, patch_size=int(model.patch_size),
                background_downsample=background_downsample,
            ),
            mode="per_class" if total_num_classes is not None else "total",
            total_num_classes=total_num_classes,
            selection=selection,
            seed=seed,
            augmentation=augmentation,
        )
        self.replay_plugin = ExemplarMaskingPlugin(
            mem_size=mem_size, storage_policy=buffer, batch_size_mem=batch_size_mem
        )
        super().__init__(
            model=model,
            optimizer=optimizer,
            criterion=criterion,
            train_mb_size=train_mb_size,
            train_epochs=train_epochs,
            eval_mb_size=eval_mb_size,
            device=device,
            plugins=[self.replay_plugin, *(plugins or [])],
            evaluator=evaluator,
            eval_every=eval_every,
        )

    @property
    def buffer(self) -> MaskedExemplarBuffer:
        """The masked exemplar buffer (statistics: ``buffer.stats()``)."""
        return self.replay_plugin.storage_policy
