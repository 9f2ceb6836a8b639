"""SIGKILL a training process mid-epoch and while it writes a checkpoint; resume; compare.

The training runs in subprocesses (``python -m centernet train``). A small driver stops the
process at an exact point (the N-th optimizer step, or halfway through writing the N-th
``last.pt``) and tells the test, which then kills it with SIGKILL: nothing in the process gets to
clean up, as with a power cut or the out-of-memory killer. The resumed run must end with exactly
the weights, EMA, optimizer state and per-epoch losses of a run that was never interrupted, and
``last.pt`` must be loadable after every kill.
"""

import csv
import os
import random
import signal
import subprocess
import sys

import pytest
import torch

from centernet.data.synthetic import generate_dataset
from centernet.engine.checkpoint import load_checkpoint

DRIVER = r'''
import io, os, sys, time
fault = os.environ.get("FAULT")
if fault:
    import torch
    kind, count = fault.split(":")
    seen = {"n": 0}

    def stop():
        print("FAULT", flush=True)
        time.sleep(600)  # the test kills us now

    if kind == "step":  # stop before the N-th optimizer step
        real_step = torch.optim.Adam.step

        def step(self, *args, **kwargs):
            seen["n"] += 1
            if seen["n"] == int(count):
                stop()
            return real_step(self, *args, **kwargs)

        torch.optim.Adam.step = step
    elif kind == "save":  # write half of the N-th last.pt, then stop
        real_save = torch.save

        def save(obj, handle, *args, **kwargs):
            target = os.readlink(f"/proc/self/fd/{handle.fileno()}") if hasattr(handle, "fileno") else ""
            if ".last.pt." in target:
                seen["n"] += 1
                if seen["n"] == int(count):
                    buffer = io.BytesIO()
                    real_save(obj, buffer, *args, **kwargs)
                    handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                    handle.flush()
                    os.fsync(handle.fileno())
                    stop()
            return real_save(obj, handle, *args, **kwargs)

        torch.save = save
from centernet.cli import main
sys.exit(main(sys.argv[1:]))
'''

LOSS_COLUMNS = ["loss", "heatmap_loss", "wh_loss", "offset_loss"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, num_train=8, num_val=4, seed=0, min_side=96, max_side=160, max_objects=4)
    return root


def train_command(driver, data_dir, run_dir, *extra):
    return [sys.executable, str(driver), "train", "--data", str(data_dir), "--model", "centernet_mbv3_small",
            "--input-size", "64", "--epochs", "2", "--batch-size", "2", "--workers", "0", "--device", "cpu",
            "--accumulate", "2", "--grad-clip", "5", "--no-eval-keep-res", "--ema", "--checkpoint-interval", "1",
            "--quiet", "--run-dir", str(run_dir), *extra]


