"""centernet.io: outputs replaced whole or not at all (a full disk, a failed fsync, Ctrl-C), one-line
errors naming the file, torch files refused before they inflate, non-finite weights refused."""

import errno
import os
import signal

import pytest
import torch

import centernet.io as cio
from centernet.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from conftest import zip_bomb


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or ".tmp." in p.name)


def test_a_full_disk_keeps_the_previous_file_and_names_it(tmp_path, full_disk):
    path = tmp_path / "eval.json"
    cio.write_json(path, {"AP": 0.5})
    full_disk(room=3)
    with pytest.raises(cio.OutputError) as caught:
        cio.write_json(path, {"AP": 0.75, "AP50": 0.9})
    assert str(caught.value) == f"no space left on device: {path} (nothing there was replaced)"
    assert caught.value.errno == errno.ENOSPC and "\n" not in str(caught.value)
    assert path.read_text() == '{"AP": 0.5}' and leftovers(tmp_path) == []


def test_a_failed_fsync_is_a_full_disk_too(tmp_path, monkeypatch):
    path = tmp_path / "x.txt"
    cio.write_text(path, "old")

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cio.os, "fsync", fsync)
    with pytest.raises(cio.OutputError, match="no space left on device: .*x.txt"):
        cio.write_text(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old" and leftovers(tmp_path) == []


def test_torch_save_on_a_full_disk_says_so_instead_of_an_enforce_failure(tmp_path, full_disk):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 0}, path)
    before = path.read_bytes()
    full_disk(room=1000)
    state = {"model": {"w": torch.zeros(100_000)}, "epoch": 1}
    with pytest.raises(cio.OutputError, match=f"no space left on device: {path}"):
        save_checkpoint(state, path)
    assert path.read_bytes() == before and leftovers(tmp_path) == []
    full_disk.undo()
    save_checkpoint(state, path)  # room again: written whole
    assert load_checkpoint(path)["epoch"] == 1


def test_an_output_group_replaces_all_its_files_or_none(tmp_path, full_disk):
    first, second = tmp_path / "eval.json", tmp_path / "detections.json"
    cio.write_text(first, "old eval")
    cio.write_text(second, "old detections")
    full_disk(only="eval.json")  # the second file of the group fails
    with pytest.raises(cio.OutputError, match="eval.json"):
        with cio.output_group() as out:
            out.write_text(second, "new detections")
            out.write_text(first, "new eval")
    assert (first.read_text(), second.read_text()) == ("old eval", "old detections")
    assert leftovers(tmp_path) == []
    full_disk.undo()
    with cio.output_group() as out:
        out.write_text(second, "new detections")
        out.write_text(first, "new eval")
    assert (first.read_text(), second.read_text()) == ("new eval", "new detections")


def test_an_output_group_left_by_an_exception_replaces_nothing(tmp_path):
    path = tmp_path / "a.jpg"
    cio.write_bytes(path, b"old")
    with pytest.raises(ValueError, match="unreadable"):
        with cio.output_group() as out:
            out.write_bytes(path, b"new")
            video = out.temporary_path(tmp_path / "clip.mp4")
            assert video.suffix == ".mp4" and video.parent == tmp_path
            raise ValueError("unreadable image")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg"]


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt, as in a terminal (a CI job run in the background may
    start with SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_a_checkpoint_write_waits_until_the_file_is_whole(tmp_path, monkeypatch, ctrl_c_raises):
    path = tmp_path / "last.pt"
    real_save = torch.save

    def save_interrupted_halfway(obj, handle):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives while the file is being written
        real_save(obj, handle)

    monkeypatch.setattr(torch, "save", save_interrupted_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {"w": torch.arange(5.0)}, "epoch": 3}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 3  # the write finished before the interrupt took effect
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_zip_bomb_is_refused_from_its_directory_before_anything_inflates(tmp_path, monkeypatch):
    bomb = zip_bomb(tmp_path / "weights.pth", 200 << 20)
    assert bomb.stat().st_size < 1 << 20

    def never(*args, **kwargs):
        raise AssertionError("torch.load was called on a zip bomb")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(ValueError) as caught:
        cio.load_torch_file(bomb, "weights file")
    message = str(caught.value)
    assert message.startswith(f"{bomb}: refused to load") and "200.0 MiB" in message and "zip bomb" in message
    with pytest.raises(CheckpointError, match="zip bomb"):
        load_checkpoint(bomb)


def test_a_genuine_torch_file_passes_the_size_check(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(1 << 20)}, path)  # 4 MiB of tensor data, stored
    assert torch.equal(cio.load_torch_file(path)["w"], torch.zeros(1 << 20))


def test_refusing_a_pickle_never_advises_loading_it_unsafely(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("true",))

    for kind, legacy in (("zip", False), ("legacy", True)):
        path = tmp_path / f"{kind}.pt"
        torch.save({"model": {}, "x": Exploit()}, path, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(ValueError) as caught:
            cio.load_torch_file(path, "checkpoint")
        message = str(caught.value)
        assert message.startswith(f"{path}: refused to load") and "system" in message, message
        assert "weights_only" not in message and "\n" not in message, message


def test_non_finite_weights_are_refused_naming_the_tensors(tmp_path):
    weights = {"a": torch.ones(2), "b": torch.tensor([1.0, float("nan")]), "c": torch.tensor([float("inf")]),
               "index": torch.tensor([7])}
    with pytest.raises(ValueError, match=r"x.pt: 2 tensor\(s\) hold NaN or infinite values \(b, c\)"):
        cio.check_finite(weights, "x.pt")
    cio.check_finite({"a": torch.ones(2), "index": torch.tensor([7])}, "x.pt")


def test_text_in_another_encoding_is_named(tmp_path):
    path = tmp_path / "names.txt"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=f"{path}: not UTF-8 text \\(byte 0xe9 at offset 3\\)"):
        cio.read_text(path)
    path.write_bytes("\ufeffcaf\xe9".encode("utf-8"))  # a byte-order mark is not part of the text
    assert cio.read_text(path) == "caf\xe9"
