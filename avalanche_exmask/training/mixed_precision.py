"""``MixedPrecisionPlugin``: bf16 / fp16 autocast for any Avalanche strategy.

Avalanche 0.6's ``SupervisedTemplate`` has no mixed-precision option (only its object-detection
template takes a ``GradScaler``), so this plugin adds one through the lifecycle events every
template triggers: ``torch.autocast`` is entered in ``before_forward`` / ``before_eval_forward``
and left in ``after_forward`` / ``after_eval_forward``, and the logits are cast back to float32 so
that the loss (computed by the template after ``after_forward``) is taken in full precision.

``fp16`` also scales the loss (``torch.amp.GradScaler``): the loss is scaled in
``before_backward``; in ``after_backward`` the gradients are unscaled and, if any is not finite,
set to ``None`` so that the optimizer's step skips them (what ``GradScaler.step`` does, without
owning the template's ``optimizer.step()``); ``after_update`` adapts the scale. ``bf16`` needs no
scaling. The buffer's scoring pass (attention capture for masking) stays in float32.
"""
from __future__ import annotations

from typing import Literal

import torch
from avalanche.training.plugins import SupervisedPlugin

__all__ = ["PRECISIONS", "MixedPrecisionPlugin"]

#: Names of the precisions: ``fp32`` (no autocast), ``bf16``, ``fp16``.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class MixedPrecisionPlugin(SupervisedPlugin):
    """Autocast of the forward passes (training and evaluation) in ``precision``.

    :param precision: ``"bf16"`` or ``"fp16"`` (``"fp32"`` makes the plugin a no-op).
    :param device_type: ``"cuda"`` or ``"cpu"`` (both support bf16 and fp16 autocast in torch 2.14).
    """

    def __init__(self, precision: Literal["fp32", "bf16", "fp16"], device_type: str = "cuda") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}; got {precision!r}")
        super().__init__()
        self.precision = precision
        self.dtype: torch.dtype | None = PRECISIONS[precision]
        self.device_type = device_type
        self.scaler = torch.amp.GradScaler(device_type) if precision == "fp16" else None
        self._autocast: torch.autocast | None = None
        self.skipped_steps = 0

    def _enter(self) -> None:
        if self.dtype is not None:
            self._autocast = torch.autocast(self.device_type, dtype=self.dtype)
            self._autocast.__enter__()

    def _exit(self, strategy) -> None:
        if self._autocast is not None:
            self._autocast.__exit__(None, None, None)
            self._autocast = None
            strategy.mb_output = strategy.mb_output.float()

    def before_forward(self, strategy, **kwargs) -> None:
        self._enter()

    def after_forward(self, strategy, **kwargs) -> None:
        self._exit(strategy)

    def before_eval_forward(self, strategy, **kwargs) -> None:
        self._enter()

    def after_eval_forward(self, strategy, **kwargs) -> None:
        self._exit(strategy)

    def before_backward(self, strategy, **kwargs) -> None:
        if self.scaler is not None:
            strategy.loss = self.scaler.scale(strategy.loss)

    def after_backward(self, strategy, **kwargs) -> None:
        if self.scaler is None:
            return
        self.scaler.unscale_(strategy.optimizer)
        parameters = [p for group in strategy.optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not all(bool(torch.isfinite(p.grad).all()) for p in parameters):
            for p in parameters:
                p.grad = None
            self.skipped_steps += 1

    def after_update(self, strategy, **kwargs) -> None:
        if self.scaler is not None:
            self.scaler.update()
