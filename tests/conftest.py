"""Shared fixtures."""

import errno
import os

import pytest

import centernet.io as cio


class FullDisk:
    """A file object that takes ``room`` bytes, then fails as a full disk does (ENOSPC)."""

    def __init__(self, handle, room):
        self.handle, self.room = handle, room

    def write(self, data):
        size = len(memoryview(data))
        if size > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= size
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(room=0, only="")``: from then on every write through centernet.io (all of
    centernet's outputs) to a destination whose path contains ``only`` fails with ENOSPC once
    ``room`` bytes of it are written, as on a full disk. ``full_disk.undo()`` makes room again."""
    real = cio._open_for_writing

    def fill(room=0, only=""):
        def opened(fd, path):
            handle = real(fd, path)
            return FullDisk(handle, room) if only in str(path) else handle

        monkeypatch.setattr(cio, "_open_for_writing", opened)

    fill.undo = lambda: monkeypatch.setattr(cio, "_open_for_writing", real)
    return fill
