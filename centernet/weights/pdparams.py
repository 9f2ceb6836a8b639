"""Reading PaddlePaddle ``.pdparams`` files without running code from them.

A ``.pdparams`` file is a pickle of ``{parameter name: numpy array}`` (``paddle.save`` of a state
dict). Unpickling can call any importable function, so the unpickler here admits only the few
globals that rebuild numpy arrays; any other global stops the load with
:class:`UnsafeWeightsError` before it is called.

What ``paddle.save`` emits (checked against paddlepaddle 3.3.1, protocols 2 and 4):
``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``; protocol 2 adds
``_codecs.encode`` (for the raw bytes); a tensor saved outside a plain state dict is written as
``builtins.tuple`` of ``(name, array)``; and the dict carries an entry
``StructuredToParameterName@@`` mapping our names to Paddle's internal ones, which is dropped.
"""

from __future__ import annotations

import codecs
import collections
import pickle
from pathlib import Path

import numpy as np

__all__ = ["WeightsError", "UnsafeWeightsError", "WeightsFormatError", "read_pdparams",
           "restricted_load"]

# the name table paddle.save appends to every state dict; not a parameter
PADDLE_NAME_TABLE = "StructuredToParameterName@@"


class WeightsError(ValueError):
    """A weights file that cannot be used; the message names the file."""


class UnsafeWeightsError(WeightsError):
    """The file asks to call something other than numpy array reconstruction."""


class WeightsFormatError(WeightsError):
    """The file is truncated, corrupt, or not a parameter dict."""


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, and nothing else."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]  # numpy's _reconstruct, in numpy 1.x and 2.x

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # files written under numpy 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "tuple"): tuple,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise UnsafeWeightsError(
                f"{self.path}: refused to load: the file asks for the global {module}.{name}; "
                f"a weights file needs only numpy arrays (is it really a weights file?)")
        return allowed

    def persistent_load(self, pid):
        raise UnsafeWeightsError(f"{self.path}: refused to load: the file uses persistent ids, "
                                 f"which a .pdparams file does not")


def restricted_load(path) -> object:
    """Unpickle ``path`` admitting only numpy-array globals; return the object."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return _RestrictedUnpickler(handle, path).load()
    except WeightsError:
        raise
    except FileNotFoundError:
        raise FileNotFoundError(f"weights file not found: {path}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, OverflowError, MemoryError, UnicodeDecodeError) as error:
        raise WeightsFormatError(f"{path}: not a readable weights file (truncated or corrupt?): "
                                 f"{type(error).__name__}: {error}") from None


def read_pdparams(path) -> dict[str, np.ndarray]:
    """Read a ``.pdparams`` file into ``{name: numpy array}`` in the file's order.

    Raises :class:`UnsafeWeightsError` when the file refers to anything beyond numpy arrays (the
    callable is never run) and :class:`WeightsFormatError` for a truncated file or one that is
    not a flat dict of arrays; both messages name the file.
    """
    path = Path(path)
    state = restricted_load(path)
    if not isinstance(state, dict):
        raise WeightsFormatError(f"{path}: expected a dict of parameters, found "
                                 f"{type(state).__name__}")
    arrays = {}
    for name, value in state.items():
        if name == PADDLE_NAME_TABLE:
            continue
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], np.ndarray):
            value = value[1]  # (paddle's internal name, array)
        if not isinstance(name, str) or not isinstance(value, np.ndarray):
            raise WeightsFormatError(f"{path}: entry {name!r} is a {type(value).__name__}, not "
                                     f"an array; not a parameter file")
        if value.dtype.hasobject:
            raise WeightsFormatError(f"{path}: entry {name!r} holds Python objects, not numbers")
        arrays[name] = value
    if not arrays:
        raise WeightsFormatError(f"{path}: holds no parameters")
    return arrays
