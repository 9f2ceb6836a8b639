"""Keep freed memory in the process: glibc's malloc settings for training and inference on CPU.

PyTorch's CPU allocator is plain ``malloc``/``free``. glibc serves every block above its mmap
threshold (128 KiB, growing to at most 32 MiB) with a fresh ``mmap`` and gives it back with
``munmap`` on ``free``; the next step's tensors of the same sizes then fault every page in again,
and the kernel zeroes each one. A CenterNet training step allocates and frees hundreds of MiB of
activations, so on CPU this page-fault churn shows as system time: ``centernet_mbv3_small`` at
512x512, batch 8, 2 threads spent 18.6 s of system time for 27.4 s of user time, and took 3.6 s a
step (measured, docs/benchmarks.md "Training throughput on CPU"). Inference has the same churn on
a smaller scale (about 19,000 page faults per DLA-34 forward at 512x512).

:func:`keep_freed_memory` tells glibc (``mallopt``) to serve large blocks from its heap and to keep
what is freed there for the next step: the same step then takes 1.8 s with 1.8 s of system time.
The price is a resident size that stays at the run's peak (+30 % in that measurement), which a
training process reaches anyway. No library exposes this setting (PyTorch's caching allocator is
for CUDA only, and jemalloc/tcmalloc would have to be preloaded before Python starts), hence the
few lines of ctypes.

It changes nothing where the C library is not glibc, and nothing when the user has set any of
glibc's own ``MALLOC_*_`` variables (theirs win).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

_done = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks for reuse instead of unmapping them; returns whether it did.

    Called once per process (the trainer and the CLI's fast inference paths call it; data-loader
    workers forked later inherit it).
    """
    global _done
    if _done:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name.startswith("MALLOC_") and name.endswith("_") for name in os.environ):
        return False  # the user tunes malloc through glibc's own variables
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # no mmap-served blocks (all come from the heaps), and never trim the heap's top (the largest
    # value the int parameter holds: 2 GiB)
    _done = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    return _done
