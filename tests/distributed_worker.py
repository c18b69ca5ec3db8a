"""One rank of ``tests/test_distributed.py``'s launch: ``torchrun --nproc_per_node 2 distributed_worker.py CONFIG OUT``.

1. What the runner's results cannot show, written to ``OUT/rank<r>.json`` for the test to compare
   across ranks: the scoring pass sharded and gathered against one process's pass on the same
   candidates; which training and test samples each rank saw; the gathered accuracy against the
   accuracy computed here on the whole test set.
2. The runner, as a user starts it (``python -m avalanche_exmask run CONFIG`` on every rank), in
   the process group started by 1 (it keeps a group already started).
3. The training order: the samples of experience 0 as this rank trains on them, epoch by epoch
   (2 epochs of Avalanche's ``Naive`` with the ``DistributedTrainingPlugin``), for seeds 0 and 1,
   added to ``OUT/rank<r>.json``.
4. Caption generation (``python -m avalanche_exmask caption``) with a tiny InstructBLIP, resuming
   from the part file of an interrupted 3-process launch (one complete line, one torn): which
   images each rank captioned is added to ``OUT/rank<r>.json``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def _observations(config_path: str) -> dict:
    from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin

    from avalanche_exmask import distributed
    from avalanche_exmask.config import load_runs
    from avalanche_exmask.experiment import build_benchmark
    from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
    from avalanche_exmask.storage.budget import budget_from_samples_per_class
    from avalanche_exmask.storage.buffer import MaskedExemplarBuffer, default_scorer
    from avalanche_exmask.training.codec_augmentation import encode_through_codec
    from avalanche_exmask.training.distributed_metrics import gathered_accuracy_metrics
    from avalanche_exmask.training.distributed_plugin import DistributedTrainingPlugin
    from avalanche_exmask.training.strategy import ExemplarMasking

    config = load_runs(config_path)[0]
    device = distributed.init_distributed(config.seed, device="cpu", backend="gloo")
    benchmark = build_benchmark(config)
    torch.manual_seed(config.seed)
    model = MultimodalCLIPClassifier(config.model.name, config.model.pretrained)
    seen: dict[str, list] = {"train": [], "eval": [], "trained_as": []}

    class Recorder(SupervisedPlugin, supports_distributed=True):
        """The labels and image checksums of every sample this rank trains and evaluates on."""

        def before_training_iteration(self, strategy, **kwargs):
            self._record("train", strategy)
            seen["trained_as"].append(type(strategy.model).__name__)

        def after_eval_forward(self, strategy, **kwargs):
            self._record("eval", strategy)

        def _record(self, phase, strategy):
            images = strategy.mb_x.image.flatten(1).long().sum(dim=1)
            seen[phase].extend(zip(strategy.mb_y.tolist(), images.tolist(), strict=True))

    budget = budget_from_samples_per_class(2, 6, model.image_size, model.context_length)
    strategy = ExemplarMasking(
        model=model, optimizer=torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3),
        mem_size=budget, total_num_classes=6, train_mb_size=4, eval_mb_size=4, train_epochs=1, device=device,
        plugins=[DistributedTrainingPlugin(), Recorder()],
        evaluator=EvaluationPlugin(gathered_accuracy_metrics(experience=True), loggers=[]),
    )
    experience, test = benchmark.train_stream[0], benchmark.test_stream[0]
    strategy.train(experience)
    metrics = strategy.eval([test])
    gathered = next(value for key, value in metrics.items() if key.startswith("Top1_Acc_Exp"))
    with torch.no_grad():
        whole = torch.utils.data.DataLoader(test.dataset.eval(), batch_size=64)
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y, *_ in whole)

    dataset = experience.dataset.eval()
    candidates = [dataset[i] for i in range(11)]
    buffer = MaskedExemplarBuffer(max_size=budget, batch_size=3)  # 4 batches of 3, 3, 3, 2
    sharded_scores, sharded_labels = buffer._score(model, candidates, device)
    one_process_scores, one_process_labels = default_scorer(model, candidates, device, 3)
    scores_equal = all(
        torch.equal(getattr(sharded_scores, name), getattr(one_process_scores, name))
        for name in ("embedding", "patch_attention", "token_attention", "patch_features", "token_features")
    )
    # current data through the codec, scored and encoded once an experience: sharded like the scoring pass
    codec = strategy.buffer.codec
    sharded_records = encode_through_codec(model, codec, torch.utils.data.Subset(dataset, range(11)), device, 3)
    reference_records = [codec.encode(candidates[i][0], one_process_scores[i], int(candidates[i][1])) for i in range(11)]
    observations = {
        "rank": distributed.rank(),
        "through_codec_records_equal_one_process": [r.data for r in sharded_records] == [r.data for r in reference_records],
        "world_size": distributed.world_size(),
        "batch_shard": distributed.batch_shard(11, 3),
        "scores_equal_one_process": scores_equal and torch.equal(sharded_labels, one_process_labels),
        "train_seen": seen["train"],
        "eval_seen": seen["eval"],
        "train_size": len(experience.dataset),
        "test_size": len(test.dataset),
        "gathered_accuracy": gathered,
        "whole_test_accuracy": correct / len(test.dataset),
        "trained_as": sorted(set(seen["trained_as"])),
        "train_checksums": sorted([int(dataset[i][1]), int(dataset[i][0].image.long().sum())] for i in range(len(dataset))),
        "unwrapped_after_training": strategy.model is model,
        "buffer_sha256": strategy.buffer.content_sha256(),
    }
    return observations


def _epoch_orders(config_path: str) -> dict[str, list[list[list[int]]]]:
    """Seed -> epoch -> ``[label, image checksum]`` of each training sample of experience 0, in the
    order this rank trained on them."""
    from avalanche.distributed import DistributedHelper
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin

    from avalanche_exmask.config import load_runs
    from avalanche_exmask.experiment import build_benchmark
    from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
    from avalanche_exmask.training.distributed_plugin import DistributedTrainingPlugin

    config = load_runs(config_path)[0]
    experience = build_benchmark(config).train_stream[0]
    orders: dict[str, list[list[list[int]]]] = {}
    for seed in (0, 1):
        DistributedHelper.set_random_seeds(seed)
        epochs: list[list[list[int]]] = []

        class Recorder(SupervisedPlugin, supports_distributed=True):
            def before_training_epoch(self, strategy, **kwargs):
                epochs.append([])  # noqa: B023 (the plugin runs within this iteration of the seed loop)

            def before_training_iteration(self, strategy, **kwargs):
                images = strategy.mb_x.image.flatten(1).long().sum(dim=1)
                batch = zip(strategy.mb_y, images, strict=True)
                epochs[-1].extend([int(y), int(image)] for y, image in batch)  # noqa: B023 (as above)

        model = MultimodalCLIPClassifier(config.model.name, config.model.pretrained)
        strategy = Naive(model=model, optimizer=torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0),
                         train_mb_size=4, train_epochs=2, device="cpu", evaluator=EvaluationPlugin(loggers=[]),
                         plugins=[DistributedTrainingPlugin(), Recorder()])
        strategy.train(experience)
        orders[str(seed)] = epochs
    return orders


def _caption(out: Path, command_line) -> list[str]:
    """Caption ``out/images`` into ``out/captions.jsonl``; the images this rank captioned."""
    from fixtures_data import write_jpeg
    from test_captions import PROMPT, tiny_instructblip

    from avalanche_exmask import distributed
    from avalanche_exmask.captions import generate
    from avalanche_exmask.captions.generate import list_images, part_path

    images, captions, model_dir = out / "images", out / "captions.jsonl", out / "captioner"
    if distributed.is_main_process():
        model, processor = tiny_instructblip("t5")
        model.save_pretrained(model_dir)
        processor.save_pretrained(model_dir)
        for i in range(7):
            write_jpeg(images / f"class{i % 3}" / f"img{i}.jpg", i)
        interrupted = part_path(captions, 2, 3)
        line = {"image": list_images(images)[0], "text": "a cat", "model": str(model_dir), "prompt": PROMPT}
        interrupted.write_text(json.dumps(line) + "\n" + '{"image": "class1/im')
    distributed.barrier()
    captioned: list[str] = []
    open_rgb = generate._open_rgb

    def recording(path, limits):
        captioned.append(Path(path).relative_to(images).as_posix())
        return open_rgb(path, limits)

    generate._open_rgb = recording
    command_line(["caption", "--images", str(images), "--out", str(captions), "--model", str(model_dir), "--prompt", PROMPT,
                  "--batch-size", "2", "--max-new-tokens", "4", "--device", "cpu", "--no-progress"])
    return captioned


def main(config_path: str, out: str) -> None:
    from avalanche_exmask import distributed
    from avalanche_exmask.__main__ import main as command_line

    observations = _observations(config_path)
    command_line(["run", config_path, "--out", str(Path(out) / "results")])
    observations["epoch_orders"] = _epoch_orders(config_path)
    observations["captioned"] = _caption(Path(out), command_line)
    (Path(out) / f"rank{observations['rank']}.json").write_text(json.dumps(observations))
    distributed.close_distributed()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(*sys.argv[1:])
