"""A cosine learning-rate decay over each experience, restarted at the next one.

With a constant learning rate an experience ends wherever the last noisy steps left the model;
decaying it to (nearly) zero over the experience's iterations ends every experience, for every
method, at a settled model, and lets a short training budget get closer to convergence.
"""
from __future__ import annotations

import math

from avalanche.training.plugins import LRSchedulerPlugin
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["cosine_factor", "CosineLRPlugin"]


def cosine_factor(step: int, horizon: int, final_fraction: float = 0.0) -> float:
    """The learning-rate multiplier after ``step`` of ``horizon`` iterations.

    :return: ``final + (1 - final) (1 + cos(pi t)) / 2`` with ``t = min(step, horizon) / horizon``:
        1 at step 0, ``final_fraction`` from step ``horizon`` on.
    """
    progress = min(step, horizon) / max(horizon, 1)
    return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))


# Avalanche is read as Any (follow_imports = "skip"), so mypy checks this class keyword against
# object.__init_subclass__; Avalanche's BasePlugin.__init_subclass__ takes ``supports_distributed``.
class CosineLRPlugin(LRSchedulerPlugin, supports_distributed=True):  # type: ignore[call-arg]
    """Avalanche's :class:`~avalanche.training.plugins.LRSchedulerPlugin` stepping a cosine
    :class:`~torch.optim.lr_scheduler.LambdaLR` every iteration, reset (rate and step count) after
    every experience.

    Two things the plain plugin cannot know when it is built, set here when training starts:

    * the horizon: ``train_epochs x len(strategy.dataloader)`` iterations, read at an experience's
      first iteration, after every plugin (a replay plugin's loader included) has built the loader
      (a replayed schedule changes the number of iterations from one experience to the next);
    * the base rates: the optimizer's rates when training first starts, after the method's own
      rates (e.g. a prompt method's) were set on it.

    :param final_fraction: the rate at the end of an experience, a fraction of the base rate.
    """

    # Set by LRSchedulerPlugin.__init__ (a stand-in), bound to the optimizer in before_training.
    scheduler: LambdaLR | _UnboundScheduler

    def __init__(self, final_fraction: float = 0.0) -> None:
        if not 0.0 <= final_fraction <= 1.0:
            raise ValueError(f"final_fraction must be in [0, 1]; got {final_fraction}")
        self.final_fraction = final_fraction
        self.horizon = 1
        super().__init__(
            scheduler=_UnboundScheduler(), step_granularity="iteration", reset_scheduler=True, reset_lr=True
        )

    def _factor(self, step: int) -> float:
        return cosine_factor(step, self.horizon, self.final_fraction)

    def bind(self, optimizer: Optimizer) -> None:
        """Build the cosine scheduler on ``optimizer`` (its rates become the base rates) unless it is
        built already. Training calls it when it starts; a checkpoint's loader calls it first, so that
        the saved scheduler state has a scheduler to go into."""
        if isinstance(self.scheduler, _UnboundScheduler):
            self.scheduler = LambdaLR(optimizer, self._factor)

    def before_training(self, strategy, **kwargs) -> None:
        self.bind(strategy.optimizer)
        super().before_training(strategy, **kwargs)

    def before_training_iteration(self, strategy, **kwargs) -> None:
        if strategy.clock.train_exp_iterations == 0:
            self.horizon = max(1, int(strategy.train_epochs) * len(strategy.dataloader))
        super().before_training_iteration(strategy, **kwargs)


class _UnboundScheduler:
    """Stands in for the scheduler until :meth:`CosineLRPlugin.before_training` binds it to the
    strategy's optimizer (Avalanche's plugin requires a scheduler when it is built)."""

    base_lrs: list[float] = []
    last_epoch = 0

    def step(self, *args, **kwargs) -> None:
        raise RuntimeError("CosineLRPlugin stepped before training started")
