"""The memory allocator: tcmalloc instead of glibc's malloc, when it is installed.

Training on utterances of every length allocates tensors of ever-changing sizes, and
glibc's malloc does not give the freed memory back or reuse it well: the demo's
training process grew by about 7 MB per step (4.5 GB after two of its three passes)
and slowed down as it grew (75x real time in its third pass against 128x for the same
pass resumed in a fresh process). With tcmalloc (Debian's libtcmalloc-minimal4) the
same loop stays near 1.5 GB and runs faster (docs/benchmarks.md, "Memory allocator
in training"; tools/bench_alloc.py).

An allocator can only be chosen before the process starts, so the ``asr`` command
re-executes itself once with tcmalloc in ``LD_PRELOAD`` (before importing torch).
``ASR_ALLOCATOR=system`` keeps glibc's malloc.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["allocator", "find_tcmalloc", "tcmalloc_env", "use_tcmalloc"]

_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
)
_MARK = "ASR_ALLOCATOR_REEXEC"


def find_tcmalloc() -> str | None:
    """The path of an installed tcmalloc shared library, or None."""
    for d in _DIRS:
        for name in _NAMES:
            path = Path(d) / name
            if path.is_file():
                return str(path)
    return None


def allocator() -> str:
    """``"tcmalloc"`` if this process runs on tcmalloc, else ``"system"``."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return "tcmalloc" if "libtcmalloc" in maps else "system"


def tcmalloc_env(lib: str, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with tcmalloc's library ``lib`` first in ``LD_PRELOAD``: the
    environment of a process that runs on tcmalloc."""
    out = dict(env)
    out["LD_PRELOAD"] = ":".join(p for p in (lib, out.get("LD_PRELOAD")) if p)
    # tcmalloc reports every allocation over 1 GB on stderr by default; a long
    # utterance's activations in a large batch are no reason to alarm anyone.
    out.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
    return out


def use_tcmalloc() -> None:
    """Re-execute this process with tcmalloc preloaded, if it is installed and not
    in use yet; otherwise return and carry on with the current allocator.

    Call it first thing in a command's entry point: the process is replaced (same
    pid, same arguments, same environment plus ``LD_PRELOAD``), so nothing done
    before the call survives. Child processes (data loader workers, DDP ranks)
    inherit the environment and need no second re-execution.
    """
    if (
        not sys.platform.startswith("linux")
        or os.environ.get("ASR_ALLOCATOR", "tcmalloc") == "system"
        or os.environ.get(_MARK)  # re-executed once already: never loop
        or allocator() == "tcmalloc"
    ):
        return
    lib = find_tcmalloc()
    if lib is None:
        return
    env = tcmalloc_env(lib, os.environ)
    env[_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:
        return  # cannot re-execute (unusual sandbox): run on as we are
