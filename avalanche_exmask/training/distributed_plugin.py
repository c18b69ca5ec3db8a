"""``DistributedTrainingPlugin``: any Avalanche strategy trained data-parallel under ``torchrun``.

Avalanche 0.6 gives the pieces (``DistributedHelper``, DDP through ``wrap_model``, data loaders
with a ``DistributedSampler``, the ``supports_distributed`` flag of plugins) but its templates do
not put them together: the model is never wrapped, a plain training loader (the first experience,
before any replay) is not sharded, every epoch is shuffled alike, and the evaluation loader's
``DistributedSampler`` pads the last shard with repeated samples. This plugin does the four things, and nothing in a single process:

* before each training experience, after Avalanche's model adaptation (a new head may have grown
  new parameters, which a DDP wrapper built earlier would not know), the model is wrapped in DDP;
  after it, unwrapped again, so that evaluation, buffer updates, checkpoints and the optimizer's
  parameter names see the model itself;
* a training loader without a ``DistributedSampler`` is replaced by Avalanche's own
  ``SingleDatasetDataLoader``, which shards with one (loaders built by replay plugins, Avalanche's
  ``ReplayDataLoader``, shard current and replayed data already);
* before every training epoch, the training loader's ``DistributedSampler`` seeds are drawn as a
  single process's ``RandomSampler`` draws its seed
  (:func:`~avalanche_exmask.training.distributed_order.order_like_one_process`): a new order each
  epoch that depends on the run's seed, where Avalanche's loaders repeat one order (seed 0, epoch 0);
* every evaluation experience is cut into ``rank::world_size`` shards without padding; accuracy
  summed over the shards by :func:`~avalanche_exmask.training.distributed_metrics.gathered_accuracy_metrics`
  is then exactly the single-process accuracy.

Batch sizes are per process (Avalanche's convention): ``train_mb_size = B / world_size`` gives a
global batch of ``B``; DDP averages the ranks' gradients, which is the gradient of that batch.
"""
from __future__ import annotations

from avalanche.benchmarks.utils.data_loader import SingleDatasetDataLoader
from avalanche.core import SupervisedPlugin
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from avalanche_exmask.distributed import is_distributed, rank, unwrap_model, world_size, wrap_model
from avalanche_exmask.training.distributed_order import order_like_one_process

__all__ = ["DistributedTrainingPlugin"]


# Avalanche is read as Any (follow_imports = "skip"), so mypy checks this class keyword against
# object.__init_subclass__; Avalanche's BasePlugin.__init_subclass__ takes ``supports_distributed``.
class DistributedTrainingPlugin(SupervisedPlugin, supports_distributed=True):  # type: ignore[call-arg]
    """Wraps the model in DDP for training, shards training and evaluation data (see the module
    docstring). Put it in any strategy's ``plugins``; it is a no-op in a single process."""

    def before_training_exp(self, strategy, **kwargs) -> None:
        if not is_distributed():
            return
        strategy.model = wrap_model(strategy.model, strategy.device)
        loader = strategy.dataloader
        if isinstance(loader, DataLoader) and not isinstance(loader.sampler, DistributedSampler):
            strategy.dataloader = SingleDatasetDataLoader(
                strategy.adapted_dataset,
                batch_size=loader.batch_size,
                shuffle=isinstance(loader.sampler, RandomSampler),
                drop_last=loader.drop_last,
                num_workers=loader.num_workers,
                collate_fn=loader.collate_fn,
                pin_memory=loader.pin_memory,
                distributed_sampling=True,
            )

    def before_training_epoch(self, strategy, **kwargs) -> None:
        if is_distributed():
            order_like_one_process(strategy.dataloader)

    def after_training_exp(self, strategy, **kwargs) -> None:
        strategy.model = unwrap_model(strategy.model)

    def before_eval_exp(self, strategy, num_workers: int = 0, **kwargs) -> None:
        if not is_distributed():
            return
        dataset = strategy.adapted_dataset
        shard = dataset.subset(list(range(rank(), len(dataset), world_size())))
        strategy.dataloader = SingleDatasetDataLoader(
            shard,
            batch_size=strategy.eval_mb_size,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=strategy.device.type == "cuda",
            distributed_sampling=False,
        )
