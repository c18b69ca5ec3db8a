"""The training order under torchrun drawn as one process draws it (avalanche_exmask.training.distributed_order),
checked in one process by building each rank's sampler; tests/test_distributed.py checks a 2-process launch."""
from __future__ import annotations

import torch
from torch.utils.data import BatchSampler, DistributedSampler, RandomSampler

from avalanche_exmask.training.distributed_order import draw_like_one_process, order_like_one_process

DATA = list(range(10))


def _rank_order(generator_seed: int, rank: int, world: int = 2) -> list[int]:
    """Rank ``rank``'s order of one epoch, drawn from the global generator seeded ``generator_seed``."""
    torch.manual_seed(generator_seed)
    batches = BatchSampler(DistributedSampler(DATA, num_replicas=world, rank=rank, shuffle=True, seed=0), 2, False)
    draw_like_one_process([batches])
    return [index for batch in batches for index in batch]


def test_the_ranks_take_turns_in_the_permutation_one_process_draws_from_the_same_generator_state():
    torch.manual_seed(7)
    one_process = list(RandomSampler(DATA))
    ranks = [_rank_order(7, 0), _rank_order(7, 1)]
    assert ranks[0] == one_process[0::2] and ranks[1] == one_process[1::2]


def test_epochs_and_seeds_give_different_orders_and_the_ranks_stay_together():
    def epochs(seed: int) -> list[list[int]]:
        torch.manual_seed(seed)
        orders = []
        for _ in range(2):
            sampler = DistributedSampler(DATA, num_replicas=1, rank=0, shuffle=True, seed=0)
            draw_like_one_process([sampler])
            orders.append(list(sampler))
        return orders

    first, second = epochs(0), epochs(1)
    assert first[0] != first[1] and second[0] != second[1]  # Avalanche's own samplers: the same order every epoch
    assert first[0] != second[0] and first[1] != second[1]
    assert epochs(0) == first  # a function of the seed and the epoch
    assert sorted(first[0]) == DATA


def test_a_sampler_in_order_and_other_samplers_are_left_alone_and_draw_nothing():
    fixed = DistributedSampler(DATA, num_replicas=1, rank=0, shuffle=False)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    draw_like_one_process([fixed, BatchSampler(RandomSampler(DATA), 2, False)])
    assert torch.equal(torch.get_rng_state(), state) and list(fixed) == DATA


def test_a_loader_draws_every_time_it_builds_samplers_and_once_when_set_twice():
    class Loader:
        """What order_like_one_process uses of Avalanche's MultiDatasetDataLoader."""

        _persistent_loader = None

        @staticmethod
        def _create_samplers() -> list:
            return [DistributedSampler(DATA, num_replicas=1, rank=0, shuffle=True, seed=0)]

    loader = Loader()
    order_like_one_process(loader)
    order_like_one_process(loader)
    torch.manual_seed(0)
    orders = [list(loader._create_samplers()[0]) for _ in range(2)]
    torch.manual_seed(0)
    one_process = [list(RandomSampler(DATA)) for _ in range(2)]
    assert orders == one_process and orders[0] != orders[1]
