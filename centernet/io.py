"""File primitives for every layer (the bottom one: it imports nothing from centernet).

Writing. Every file centernet writes is replaced whole or not at all: it is written to a
temporary file beside its destination, fsynced, and renamed over it. A write that fails (disk
full, quota, read-only folder, no permission) removes the temporary file, leaves the destination
as it was, and raises :class:`OutputError`, whose one-line message names the file and the
reason (``no space left on device: runs/x/last.pt (...)``). :func:`output_group` commits several
files together (an evaluation's eval.json and detections.json, a prediction folder): none is
replaced unless all were written. :func:`interrupts_deferred` lets Ctrl-C wait until a write
has finished.

Reading torch files. :func:`load_torch_file` reads a ``torch.save`` file with
``weights_only=True`` (no code from the file runs), after checking from the zip directory that it
cannot inflate beyond what its size or the free memory allows (a zip bomb is refused before
anything is inflated); refusals and damaged files raise the caller's exception types with one
line naming the file. :func:`check_finite` refuses weights holding NaN or infinite values.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import signal
import tempfile
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping

__all__ = ["OutputError", "atomic_open", "write_bytes", "write_text", "write_json", "output_group",
           "OutputGroup", "interrupts_deferred", "read_text", "load_torch_file", "check_zip_size",
           "check_finite"]

_REASONS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file too large for the file system", errno.EROFS: "read-only file system",
            errno.EACCES: "permission denied", errno.EPERM: "permission denied",
            errno.EISDIR: "a folder is in the way", errno.ENOTDIR: "a file is in the way of its folder"}
_SHOWN = 5  # tensor names listed in a message


class OutputError(OSError):
    """An output file could not be written; what was at its path before is unchanged."""

    def __init__(self, error: OSError, path: str | Path, reason: str | None = None):
        reason = reason or _REASONS.get(error.errno) or error.strerror or str(error)
        super().__init__(error.errno, reason, str(path))
        self.message = f"{reason}: {path} (nothing there was replaced)"

    def __str__(self) -> str:
        return self.message


def _output_error(error: BaseException, path: str | Path) -> BaseException:
    """``error`` as an :class:`OutputError` naming ``path`` when it is an OSError of writing."""
    if isinstance(error, OutputError) or not isinstance(error, OSError):
        return error
    return OutputError(error, path)


class _RecordingWriter:
    """A binary handle that remembers the OSError of a failed write: ``torch.save`` turns it into
    an opaque RuntimeError, :func:`atomic_open` turns it back into an :class:`OutputError`."""

    def __init__(self, handle: BinaryIO):
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        try:
            self._handle.flush()
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name: str):
        return getattr(self._handle, name)


def _temporary(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path`` (its folder made if needed): (fd, name)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except (FileExistsError, NotADirectoryError) as error:  # a file where a folder should be
        blocker = next((folder for folder in path.parents if folder.exists() and not folder.is_dir()), path.parent)
        raise OutputError(error, path, f"{blocker} is a file, not a folder") from None
    except OSError as error:
        raise _output_error(error, path) from None


def _fsync(name: str | Path) -> None:
    """fsync a file or a folder (the folder: so that a rename in it is durable)."""
    descriptor = os.open(name, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _open_for_writing(fd: int, path: Path) -> BinaryIO:
    """The binary file object every write goes through (``path``: its destination; tests replace
    this to simulate a full disk)."""
    return os.fdopen(fd, "wb")


@contextmanager
def _written_temporary(path: Path) -> Iterator[tuple[_RecordingWriter, str]]:
    """A handle on a temporary file beside ``path``, flushed and fsynced when the block ends; the
    temporary file is removed if anything fails (its OSError raised as an OutputError)."""
    fd, tmp_name = _temporary(path)
    try:
        with _open_for_writing(fd, path) as raw:
            handle = _RecordingWriter(raw)
            try:
                yield handle, tmp_name
            except BaseException:
                if handle.error is not None:  # a failed write, whatever the writer made of it
                    raise _output_error(handle.error, path) from None
                raise
            try:
                handle.flush()
                os.fsync(raw.fileno())
            except OSError as error:
                raise _output_error(error, path) from None
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """A binary handle on a temporary file beside ``path``; when the block ends without error the
    file is fsynced and renamed to ``path``, otherwise removed (``path`` is never half-written).
    A failed write raises :class:`OutputError` naming ``path``."""
    path = Path(path)
    with _written_temporary(path) as (handle, tmp_name):
        yield handle
    try:
        os.replace(tmp_name, path)
    except OSError as error:
        Path(tmp_name).unlink(missing_ok=True)
        raise _output_error(error, path) from None
    _fsync(path.parent)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_open(path) as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def _json_bytes(value: Any, indent: int | None) -> bytes:
    return json.dumps(value, indent=indent).encode("utf-8")


def write_json(path: str | Path, value: Any, indent: int | None = None) -> Path:
    """Write ``value`` as JSON to ``path`` atomically; returns ``path``."""
    return write_bytes(path, _json_bytes(value, indent))


class OutputGroup:
    """Files written now and renamed into place together by :func:`output_group`."""

    def __init__(self):
        self._pending: list[tuple[str, Path]] = []  # (temporary file, destination)

    def write_bytes(self, path: str | Path, data: bytes) -> Path:
        path = Path(path)
        with _written_temporary(path) as (handle, tmp_name):
            self._pending.append((tmp_name, path))
            handle.write(data)
        return path

    def write_text(self, path: str | Path, text: str) -> Path:
        return self.write_bytes(path, text.encode("utf-8"))

    def write_json(self, path: str | Path, value: Any, indent: int | None = None) -> Path:
        return self.write_bytes(path, _json_bytes(value, indent))

    def temporary_path(self, path: str | Path) -> Path:
        """An empty temporary file beside ``path`` with its suffix, for a writer that needs a file
        name (OpenCV's video writer); it becomes ``path`` with the group, or is removed."""
        path = Path(path)
        fd, tmp_name = _temporary(path.with_name(path.stem))
        os.close(fd)
        renamed = f"{tmp_name}{path.suffix}"
        os.replace(tmp_name, renamed)
        self._pending.append((renamed, path))
        return Path(renamed)

    def _commit(self) -> None:
        for position, (tmp_name, path) in enumerate(self._pending):
            try:
                _fsync(tmp_name)
                os.replace(tmp_name, path)
            except OSError as error:
                self._pending = self._pending[position + 1:]
                Path(tmp_name).unlink(missing_ok=True)
                raise _output_error(error, path) from None
        for folder in {path.parent for _, path in self._pending}:
            _fsync(folder)
        self._pending = []

    def _discard(self) -> None:
        for tmp_name, _ in self._pending:
            Path(tmp_name).unlink(missing_ok=True)
        self._pending = []


@contextmanager
def output_group() -> Iterator[OutputGroup]:
    """Write several files all or none: each ``group.write_*`` goes to a temporary file beside its
    destination; when the block ends without error they are renamed into place (Ctrl-C waits for
    the renames), otherwise all are removed and every destination keeps what it held."""
    group = OutputGroup()
    try:
        yield group
    except BaseException:
        group._discard()
        raise
    try:
        with interrupts_deferred():
            group._commit()
    finally:
        group._discard()


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Ctrl-C (SIGINT) during the block takes effect when it ends, so that a write in progress
    finishes. Outside the main thread (where signals cannot be handled) the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        if previous is signal.default_int_handler or previous is None:
            raise KeyboardInterrupt
        if callable(previous):
            previous(signal.SIGINT, None)


def read_text(path: str | Path, error_type: type[Exception] = ValueError) -> str:
    """The UTF-8 text of ``path``; a file in another encoding raises ``error_type`` naming it."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise error_type(f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
                         f"save it as UTF-8") from None


# ---------------------------------------------------------------------------------- torch files

def _available_memory() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def check_zip_size(path: Path, refused: type[Exception], corrupt: type[Exception]) -> None:
    """Refuse a zip file (``torch.save``'s format) whose entries would inflate beyond what such a
    file can hold, from its directory alone: ``torch.save`` stores tensors uncompressed, so a
    genuine file inflates to about its own size; the bound is twice that plus 64 MiB, and the
    memory available."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as error:
        raise corrupt(f"{path}: not a readable zip archive (truncated or corrupt?): {error}") from None
    if inflated > 2 * size + (64 << 20):
        raise refused(f"{path}: refused to load: its zip entries would inflate to {_gib(inflated)} from a "
                      f"{_gib(size)} file, far more than a torch file holds (a zip bomb?)")
    available = _available_memory()
    if available is not None and inflated > available:
        raise refused(f"{path}: refused to load: it inflates to {_gib(inflated)} but only {_gib(available)} "
                      f"of memory is available")


def _refusal_reason(error: Exception) -> str:
    """What torch's weights-only refusal says was refused, without its advice (which is to load
    the file unsafely)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    found = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: Please use|$)", text, re.M)
    if found and found.group(1).strip():
        return found.group(1).strip()
    advice = ("weights_only", "torch.load", "http", "Weights only", "Please file an issue")
    for paragraph in (part.strip() for part in text.split("\n\n")):
        line = " ".join(paragraph.split())
        if line and not any(word in line for word in advice):
            return line
    return "Python objects"


def load_torch_file(path: str | Path, what: str = "file", refused: type[Exception] = ValueError,
                    corrupt: type[Exception] = ValueError) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors naming ``path``:
    ``refused`` for a file that asks for anything beyond tensors and plain data (never run) or
    would inflate too far, ``corrupt`` for a truncated or damaged one (``what`` names the kind)."""
    import torch

    path = Path(path)
    if zipfile.is_zipfile(path):
        check_zip_size(path, refused, corrupt)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _refusal_reason(error)
        if not re.search(r"global|class|reduce|persistent|Python objects", reason, re.I):  # no pickle at all
            raise corrupt(f"{path}: not a readable {what} (truncated, corrupt or another format?): {reason}") from None
        raise refused(f"{path}: refused to load: the file holds objects other than tensors and plain data "
                      f"({reason}); a {what} holds only tensors, numbers and strings") from None
    except MemoryError:
        raise refused(f"{path}: not enough memory to load it") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError) as error:
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        reason = re.sub(r"\s*\(Could this error message be improved\?.*$", "", reason)  # torch's aside
        raise corrupt(f"{path}: not a readable {what} (truncated or corrupt?): {reason}") from None


def check_finite(tensors: Mapping[str, Any], path: str | Path, error_type: type[Exception] = ValueError) -> None:
    """Raise ``error_type`` naming ``path`` and the first tensors holding NaN or infinite values."""
    import torch

    bad = [name for name, value in tensors.items() if isinstance(value, torch.Tensor)
           and value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        shown = ", ".join(bad[:_SHOWN]) + (f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else "")
        raise error_type(f"{path}: {len(bad)} tensor(s) hold NaN or infinite values ({shown}); these weights "
                         f"cannot detect anything (saved from a diverged run?)")
