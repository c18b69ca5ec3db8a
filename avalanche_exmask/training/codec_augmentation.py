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
"""
from __future__ import annotations

from typing import Any, cast

import torch
from avalanche.training.plugins import SupervisedPlugin

from avalanche_exmask.data.sample import MultimodalSample, make_sample
from avalanche_exmask.distributed import unwrap_model
from avalanche_exmask.models.outputs import MaskingScores
from avalanche_exmask.models.protocols import MaskScorer

__all__ = ["through_codec", "CurrentThroughCodecPlugin"]


@torch.no_grad()
def through_codec(model: torch.nn.Module, codec: Any, x: MultimodalSample, labels: torch.Tensor) -> MultimodalSample:
    """``x`` as ``codec`` stores and decodes it: encode with the model's scores, then decode.

    The model is not run for a codec that declares ``uses_scores = False`` (its records do not
    depend on scores).

    :param x: a batch, ``image`` uint8 ``[B, 3, S, S]``, ``input_ids`` long ``[B, T]``.
    :param labels: long ``[B]``.
    :return: the decoded batch (on the CPU), same shapes.
    """
    scores = _scores(model, codec, x) if getattr(codec, "uses_scores", True) else None
    images, input_ids = x.image.cpu(), x.input_ids.cpu()
    decoded = [
        codec.decode(codec.encode(make_sample(images[i], input_ids[i]), None if scores is None else scores[i], int(label)))
        for i, label in enumerate(labels.tolist())
    ]
    return MultimodalSample(
        image=torch.stack([sample.image for sample in decoded]),
        input_ids=torch.stack([sample.input_ids for sample in decoded]),
        batch_size=[len(decoded)],
    )


def _scores(model: torch.nn.Module, codec: Any, x: MultimodalSample) -> MaskingScores:
    """The model's batched ``MaskingScores [B]`` of ``x`` in eval mode (on the CPU), with the token
    importance when ``codec`` needs it; the model's train/eval mode is restored."""
    model = unwrap_model(model)
    scorer = cast(MaskScorer, model)  # the model's contract (see models/protocols.py)
    was_training = model.training
    model.eval()
    try:
        if getattr(codec, "needs_token_importance", False):
            return scorer.masking_scores(x, token_importance=True).cpu()
        return scorer.masking_scores(x).cpu()
    finally:
        model.train(was_training)


# Avalanche is read as Any (follow_imports = "skip"), so mypy checks this class keyword against
# object.__init_subclass__; Avalanche's BasePlugin.__init_subclass__ takes ``supports_distributed``.
class CurrentThroughCodecPlugin(SupervisedPlugin, supports_distributed=True):  # type: ignore[call-arg]
    """Replaces current-data samples by their decoded records with probability ``probability``.

    :param codec: the buffer's codec.
    :param probability: chance for each current-data sample of a training batch, in ``[0, 1]``.
    :param seed: seeds the private draw of which samples are replaced.
    """

    def __init__(self, codec: Any, probability: float, seed: int | None = 0) -> None:
        if not 0 <= probability <= 1:
            raise ValueError(f"probability must be in [0, 1]; got {probability}")
        super().__init__()
        self.codec = codec
        self.probability = probability
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.replaced = 0

    def before_forward(self, strategy, **kwargs) -> None:
        if getattr(self.codec, "lossless", False):
            return
        labels = strategy.mb_y.cpu()
        current = torch.isin(labels, torch.as_tensor(sorted(strategy.experience.classes_in_this_experience)))
        chosen = current & (torch.rand(len(labels), generator=self._generator) < self.probability)
        if not chosen.any():
            return
        index = torch.nonzero(chosen).flatten()
        x = strategy.mbatch[0]
        decoded = through_codec(strategy.model, self.codec, x[index.to(x.device)], labels[index]).to(x.device)
        x.image[index.to(x.device)] = decoded.image
        x.input_ids[index.to(x.device)] = decoded.input_ids
        self.replaced += len(index)
