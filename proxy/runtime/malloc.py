"""glibc malloc settings for a process that streams big chunks read by many threads.

Each chunk (1 MiB by default) is allocated by whichever worker thread read it. glibc gives
threads arenas of their own (up to eight per core), whose heaps fragment and seldom shrink, so
the server's memory crept up with every slow client: two arenas stop that. The mmap threshold
is fixed above the chunk size, or every chunk would be mapped, page-faulted and unmapped; a
fixed threshold also keeps glibc from moving it. Fixing it also fixes the trim threshold at
glibc's 128 KiB, which hands every freed chunk at the top of a heap back to the kernel, to be
faulted in again for the next one: keeping up to 8 MiB free there, a few chunks per arena,
bounds what is retained and removes those faults. The figures are in bench/README.md.
"""

from __future__ import annotations

import ctypes
import os

# mallopt(3) parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

ARENA_MAX = 2
MMAP_THRESHOLD = 4 * 1024 * 1024  # above the default chunk size: chunks reuse heap memory
TRIM_THRESHOLD = 8 * 1024 * 1024  # free memory a heap keeps at its top for the next chunks


def tune_malloc() -> bool:
    """Apply the settings to this process and, through the environment, to its workers.

    Returns False where the C library is not glibc (nothing to tune, nothing done).
    An operator's own ``MALLOC_ARENA_MAX`` / ``MALLOC_MMAP_THRESHOLD_`` /
    ``MALLOC_TRIM_THRESHOLD_`` wins.
    """
    try:
        # The symbols already loaded, the C library's among them: no search for its file
        # (``ctypes.util.find_library`` runs ldconfig in a subprocess).
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    arena_max = int(os.environ.setdefault("MALLOC_ARENA_MAX", str(ARENA_MAX)))
    mmap_threshold = int(os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD)))
    trim_threshold = int(os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(TRIM_THRESHOLD)))
    return all(
        mallopt(parameter, value)
        for parameter, value in (
            (M_ARENA_MAX, arena_max),
            (M_MMAP_THRESHOLD, mmap_threshold),
            (M_TRIM_THRESHOLD, trim_threshold),
        )
    )
