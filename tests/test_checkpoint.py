import os
import pickle

import numpy as np
import pytest
import torch

from centernet.engine.checkpoint import (CheckpointError, load_checkpoint, rng_state, save_checkpoint,
                                         set_rng_state)


def test_round_trip_and_no_temporary_left(tmp_path):
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3, "config": {"a": [1, 2]}}
    save_checkpoint(state, tmp_path / "last.pt")
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["epoch"] == 3
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 1}, tmp_path / "last.pt")

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint({"model": {}, "bad": Unsaveable()}, tmp_path / "last.pt")
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    save_checkpoint({"model": {"w": torch.randn(1000)}}, tmp_path / "last.pt")
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)
    assert not marker.exists()
    with open(tmp_path / "raw.pt", "wb") as handle:  # a bare pickle, not a torch zip file
        pickle.dump(_Exploit(marker), handle)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "raw.pt")
    assert not marker.exists()


def test_rng_state_survives_a_checkpoint(tmp_path):
    import random

    state = rng_state()
    save_checkpoint({"model": {}, "rng": state}, tmp_path / "r.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
