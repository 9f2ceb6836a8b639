"""Distributed training: the data order shard, the step-wide loss normalisation, and torchrun runs
(2 CPU processes, gloo) that must equal a one-process run with the same total batch."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from centernet.config import Config
from centernet.data.synthetic import generate_dataset
from centernet.engine.distributed import EpochBatchSampler
from centernet.engine.trainer import step_loss_scales
from centernet.losses import CenterNetLoss
from centernet.targets import build_targets

# The torchrun tests compare weights after SGD steps: Adam divides each gradient by its own
# magnitude, so parameters whose true gradient is zero (a bias followed by BatchNorm) step by
# +-lr in the direction of their float rounding noise, which no two summation orders share; SGD
# maps equal gradients to equal weights. They compare after one epoch of 2 steps: the tiny model
# at 64x64 (BatchNorm over 2x2 maps) amplifies rounding fast -- one process with 1 or 2 threads
# already differs by 1e-3 after 4 steps -- while after 2 steps the runs agree to 1e-5, against
# updates of about 5e-3 (a wrong gradient, e.g. a per-process loss normalisation, shows).
DRIVER = r"""
import json, sys
import torch
from centernet.config import Config
from centernet.engine import distributed
from centernet.engine.trainer import Trainer

config, run_dir = Config.from_dict(json.loads(sys.argv[1])), sys.argv[2]
trainer = Trainer(config, run_dir, progress=False)
trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.05, momentum=0.9)
trainer.scheduler = torch.optim.lr_scheduler.StepLR(trainer.optimizer, 1, 0.5)
trainer.fit()
torch.save(trainer.model.state_dict(), f"{run_dir}/rank{trainer.process.rank}.pt")
distributed.shutdown()
"""


def test_sampler_shards_each_step_of_the_one_process_order():
    size, batch, world, accumulate = 23, 2, 3, 2
    single = EpochBatchSampler(size, batch * world * accumulate, seed=5, epoch=2)
    shards = [EpochBatchSampler(size, batch, seed=5, epoch=2, rank=r, world_size=world, accumulate=accumulate)
              for r in range(world)]
    assert len(single.plan) == 23 // 12 == 1 and all(len(s.plan) == 1 for s in shards)
    for step, (whole,) in enumerate(single.plan):
        parts = [item for shard in shards for micro in shard.plan[step] for item in micro]
        assert sorted(parts) == sorted(whole) and len(set(parts)) == len(parts) == 12
        assert all(len(micro) == batch for shard in shards for micro in shard.plan[step])
    # the permutation is torch.randperm from (seed, epoch): the order of a RandomSampler with that generator
    order = torch.randperm(size, generator=torch.Generator().manual_seed(5 * 100_003 + 2)).tolist()
    assert single.plan[0][0] == order[:12]
    assert list(EpochBatchSampler(size, 4, seed=5, epoch=2, start_step=3)) == [order[12:16], order[16:20]]
    assert list(EpochBatchSampler(3, 4, seed=0, epoch=0)) == [torch.randperm(
        3, generator=torch.Generator().manual_seed(0)).tolist()]  # smaller than a batch: one short step
    with pytest.raises(ValueError, match="fewer than one optimizer step"):
        EpochBatchSampler(3, 2, seed=0, epoch=0, world_size=2)


def random_targets(batch, rng, num_classes=3, size=(8, 8)):
    items = []
    for _ in range(batch):
        n = int(rng.integers(0, 4))  # some images without any object
        xy = rng.uniform(0, 20, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(2, 12, (n, 2))], 1)
        items.append(build_targets(boxes, rng.integers(0, num_classes, n), num_classes, size, stride=4))
    return {k: torch.from_numpy(np.stack([item[k] for item in items])) for k in items[0]}


def test_micro_batch_losses_rescaled_add_up_to_the_whole_batch_loss():
    rng = np.random.default_rng(0)
    criterion = CenterNetLoss()
    targets = random_targets(6, rng)
    outputs = {"heatmap": torch.randn(6, 3, 8, 8), "wh": torch.rand(6, 2, 8, 8) * 5, "offset": torch.rand(6, 2, 8, 8)}
    whole = criterion(outputs, targets)
    for splits in ([6], [2, 2, 2], [1, 5], [3, 1, 2]):
        bounds = np.cumsum([0, *splits])
        pieces = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        micro_targets = [{k: v[piece] for k, v in targets.items()} for piece in pieces]
        total = {name: 0.0 for name in ("heatmap_loss", "wh_loss", "offset_loss")}
        for piece, target, scale in zip(pieces, micro_targets, step_loss_scales(micro_targets)):
            losses = criterion({k: v[piece] for k, v in outputs.items()}, target)
            for name, factor in zip(total, scale):
                total[name] += losses[name].item() * factor
        for name, value in total.items():
            assert value == pytest.approx(whole[name].item(), rel=1e-5), (splits, name)
    # one micro-batch in one process: exactly the unscaled loss
    assert step_loss_scales([targets]) == [(1.0, 1.0, 1.0)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, num_train=8, num_val=4, seed=0, min_side=96, max_side=160, max_objects=4)
    return root


def tiny_config(data_dir, batch_size, **train) -> Config:
    config = Config()
    config.model.name = "centernet_mbv3_small"
    config.data.train_images, config.data.train_ann = str(data_dir / "train/images"), str(data_dir / "train/annotations.json")
    config.data.input_size = (64, 64)
    config.data.workers = 0
    config.train.epochs, config.train.batch_size, config.train.lr = 2, batch_size, 1e-3
    config.train.device = "cpu"
    for key, value in train.items():
        setattr(config.train, key, value)
    return config


def train_in_subprocesses(config, run_dir, tmp_path, processes):
    """Train ``config`` with the driver: under torchrun with ``processes`` > 1, else plainly;
    one thread per process in both (summation orders then differ only where the split does)."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else []
    command = [sys.executable, *launcher, str(driver), json.dumps(config.to_dict()), str(run_dir)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return [torch.load(run_dir / f"rank{rank}.pt", weights_only=True) for rank in range(processes)]


def epoch_losses(run_dir):
    with open(run_dir / "metrics.csv") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def test_torchrun_two_processes_with_sync_bn_equal_one_process_with_the_total_batch(data_dir, tmp_path):
    """2 processes x batch 2 with SyncBN and batch 4 in one process take the same steps: the same
    images per step (one (seed, epoch) order), the loss normalised over the step, BatchNorm
    statistics over the 4 images. Equal up to float rounding (sums in another order); the
    processes hold bitwise the same weights."""
    ranks = train_in_subprocesses(tiny_config(data_dir, 2, sync_bn=True, epochs=1), tmp_path / "ddp", tmp_path, 2)
    [reference] = train_in_subprocesses(tiny_config(data_dir, 4, sync_bn=True, epochs=1), tmp_path / "single",
                                        tmp_path, 1)
    assert ranks[0].keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # the processes hold one model
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert epoch_losses(tmp_path / "ddp") == pytest.approx(epoch_losses(tmp_path / "single"), rel=1e-4)
    assert len(list((tmp_path / "ddp" / "tensorboard").glob("events.out.tfevents.*"))) == 1  # rank 0 alone logs


@pytest.mark.slow
def test_torchrun_without_sync_bn_equals_gradient_accumulation_bitwise(data_dir, tmp_path):
    """Without SyncBN each process normalises its own 2 images, exactly as one process with
    batch 2 x accumulate 2 normalises each micro-batch: the parameters come out bitwise equal (the
    BatchNorm running statistics do not: DDP keeps rank 0's, accumulation sees all micro-batches)."""
    ranks = train_in_subprocesses(tiny_config(data_dir, 2), tmp_path / "ddp", tmp_path, 2)
    [reference] = train_in_subprocesses(tiny_config(data_dir, 2, accumulate=2), tmp_path / "single", tmp_path, 1)
    for name, value in reference.items():
        if "running_" not in name and "num_batches_tracked" not in name:
            assert torch.equal(ranks[0][name], ranks[1][name]) and torch.equal(ranks[0][name], value), name
