#!/usr/bin/env python
"""`make test-cuda`: everything only a CUDA GPU can confirm, in one command, with a
summary table printed last.

    python tools/cuda_check.py [--rounds 5] [--timeout 270]

It runs with whatever Python it is given (a GPU machine's own, holding PyTorch,
Lightning and numpy: `make test-cuda PYTHON=python3`), the source tree on its path,
no set-up. What the checks need beyond that (soundfile, soxr, rapidfuzz, pytest,
Pillow, captcha) `make cuda-wheels` downloads into .whl/ where pip works; this
script installs them from there (`pip install --no-index --find-links .whl ...`)
when they are missing.

Checks (every test marked `cuda`, and the CTC benchmark):
  - our CTC loss on CUDA against torch's native CUDA loss and a float64 CPU
    reference (losses and gradients, the CPU tests' edge cases), bitwise
    determinism across runs, a constant number of host synchronizations, the
    CUDA-graph path against the eager loop;
  - tools/bench_ctc.py --device cuda at the DeepSpeech2 shapes, with and without
    the CUDA graph, against torch's loss (time and memory ratios);
  - the recurrent layers' dtype under a bf16 autocast (float32, autocast off);
  - training steps of the demo model on CUDA in bf16 against the CPU in float32;
  - the start-up memory probe (asr.probe) on the GPU;
  - `asr transcribe --device cuda` against the CPU's text;
  - training steps of the OCR model (CRNN, conf/ocr/captcha.yaml) on CUDA with our
    CTC loss against the CPU with torch's.

Without a CUDA device it says so, lists the checks and exits 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NEEDED = {"soundfile": "soundfile", "soxr": "soxr", "rapidfuzz": "rapidfuzz",
          "pytest": "pytest", "pytest_timeout": "pytest-timeout", "PIL": "pillow",
          "captcha": "captcha"}  # fmt: skip
# The summary's groups: a row per group of cuda tests (by test name).
GROUPS = [
    ("CTC loss: CUDA vs torch's and float64 CPU", r"test_ctc\.py::(?!.*graph)"),
    ("CTC loss: CUDA graph vs eager", r"test_ctc\.py::.*graph"),
    ("RNN dtype under bf16 autocast", r"test_model\.py::"),
    ("demo model: bf16 steps on CUDA vs float32 CPU", r"test_cuda\.py::.*steps"),
    ("memory probe on the GPU", r"test_probe\.py::"),
    ("asr transcribe --device cuda vs cpu", r"test_cuda\.py::.*transcribe"),
    ("OCR CRNN: CUDA steps (our CTC) vs CPU (torch's)", r"test_ocr\.py::"),
]  # fmt: skip
# DeepSpeech2's shapes: batch x output frames x classes (29 characters; a BPE-like
# 1000 to see the compact emission table).
SHAPES = ["32x200x29", "32x400x29", "32x800x29", "32x400x1000"]


def install_missing() -> list[str]:
    missing = [pkg for mod, pkg in NEEDED.items() if not importlib.util.find_spec(mod)]
    wheels = ROOT / ".whl"
    if missing and wheels.is_dir():
        print(f"installing {' '.join(missing)} from {wheels}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index",
             "--find-links", str(wheels), *missing],
            check=False,
        )  # fmt: skip
        missing = [p for m, p in NEEDED.items() if not importlib.util.find_spec(m)]
    return missing


def run_tests(timeout: float, env: dict[str, str]) -> dict[str, str]:
    """Every test marked cuda -> its outcome (passed, failed, skipped, error)."""
    report = ROOT / ".cuda-check.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
           f"--junitxml={report}", "-o", "addopts=", "tests"]  # fmt: skip
    try:
        subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        print(f"the CUDA tests ran past {timeout:.0f} s", flush=True)
    outcomes: dict[str, str] = {}
    if not report.is_file():
        return outcomes
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').split('.')[-1]}.py::{case.get('name')}"
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                outcome += f": {(element.get('message') or '')[:100]}"
        outcomes[name] = outcome
    report.unlink()
    return outcomes


def run_bench(rounds: int, env: dict[str, str], timeout: float) -> tuple[int, str]:
    cmd = [sys.executable, "tools/bench_ctc.py", "--device", "cuda", "--cuda-graph",
           "both", "--rounds", str(rounds), "--shapes", *SHAPES]  # fmt: skip
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return 1, f"the benchmark ran past {timeout:.0f} s"
    return done.returncode, done.stdout + done.stderr


def summary(outcomes: dict[str, str], bench: tuple[int, str]) -> tuple[str, bool]:
    rows, ok = [], True
    for label, pattern in GROUPS:
        mine = {k: v for k, v in outcomes.items() if re.search(pattern, k)}
        passed = sum(v == "passed" for v in mine.values())
        bad = [f"{k} {v}" for k, v in mine.items() if v.startswith(("failed", "error"))]
        ok &= not bad and passed > 0
        state = "FAIL" if bad else ("ok" if passed else "not run")
        detail = "; ".join(bad) or f"{passed} of {len(mine)} tests passed"
        rows.append((label, state, detail))
    code, text = bench
    ok &= code == 0
    rows.append(("CTC benchmark (bench_ctc.py --device cuda)",
                 "ok" if code == 0 else "FAIL", "tables above"))  # fmt: skip
    width = max(len(r[0]) for r in rows)
    lines = [f"{'check'.ljust(width)}  result   details", "-" * (width + 40)]
    lines += [f"{a.ljust(width)}  {b.ljust(7)}  {c}" for a, b, c in rows]
    return "\n".join(lines), ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="benchmark rounds")
    parser.add_argument("--timeout", type=float, default=270, help="tests, seconds")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("make test-cuda: no CUDA device here; skipped every check. On a GPU "
              "machine it runs:")  # fmt: skip
        for label, _ in GROUPS:
            print(f"  - {label}")
        print("  - the CTC benchmark at", ", ".join(SHAPES), "with and without the "
              "CUDA graph")  # fmt: skip
        return 0
    start = time.perf_counter()
    version = sys.version.split()[0]
    print(f"{torch.cuda.get_device_name()}: torch {torch.__version__}, CUDA "
          f"{torch.version.cuda}, Python {version}", flush=True)  # fmt: skip
    missing = install_missing()
    if missing:
        print(f"missing {' '.join(missing)}: run `make cuda-wheels` where pip works "
              "and bring .whl/ along", flush=True)  # fmt: skip
        return 1
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}  # fmt: skip
    outcomes = run_tests(args.timeout, env)
    bench = run_bench(args.rounds, env, timeout=120)
    print(bench[1], flush=True)
    table, ok = summary(outcomes, bench)
    print(f"\nmake test-cuda: {time.perf_counter() - start:.0f} s\n{table}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
