"""``ExemplarMasking``: the paper's method as an Avalanche strategy."""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, cast

from avalanche.training.templates import SupervisedTemplate
from torch.nn import CrossEntropyLoss, Module
from torch.optim import Optimizer

from avalanche_exmask.distributed import unwrap_model
from avalanche_exmask.models.protocols import Patched
from avalanche_exmask.storage.buffer import MaskedExemplarBuffer
from avalanche_exmask.storage.codecs import MaskedCodec
from avalanche_exmask.training.augmentation import MultimodalAugmentation
from avalanche_exmask.training.codec_augmentation import CurrentScores
from avalanche_exmask.training.plugin import ExemplarMaskingPlugin
from avalanche_exmask.training.replay_stack import byte_budget_replay_plugins

__all__ = ["ExemplarMasking"]


class ExemplarMasking(SupervisedTemplate):
    """Multimodal class-incremental learning with masked exemplar replay (Lee et al., 2024).

    A preset of the byte-budget replay stack
    (:func:`~avalanche_exmask.training.replay_stack.byte_budget_replay_plugins`) over a
    :class:`~avalanche_exmask.storage.buffer.MaskedExemplarBuffer`, the same stack every buffered
    method of the runner gets.

    Training is plain fine-tuning of the (SSF-adapted) model on each experience with replay of
    masked exemplars. After each experience, exemplars of its classes are chosen by herding on
    the fused embedding and masked: image patches the [CLS] token ignores are stored as one mean
    colour each (and, with a text rule, only class words and context tokens are kept). One
    eval forward pass gives all the scores. Masked exemplars are stored compactly in a byte budget,
    so more of them fit than plain exemplars (``buffer.stats()`` reports how many), and they are
    replayed at the rate of the current classes (``memory_batch="class_share"``).

    Under ``torchrun``, add :class:`~avalanche_exmask.training.distributed_plugin.DistributedTrainingPlugin`
    to ``plugins`` and evaluate with
    :func:`~avalanche_exmask.training.distributed_metrics.gathered_accuracy_metrics`: training is
    data-parallel, and every rank holds the same buffer (the scoring pass is shared among the
    ranks, selection and encoding are repeated identically on each; the ranks' SHA-256 digests are
    compared after every update).

    :param model: a :class:`~avalanche_exmask.models.MultimodalCLIPClassifier` (or any model with
        ``masking_scores(x) -> MaskingScores`` and a ``patch_size``), possibly in a DDP wrapper
        (its methods are reached through :func:`~avalanche_exmask.distributed.unwrap_model`).
    :param optimizer: the optimizer (over the trainable parameters).
    :param mem_size: the replay budget in **bytes**, shared by all classes of the stream
        (:func:`~avalanche_exmask.storage.budget.budget_from_samples_per_class` converts the paper's
        "samples per class").
    :param total_num_classes: classes of the whole stream; given, each class gets a fixed
        ``mem_size // total_num_classes`` bytes (``mode="per_class"``), else the budget is re-divided
        among the classes seen so far (``mode="total"``).
    :param codec: how exemplars are stored: a :class:`~avalanche_exmask.storage.codecs.MaskedCodec`
        with its image rule, text rule, background and kept-patch storage (default: ``MaskedCodec()``,
        the paper's image rule and no text mask). Its ``patch_size`` is the model's (left ``None``,
        it is filled in; another value is refused). A text rule that keeps class-name words needs
        ``class_token_ids=class_name_token_ids(class_names, get_tokenizer(model.model_name))``.
    :param augmentation: augmentation of replayed exemplars, or ``None`` (default).
    :param selection: ``"herding"`` or ``"random"`` exemplar order.
    :param memory_batch: ``"class_share"`` (default), ``"class_balanced"`` or ``"fixed"``
        (``batch_size_mem`` replayed exemplars per batch); see
        :class:`~avalanche_exmask.training.plugin.ByteBudgetReplayPlugin`.
    :param batch_size_mem: replayed exemplars per batch for ``memory_batch="fixed"``.
    :param replay_rate: ``"per_record"`` or ``"per_class"`` (see
        :class:`~avalanche_exmask.training.plugin.ByteBudgetReplayPlugin`).
    :param weight_aligning: rescale the new classes' head rows after each experience
        (:class:`~avalanche_exmask.training.weight_aligning.WeightAligningPlugin`).
    :param current_through_codec: probability that a current-data training sample is replaced by
        its own masked version, so that new and old classes look alike
        (:class:`~avalanche_exmask.training.codec_augmentation.CurrentThroughCodecPlugin`; the
        README's ablation measures 0 against the default).
    :param current_codec_scores: ``"step"`` (default) or ``"experience"``: when those samples are
        scored and encoded (see :mod:`~avalanche_exmask.training.codec_augmentation`).
    :param seed: seeds selection, the candidate cap and the current-data draws.
    :param base_kwargs: the remaining arguments of Avalanche's ``SupervisedTemplate``
        (``train_mb_size``, ``train_epochs``, ``eval_mb_size``, ``device``, ``plugins``,
        ``evaluator``, ``eval_every``, ...).
    """

    def __init__(
        self,
        *,
        model: Module,
        optimizer: Optimizer,
        mem_size: int,
        criterion: Any = CrossEntropyLoss(),  # noqa: B008 -- Avalanche's templates' default; the loss holds no state
        total_num_classes: int | None = None,
        codec: MaskedCodec | None = None,
        augmentation: MultimodalAugmentation | None = None,
        selection: Literal["herding", "random"] = "herding",
        memory_batch: Literal["class_balanced", "class_share", "fixed"] = "class_share",
        batch_size_mem: int | None = None,
        replay_rate: Literal["per_record", "per_class"] = "per_record",
        weight_aligning: bool = False,
        current_through_codec: float = 1.0,
        current_codec_scores: CurrentScores = "step",
        seed: int = 0,
        **base_kwargs: Any,
    ) -> None:
        plugins = byte_budget_replay_plugins(
            codec=_with_model_patch_size(codec or MaskedCodec(), unwrap_model(model)),
            mem_size=mem_size,
            total_num_classes=total_num_classes,
            selection=selection,
            augmentation=augmentation,
            memory_batch=memory_batch,
            batch_size_mem=batch_size_mem,
            replay_rate=replay_rate,
            weight_aligning=weight_aligning,
            current_through_codec=current_through_codec,
            current_codec_scores=current_codec_scores,
            seed=seed,
            plugins=base_kwargs.pop("plugins", None) or [],
            buffer_class=MaskedExemplarBuffer,
            replay_plugin_class=ExemplarMaskingPlugin,
        )
        self.replay_plugin = plugins[0]
        super().__init__(model=model, optimizer=optimizer, criterion=criterion, plugins=plugins, **base_kwargs)

    def __getstate__(self) -> None:
        """Pickling (Avalanche's dill-based ``save_checkpoint``) is refused: it cannot serialise the
        SSF parametrizations, and a pickle runs code when loaded. Use
        :func:`avalanche_exmask.checkpoint.save_strategy_checkpoint`."""
        raise TypeError(
            "ExemplarMasking is not picklable; save it with avalanche_exmask.checkpoint.save_strategy_checkpoint "
            "(safetensors, no code execution on load)"
        )

    @property
    def buffer(self) -> MaskedExemplarBuffer:
        """The masked exemplar buffer (statistics: ``buffer.stats()``)."""
        return self.replay_plugin.storage_policy


def _with_model_patch_size(codec: MaskedCodec, model: Module) -> MaskedCodec:
    """``codec`` with the patch size of ``model`` (a bare model with a ``patch_size`` in pixels).

    :raises ValueError: if ``codec.patch_size`` is set and differs from the model's.
    """
    patch_size = int(cast(Patched, model).patch_size)  # the documented contract of ``model`` (see models/protocols.py)
    if codec.patch_size is None:
        return dataclasses.replace(codec, patch_size=patch_size)
    if codec.patch_size != patch_size:
        raise ValueError(f"ExemplarMasking: codec.patch_size is {codec.patch_size} but the model's patches are {patch_size} px")
    return codec