def environment(fault=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("FAULT", None)
    if fault:
        env["FAULT"] = fault
    return env


def run_to_end(command, fault=None):
    result = subprocess.run(command, env=environment(fault), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def run_until_killed(command, fault):
    """Start ``command``, wait until the driver reports the fault point, SIGKILL it."""
    process = subprocess.Popen(command, env=environment(fault), stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()
        assert line.strip() == "FAULT", f"the run ended before its fault point ({fault})"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


def assert_same_run(run_dir, reference_dir):
    """Bitwise the same final checkpoint (weights, EMA, optimizer, scheduler) and epoch losses."""
    state, reference = load_checkpoint(run_dir / "last.pt"), load_checkpoint(reference_dir / "last.pt")
    for part in ("model", "ema"):
        assert state[part].keys() == reference[part].keys()
        for key, value in reference[part].items():
            assert torch.equal(state[part][key], value), f"{part} {key}"
    for key, value in reference["ema_state"]["average"].items():
        assert torch.equal(state["ema_state"]["average"][key], value), key
    for slot, values in reference["optimizer"]["state"].items():
        for name, value in values.items():
            assert torch.equal(state["optimizer"]["state"][slot][name], value), (slot, name)
    assert state["scheduler"] == reference["scheduler"] and state["epoch"] == reference["epoch"] == 1
    assert state["position"] is None and state["best_ap"] == reference["best_ap"]

    def losses(folder):
        with open(folder / "metrics.csv") as handle:
            return [[row["epoch"]] + [row[c] for c in LOSS_COLUMNS] for row in csv.DictReader(handle)]
    assert losses(run_dir) == losses(reference_dir) and len(losses(run_dir)) == 2


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill") / "reference"
    driver = folder.parent / "driver.py"
    driver.write_text(DRIVER)
    run_to_end(train_command(driver, data_dir, folder))
    return folder, driver


def test_sigkill_mid_epoch_and_while_saving_then_resume_gives_the_same_weights(data_dir, reference, tmp_path):
    reference_dir, driver = reference
    run_dir = tmp_path / "run"
    # 8 images, batch 2 x accumulate 2: 2 optimizer steps an epoch, last.pt after each. Killed
    # before step 2: last.pt holds epoch 1 step 1, and step 2 is replayed.
    run_until_killed(train_command(driver, data_dir, run_dir), "step:2")
    state = load_checkpoint(run_dir / "last.pt")
    assert state["epoch"] == -1 and state["position"]["epoch"] == 0 and state["position"]["step"] == 1

    # Resumed, then killed halfway through writing its second last.pt (epoch 2, step 1): the
    # previous last.pt (end of epoch 1) stays whole beside the half-written temporary file.
    run_until_killed(train_command(driver, data_dir, run_dir, "--resume"), "save:2")
    state = load_checkpoint(run_dir / "last.pt")
    assert state["epoch"] == 0 and state["position"] is None
    assert len(list(run_dir.glob(".last.pt.*.tmp"))) == 1

    run_to_end(train_command(driver, data_dir, run_dir, "--resume"))
    assert not list(run_dir.glob(".*.tmp"))
    assert_same_run(run_dir, reference_dir)


@pytest.mark.slow
def test_sigkill_at_random_moments_with_loader_workers(data_dir, tmp_path):
    """Kill at random times (also inside data loading with 2 workers, saving, validating) until the
    run completes; the result equals an uninterrupted run's."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    extra = ["--workers", "2"]
    run_to_end(train_command(driver, data_dir, tmp_path / "reference", *extra))
    run_dir, rng = tmp_path / "run", random.Random(0)
    for _ in range(40):
        resume = ["--resume"] if (run_dir / "last.pt").exists() else []
        process = subprocess.Popen(train_command(driver, data_dir, run_dir, *extra, *resume),
                                   env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            process.wait(timeout=rng.uniform(4, 12))
            break
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            if (run_dir / "last.pt").exists():
                load_checkpoint(run_dir / "last.pt")  # never corrupt
    assert process.returncode == 0, "the run did not complete within 40 attempts"
    assert_same_run(run_dir, tmp_path / "reference")


@pytest.mark.slow  # fp16 convolutions are slow on CPU
def test_resume_mid_epoch_with_fp16_amp_accumulation_and_clipping(data_dir, tmp_path, monkeypatch):
    """The grad scaler's state, the step position and the epoch's running losses come back from a
    mid-epoch last.pt: the resumed run equals the uninterrupted one bitwise (in one process)."""
    from centernet.config import Config
    from centernet.engine import trainer as trainer_module
    from centernet.engine.trainer import Trainer

    def config():
        values = Config()
        values.model.name = "centernet_mbv3_small"
        values.data.train_images = str(data_dir / "train/images")
        values.data.train_ann = str(data_dir / "train/annotations.json")
        values.data.input_size, values.data.workers = (64, 64), 0
        train = values.train
        train.epochs, train.batch_size, train.accumulate, train.lr, train.device = 1, 2, 2, 1e-3, "cpu"
        train.amp, train.amp_dtype, train.grad_clip, train.checkpoint_interval = True, "float16", 1.0, 1
        return values

    reference = Trainer(config(), tmp_path / "reference", progress=False)
    reference.fit()
    assert reference.scaler.is_enabled() and reference.scaler.get_scale() > 0

    real_save = trainer_module.save_checkpoint

    def crash_after_mid_epoch_save(state, path):
        real_save(state, path)
        position = state["position"]
        if position and (position["epoch"], position["step"]) == (0, 1):
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(trainer_module, "save_checkpoint", crash_after_mid_epoch_save)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config(), tmp_path / "run", progress=False).fit()
    monkeypatch.setattr(trainer_module, "save_checkpoint", real_save)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["position"]["step"] == 1 and state["scaler"]["scale"] > 0

    resumed = Trainer(config(), tmp_path / "run", resume=True, progress=False)
    assert (resumed.start_epoch, resumed.start_step) == (0, 1)
    resumed.fit()
    for key, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert resumed.scaler.state_dict() == reference.scaler.state_dict()
    with open(tmp_path / "run" / "metrics.csv") as run, open(tmp_path / "reference" / "metrics.csv") as expected:
        # epoch, lr and the four losses (the epoch's sums came back from the checkpoint)
        assert [row[:6] for row in csv.reader(run)] == [row[:6] for row in csv.reader(expected)]
