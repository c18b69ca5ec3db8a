"""The byte-budget replay stack, built in one place for every buffered method and for
:class:`~avalanche_exmask.training.strategy.ExemplarMasking`: a buffer of a codec, the replay plugin
over it, weight aligning, current data through the codec, then the caller's own plugins."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from avalanche_exmask.storage.buffer import ByteBudgetBuffer
from avalanche_exmask.training.augmentation import MultimodalAugmentation
from avalanche_exmask.training.codec_augmentation import CurrentScores, CurrentThroughCodecPlugin
from avalanche_exmask.training.plugin import ByteBudgetReplayPlugin
from avalanche_exmask.training.weight_aligning import WeightAligningPlugin

__all__ = ["byte_budget_replay_plugins"]


def byte_budget_replay_plugins(
    *,
    codec: Any,
    mem_size: int,
    total_num_classes: int | None = None,
    selection: Literal["herding", "random"] = "herding",
    augmentation: MultimodalAugmentation | None = None,
    memory_batch: Literal["class_balanced", "class_share", "fixed"] = "class_share",
    batch_size_mem: int | None = None,
    replay_rate: Literal["per_record", "per_class"] = "per_record",
    weight_aligning: bool = False,
    current_through_codec: float = 1.0,
    current_codec_scores: CurrentScores = "step",
    seed: int = 0,
    plugins: Sequence[Any] = (),
    buffer_class: type[ByteBudgetBuffer] = ByteBudgetBuffer,
    replay_plugin_class: type[ByteBudgetReplayPlugin] = ByteBudgetReplayPlugin,
) -> list[Any]:
    """The plugins of a strategy replaying from a byte budget, in the order they run: the replay
    plugin (its ``storage_policy`` the buffer), :class:`WeightAligningPlugin` (if
    ``weight_aligning``), :class:`CurrentThroughCodecPlugin` (if ``current_through_codec > 0``),
    then ``plugins``.

    :param codec: the buffer's codec (its ``patch_size`` already the model's).
    :param mem_size: the budget in bytes.
    :param total_num_classes: classes of the stream: given, each gets ``mem_size // total_num_classes``
        bytes (``mode="per_class"``); ``None``: the budget is re-divided among the seen classes.
    :param buffer_class: the buffer (:class:`ByteBudgetBuffer` or a subclass).
    :param replay_plugin_class: the replay plugin (:class:`ByteBudgetReplayPlugin` or a subclass).
    Other parameters as in :class:`~avalanche_exmask.training.strategy.ExemplarMasking`.
    """
    buffer = buffer_class(
        max_size=mem_size,
        codec=codec,
        mode="per_class" if total_num_classes is not None else "total",
        total_num_classes=total_num_classes,
        selection=selection,
        seed=seed,
        augmentation=augmentation,
    )
    stack: list[Any] = [
        replay_plugin_class(
            mem_size=mem_size, storage_policy=buffer, memory_batch=memory_batch, batch_size_mem=batch_size_mem, replay_rate=replay_rate
        )
    ]
    if weight_aligning:
        stack.append(WeightAligningPlugin())
    if current_through_codec:
        stack.append(CurrentThroughCodecPlugin(buffer.codec, current_through_codec, seed=seed, scores=current_codec_scores))
    stack.extend(plugins)
    return stack
