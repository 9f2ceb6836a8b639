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

# The SyncBN test compares the FIRST optimizer step's gradients, the quantity DDP must get right
# (the same images, the loss normalised over the whole step, BatchNorm statistics over all
# processes, gradients averaged), not weights after several steps: the tiny model at 64x64
# (BatchNorm over 2x2 maps) amplifies float rounding from step to step, and how much depends on
# the machine's SIMD kernels (an AVX2-only EPYC drifted past 1e-5 after 2 steps where an AVX-512
# one did not). Measured on this project's AMD EPYC (AVX-512), each run with
# ATEN_CPU_CAPABILITY=default/avx2/avx512: the distance between the first-step gradients of
# 2 processes x batch 2 and 1 process x batch 4, summed over all tensors, is 5e-6 to 1e-5 of the
# gradient's norm (1 process with 1 or 2 threads: 4e-6, the same rounding noise); a real
# divergence is 1.3 of it (2 processes without SyncBN). GRADIENT_TOLERANCE sits 100x above the
# noise and 1000x below that divergence.
GRADIENT_TOLERANCE = 1e-3  # of the gradient's global norm
DRIVER = r"""
import json, sys
import torch
from centernet.config import Config
from centernet.engine import distributed
from centernet.engine.trainer import Trainer

config, run_dir = Config.from_dict(json.loads(sys.argv[1])), sys.argv[2]
trainer = Trainer(config, run_dir, progress=False)
names = {id(p): n for n, p in trainer.model.named_parameters()}


class RecordingSGD(torch.optim.SGD):  # keeps its first step's gradients (after DDP's all-reduce)
    first_step = None

    def step(self, closure=None):
        if RecordingSGD.first_step is None:
            RecordingSGD.first_step = {names[id(p)]: p.grad.detach().clone()
                                       for group in self.param_groups for p in group["params"]}
        return super().step(closure)


trainer.optimizer = RecordingSGD(trainer.model.parameters(), lr=0.05, momentum=0.9)
trainer.scheduler = torch.optim.lr_scheduler.StepLR(trainer.optimizer, 1, 0.5)
trainer.fit()
rank = trainer.process.rank
torch.save(trainer.model.state_dict(), f"{run_dir}/rank{rank}.pt")
torch.save(RecordingSGD.first_step, f"{run_dir}/gradients{rank}.pt")
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


def train_in_subprocesses(config, run_dir, tmp_path, processes, saved="rank"):
    """Train ``config`` with the driver: under torchrun with ``processes`` > 1, else plainly;
    one thread per process in both (summation orders then differ only where the split does).
    Returns each process's final weights (``saved="rank"``) or first-step gradients (``"gradients"``)."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else []
    command = [sys.executable, *launcher, str(driver), json.dumps(config.to_dict()), str(run_dir)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return [torch.load(run_dir / f"{saved}{rank}.pt", weights_only=True) for rank in range(processes)]


def epoch_losses(run_dir):
    with open(run_dir / "metrics.csv") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def gradient_distance(gradients, reference):
    """Per tensor and over all tensors: the distance to the ``reference`` gradients, as a fraction
    of the reference's global norm."""
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in reference.values()))
    per_tensor = {key: ((gradients[key].double() - g.double()).norm() / norm).item() for key, g in reference.items()}
    total = torch.sqrt(sum(((gradients[key].double() - g.double()) ** 2).sum() for key, g in reference.items()))
    return per_tensor, (total / norm).item()


def test_torchrun_two_processes_with_sync_bn_equal_one_process_with_the_total_batch(data_dir, tmp_path):
    """2 processes x batch 2 with SyncBN and batch 4 in one process take the same first step: the
    same images (one (seed, epoch) order), the loss normalised over the step, BatchNorm statistics
    over the 4 images, so the same gradients up to float rounding (GRADIENT_TOLERANCE: measured
    bound). The processes hold bitwise the same weights; the epoch's losses agree."""
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    ranks = train_in_subprocesses(tiny_config(data_dir, 2, sync_bn=True, epochs=1), ddp_dir, tmp_path, 2)
    [reference] = train_in_subprocesses(tiny_config(data_dir, 4, sync_bn=True, epochs=1), single_dir, tmp_path, 1,
                                        saved="gradients")
    assert ranks[0].keys() == ranks[1].keys()
    for key, value in ranks[0].items():
        assert torch.equal(value, ranks[1][key]), key  # the processes hold one model
    gradients = torch.load(ddp_dir / "gradients0.pt", weights_only=True)
    assert gradients.keys() == reference.keys()
    per_tensor, total = gradient_distance(gradients, reference)
    worst = max(per_tensor, key=per_tensor.get)
    assert total < GRADIENT_TOLERANCE, (total, worst, per_tensor[worst])
    assert epoch_losses(ddp_dir) == pytest.approx(epoch_losses(single_dir), rel=1e-4)
    assert len(list((ddp_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1  # rank 0 alone logs


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
