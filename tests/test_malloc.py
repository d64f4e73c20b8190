"""The `asr` command re-executes itself on tcmalloc (asr/malloc.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from asr.malloc import find_tcmalloc

PROBE = (
    "import sys\n"
    "from asr.malloc import allocator, use_tcmalloc\n"
    "print('before', flush=True)\n"
    "use_tcmalloc()\n"
    "print(allocator(), sys.argv[1:])\n"
)


def probe(*args: str, **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ASR_ALLOC")}
    environ.pop("LD_PRELOAD", None)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stderr == ""
    return out.stdout.splitlines()


@pytest.mark.skipif(
    find_tcmalloc() is None, reason="libtcmalloc-minimal4 is not installed"
)
def test_reexecutes_once_on_tcmalloc_with_the_same_arguments():
    # 'before' twice: once in the first process, once after the re-execution.
    assert probe("a", "b c") == ["before", "before", "tcmalloc ['a', 'b c']"]


def test_system_allocator_on_request():
    assert probe("x", ASR_ALLOCATOR="system") == ["before", "system ['x']"]


def test_the_command_runs_on_tcmalloc():
    """`python -m asr` (what the recipes run) answers as usual."""
    out = subprocess.run(
        [sys.executable, "-m", "asr", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "transcribe" in out.stdout and out.stderr == ""
