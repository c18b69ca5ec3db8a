"""Current data through the buffer's codec, so that new and old classes look alike.

Replayed exemplars are what the codec decodes: masked ones show their kept patches over a
mean-colour background, JPEG ones show compression artefacts, CIM ones a blurred surround. Current
data look natural. Under class-balanced replay every old class is seen *only* as decoded records,
so the head can learn "codec look -> old class" and send natural test images of old classes to the
newest ones (measured on the embedded benchmark with masked exemplars: 1% accuracy on the oldest
experience, 83% on the newest). :class:`CurrentThroughCodecPlugin` removes that shortcut: during
training, each current-data sample (a label of the current experience) is replaced, with
probability ``p``, by its own record as the codec would store and decode it (image and text),
scored by the model being trained (one extra no-grad forward pass over the chosen samples, skipped
for a codec that declares ``uses_scores = False``, e.g. JPEG). A codec that declares
``lossless = True`` (raw) is skipped: its records decode to the sample itself.

When the scores are taken is the plugin's ``scores`` setting:

* ``"step"``: in every training step, by the model as it is at that step; the scoring forward and
  the encode + decode of the chosen current samples run inside the step (for the masked codec
  without JPEG patches and for CIM as one batched round trip on the training device, bit for bit
  the records' decoding). A codec that reads no scores (JPEG) at ``probability = 1`` runs no model,
  so its round trip moves into the training dataset: each current sample is encoded and decoded
  on access, in the training loader's workers when it has some, and the step holds no codec work;
  the training inputs are the same bits as inside the step.
* ``"experience"``: once an experience, before its training, by the model as the previous
  experience left it. The chosen samples are scored (one no-grad pass over them) and encoded then;
  the training dataset serves each chosen sample as its record, decoded on access, i.e. in the
  training loader's workers when it has some. The step then holds no codec work: a record decodes
  in well under a millisecond. Which samples are replaced is drawn once an experience (the same
  samples in every epoch), and a random training transform is drawn once for a replaced sample
  (its record is what is trained in every epoch). For a codec that does not use scores (JPEG) the
  records, and so the training inputs, are those of ``"step"`` at ``probability = 1``.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal, cast

import numpy as np
import torch
from avalanche.benchmarks.utils import _make_taskaware_classification_dataset
from avalanche.training.plugins import SupervisedPlugin
from torch.utils.data import DataLoader, Dataset, Subset

from avalanche_exmask.data.sample import MultimodalSample, make_sample
from avalanche_exmask.distributed import batch_shard, gather_shards, unwrap_model
from avalanche_exmask.models.outputs import MaskingScores, PatchAttentionScores
from avalanche_exmask.models.protocols import MaskScorer
from avalanche_exmask.models.train_mode import eval_mode
from avalanche_exmask.storage.codecs.base import BatchRoundTrip

__all__ = [
    "CurrentScores", "through_codec", "encode_through_codec", "RecordsInPlaceDataset", "ThroughCodecDataset",
    "CurrentThroughCodecPlugin",
]

CurrentScores = Literal["step", "experience"]
"""When current data are scored for their trip through the codec (see the module docstring)."""


@torch.no_grad()
def through_codec(model: torch.nn.Module, codec: Any, x: MultimodalSample, labels: torch.Tensor) -> MultimodalSample:
    """``x`` as ``codec`` stores and decodes it: encode with the model's scores, then decode.

    A codec with a batched round trip (:class:`~avalanche_exmask.storage.codecs.base.BatchRoundTrip`:
    the masked codec without JPEG patches, CIM) computes the decoded batch on ``x``'s device, bit
    for bit the records' decoding; any other codec encodes and decodes sample by sample on the CPU.
    The model is not run for a codec that declares ``uses_scores = False`` (its records do not
    depend on scores).

    :param x: a batch, ``image`` uint8 ``[B, 3, S, S]``, ``input_ids`` long ``[B, T]``.
    :param labels: long ``[B]``.
    :return: the decoded batch, same shapes (on ``x``'s device after a batched round trip, on the
        CPU otherwise).
    """
    scores = _scores(model, codec, x) if getattr(codec, "uses_scores", True) else None
    if isinstance(codec, BatchRoundTrip):
        decoded_batch = codec.round_trip(x, scores, labels)
        if decoded_batch is not None:
            return decoded_batch
    decoded = [codec.decode(record) for record in _encode_scored(codec, x, None if scores is None else scores.cpu(), labels)]
    return MultimodalSample(
        image=torch.stack([sample.image for sample in decoded]),
        input_ids=torch.stack([sample.input_ids for sample in decoded]),
        batch_size=[len(decoded)],
    )


def encode_through_codec(
    model: torch.nn.Module, codec: Any, dataset: Dataset, device: Any, batch_size: int, num_workers: int = 0
) -> list[Any]:
    """The records ``codec`` makes of every ``(x, y, ...)`` item of ``dataset``, in order, scored in
    batches of ``batch_size`` by ``model`` in eval mode (no forward pass for a codec that declares
    ``uses_scores = False``); the items are read in ``num_workers`` DataLoader workers (``0``: in
    this process). The global random state is left as it was.

    Under ``torchrun`` each rank reads, scores and encodes its batches (batch ``b`` on rank
    ``b mod world_size``, :func:`~avalanche_exmask.distributed.batch_shard`) and every rank gets all
    records, the same as one process's (each batch is the same batch).

    :return: one ``Record`` per item.
    """
    n_items = len(dataset)  # type: ignore[arg-type]  # an Avalanche dataset is sized
    mine = batch_shard(n_items, batch_size)
    local = _encode_items(model, codec, Subset(dataset, mine), device, batch_size, num_workers) if mine else None
    return gather_shards(local, mine, n_items) or []


@torch.no_grad()
def _encode_items(
    model: torch.nn.Module, codec: Any, dataset: Dataset, device: Any, batch_size: int, num_workers: int
) -> list[Any]:
    """:func:`encode_through_codec` in one process."""
    records: list[Any] = []
    # a private generator: the loader's seed draw leaves the global RNG (the training order) untouched
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, generator=torch.Generator())
    for x, y, *_ in loader:
        records.extend(_encode_batch(model, codec, x.to(device), torch.as_tensor(y)))
    return records


def _encode_batch(model: torch.nn.Module, codec: Any, x: MultimodalSample, labels: torch.Tensor) -> list[Any]:
    """One record per sample of the batch ``x`` (labels long ``[B]``), scored by ``model`` unless the
    codec declares ``uses_scores = False``."""
    scores = _scores(model, codec, x).cpu() if getattr(codec, "uses_scores", True) else None
    return _encode_scored(codec, x, scores, labels)


def _encode_scored(codec: Any, x: MultimodalSample, scores: Any, labels: torch.Tensor) -> list[Any]:
    """One record per sample of the batch ``x``, given its batched scores on the CPU (``None`` for a
    codec that reads none)."""
    images, input_ids = x.image.cpu(), x.input_ids.cpu()
    return [
        codec.encode(make_sample(images[i], input_ids[i]), None if scores is None else scores[i], int(label))
        for i, label in enumerate(labels.tolist())
    ]


class RecordsInPlaceDataset(Dataset):
    """``dataset``'s ``(x, y)`` items, with ``x`` replaced by ``decode(records[index])`` at the indices
    ``records`` holds (decoded on access, so in a DataLoader's workers when it has some).

    :param dataset: items ``(x, y, ...)``; only ``x`` and ``y`` are passed on.
    :param records: dataset index -> the record that replaces its ``x``.
    :param decode: ``Record -> MultimodalSample``.
    """

    def __init__(self, dataset: Dataset, records: Mapping[int, Any], decode: Any) -> None:
        self._dataset = dataset
        self._records = dict(records)
        self._decode = decode

    def __len__(self) -> int:
        return len(self._dataset)  # type: ignore[arg-type]  # an Avalanche dataset is sized

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        record = self._records.get(index)
        if record is None:
            x, y, *_ = self._dataset[index]
            return x, y
        return self._decode(record), int(self._dataset.targets[index])  # type: ignore[attr-defined]


class ThroughCodecDataset(Dataset):
    """``dataset``'s ``(x, y)`` items, with ``x`` replaced by ``codec.decode(codec.encode(x, None, y))``
    on access (so in a DataLoader's workers when it has some): current data through a codec that
    reads no scores (``uses_scores = False``).

    :param dataset: items ``(x, y, ...)``, ``x`` an unbatched sample; only ``x`` and ``y`` are passed on.
    :param codec: encodes with ``scores=None``.
    """

    def __init__(self, dataset: Dataset, codec: Any) -> None:
        self._dataset = dataset
        self._codec = codec

    def __len__(self) -> int:
        return len(self._dataset)  # type: ignore[arg-type]  # an Avalanche dataset is sized

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        x, y, *_ = self._dataset[index]
        return self._codec.decode(self._codec.encode(x, None, int(y))), y


def _replace_training_items(strategy: Any, items: Dataset) -> None:
    """Make ``items`` (the same length and order as ``strategy.adapted_dataset``) the experience's
    training dataset, with the adapted dataset's targets and task labels."""
    dataset = strategy.adapted_dataset
    strategy.adapted_dataset = _make_taskaware_classification_dataset(
        items, targets=list(dataset.targets), task_labels=list(dataset.targets_task_labels)
    )


def _scores(model: torch.nn.Module, codec: Any, x: MultimodalSample) -> MaskingScores | PatchAttentionScores:
    """The model's batched scores ``[B]`` of ``x`` in eval mode (on the model's device): ``MaskingScores``,
    with the token importance when ``codec`` needs it, or only the patch attention
    (``PatchAttentionScores``, from the model's cheaper ``patch_attention_scores``) when ``codec``
    declares ``reads_patch_attention_only`` and the model has that method. The model's train/eval
    mode is restored."""
    model = unwrap_model(model)
    scorer = cast(MaskScorer, model)  # the model's contract (see models/protocols.py)
    with eval_mode(model):  # every training step: the cheap switch (models/train_mode.py)
        attention_only = getattr(model, "patch_attention_scores", None)
        if attention_only is not None and getattr(codec, "reads_patch_attention_only", False):
            return PatchAttentionScores(patch_attention=attention_only(x.image), batch_size=[x.image.shape[0]])
        if getattr(codec, "needs_token_importance", False):
            return scorer.masking_scores(x, token_importance=True)
        return scorer.masking_scores(x)


# Avalanche is read as Any (follow_imports = "skip"), so mypy checks this class keyword against
# object.__init_subclass__; Avalanche's BasePlugin.__init_subclass__ takes ``supports_distributed``.
class CurrentThroughCodecPlugin(SupervisedPlugin, supports_distributed=True):  # type: ignore[call-arg]
    """Replaces current-data samples by their decoded records with probability ``probability``.

    :param codec: the buffer's codec.
    :param probability: chance for each current-data sample of a training batch, in ``[0, 1]``.
    :param seed: seeds the private draw of which samples are replaced, anew each experience from
        ``(seed, experience index)``; ``None``: the global generator.
    :param scores: ``"step"`` (default) or ``"experience"``: when the samples are scored and encoded
        (see the module docstring).

    ``replaced`` counts replaced samples: each time one is trained (``"step"``), or each sample
    encoded (``"experience"``). ``pass_seconds`` holds, with ``"experience"``, the wall time (s) of
    each experience's scoring and encoding pass (before training, so outside the training steps).
    :attr:`in_loader` tells whether, with ``"step"``, the round trip runs in the training dataset.
    """

    def __init__(self, codec: Any, probability: float, seed: int | None = 0, scores: CurrentScores = "step") -> None:
        if not 0 <= probability <= 1:
            raise ValueError(f"probability must be in [0, 1]; got {probability}")
        if scores not in ("step", "experience"):
            raise ValueError(f"scores must be 'step' or 'experience'; got {scores!r}")
        super().__init__()
        self.codec = codec
        self.probability = probability
        self.scores = scores
        self._seed = seed
        self._generator: torch.Generator | None = None
        self.replaced = 0
        self.pass_seconds: list[float] = []

    @property
    def in_loader(self) -> bool:
        """Whether, with ``"step"``, current data go through the codec in the training dataset: a
        lossy codec that reads no scores, at ``probability = 1`` (every current sample)."""
        return (
            self.scores == "step" and self.probability == 1 and not getattr(self.codec, "uses_scores", True)
            and not getattr(self.codec, "lossless", False)
        )

    def before_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        """Seed the private draw of this experience from ``(seed, experience index)``, so that an
        experience draws the same samples whether the run got there uninterrupted or resumed from a
        checkpoint written between experiences (which holds no state of this plugin). Without a
        seed the draws come from the global generator, which checkpoints restore."""
        if self._seed is not None:
            entropy = [self._seed, int(strategy.experience.current_experience)]
            self._generator = torch.Generator().manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))

    def after_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        """With ``scores="experience"``: encode the chosen samples of the experience's training data
        and train them as their records (the replay plugin builds its loader from this dataset).
        With ``num_workers >= 1`` among ``strategy.train(...)``'s arguments the chosen samples are
        read in that many DataLoader workers. With ``"step"`` and :attr:`in_loader`: the training
        data pass through the codec on access (:class:`ThroughCodecDataset`)."""
        if getattr(self.codec, "lossless", False):
            return
        if self.scores == "step":
            if self.in_loader:
                _replace_training_items(strategy, ThroughCodecDataset(strategy.adapted_dataset, self.codec))
            return
        start = time.perf_counter()
        dataset = strategy.adapted_dataset
        chosen = torch.rand(len(dataset), generator=self._generator) < self.probability
        index = torch.nonzero(chosen).flatten().tolist()
        records = encode_through_codec(
            strategy.model, self.codec, Subset(dataset, index), strategy.device, strategy.eval_mb_size,
            num_workers=int(kwargs.get("num_workers") or 0),
        )
        _replace_training_items(strategy, RecordsInPlaceDataset(dataset, dict(zip(index, records, strict=True)), self.codec.decode))
        self.replaced += len(index)
        self.pass_seconds.append(time.perf_counter() - start)

    def before_forward(self, strategy, **kwargs) -> None:
        if self.scores != "step" or getattr(self.codec, "lossless", False):
            return
        labels = strategy.mb_y.cpu()
        current = torch.isin(labels, torch.as_tensor(sorted(strategy.experience.classes_in_this_experience)))
        chosen = current & (torch.rand(len(labels), generator=self._generator) < self.probability)
        if self.in_loader:  # decoded in the dataset already; the draw above keeps the random stream
            self.replaced += int(chosen.sum())
            return
        if not chosen.any():
            return
        index = torch.nonzero(chosen).flatten()
        x = strategy.mbatch[0]
        decoded = through_codec(strategy.model, self.codec, x[index.to(x.device)], labels[index]).to(x.device)
        x.image[index.to(x.device)] = decoded.image
        x.input_ids[index.to(x.device)] = decoded.input_ids
        self.replaced += len(index)
