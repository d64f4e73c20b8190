#!/usr/bin/env python
"""Memory of ``asr transcribe`` as the number of files grows: it must stay flat.

Generates ``--files`` short recordings (copies of a few espeak-ng sentences, 16 kHz
FLAC) and runs the command, one process per row, on the first 100, 500 and 1,000
of them (``--counts``), printing each process's peak RSS (``VmHWM``) and its ratio to
the smallest run's, measured in the same run: what the model, the libraries and one
batch need is the same in every row, so any growth is per-file memory kept (results,
waveforms, tensors). Two outputs: one JSON document (``-o out.json``, every result
held until the end by design) and one text file per input (``-o DIR/``); and two
batch sizes (``--batch-seconds``): the default 300 s, where 100 of these files make
less than one full batch (so the smallest run's peak is lower for that reason
alone), and 30 s, where every run holds many full batches.

    python tools/bench_memory.py [--checkpoint exp/demo/model.ckpt] [--files 1000]
        [--counts 100 500 1000] [--batch-seconds 300 30] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SENTENCES = [
    "the cat sat on the mat",
    "a quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "good morning to you all",
    "the rain in spain falls mainly on the plain",
]
VOICES = ["en-us", "en-gb", "en-us+f3"]

# Runs the command (on tcmalloc when installed, as `asr` runs) and prints the
# process's peak RSS (VmHWM of the exec'd address space; ru_maxrss would count pages
# shared with this parent before exec).
_CHILD = """\
import re, sys
from asr.malloc import use_tcmalloc
use_tcmalloc()  # as the `asr` command does (asr.cli.entry)
from asr.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:  # --help
    code = e.code
status = open("/proc/self/status").read()
print("VmHWM_kB", re.search(r"VmHWM:\\s+(\\d+)", status).group(1), file=sys.stderr)
sys.exit(code)
"""


def speak(text: str, voice: str, path: Path) -> None:
    """One sentence as 16 kHz mono FLAC (espeak-ng, then sox)."""
    wav = path.with_suffix(".tmp.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True)
    subprocess.run(
        ["sox", "-D", str(wav), "-r", "16000", "-c", "1", str(path)],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    wav.unlink()


def make_files(directory: Path, n: int) -> list[Path]:
    """``n`` files: the sentences in every voice, copied round-robin."""
    directory.mkdir(parents=True, exist_ok=True)
    originals = directory / "originals"
    originals.mkdir(exist_ok=True)
    sources = []
    for v, voice in enumerate(VOICES):
        for s, text in enumerate(SENTENCES):
            path = originals / f"{v}-{s}.flac"
            if not path.exists():
                speak(text, voice, path)
            sources.append(path)
    files = []
    for i in range(n):
        path = directory / "all" / f"{i:05d}.flac"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            shutil.copyfile(sources[i % len(sources)], path)
        files.append(path)
    return files


def subset(files: list[Path], n: int, directory: Path) -> Path:
    """A directory holding the first ``n`` files (symbolic links)."""
    d = directory / f"first{n}"
    if not d.exists():
        d.mkdir()
        for f in files[:n]:
            (d / f.name).symlink_to(f)
    return d


def child(argv: list[str]) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS MiB, exit status, stderr) of ``asr argv``."""
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *argv],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    wall = time.perf_counter() - start
    found = re.search(r"VmHWM_kB (\d+)", proc.stderr)
    rss = int(found.group(1)) / 1024 if found else float("nan")
    return wall, rss, proc.returncode, proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="exp/demo/model.ckpt")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--batch-seconds", type=float, nargs="+", default=[300.0, 30.0])
    parser.add_argument("--workdir", type=Path, help="kept between runs if given")
    args = parser.parse_args()
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        sys.exit("espeak-ng and sox are needed to make the recordings")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_memory."))
    files = make_files(work, max(args.files, *args.counts))
    ckpt = str(Path(args.checkpoint).resolve())
    import soundfile as sf

    seconds = [sf.info(str(f)).duration for f in files]
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {ckpt}; "
        f"{len(files)} files of {min(seconds):.1f}-{max(seconds):.1f} s in {work}\n"
    )
    wall, base, _, _ = child(["transcribe", "--help"])
    print(f"start-up only (imports): {base:.0f} MiB peak RSS, {wall:.1f} s\n")
    outputs = {
        "json, one document": lambda n: [
            "--format",
            "json",
            "-o",
            str(work / "o.json"),
        ],
        "text, one file per input": lambda n: ["-o", f"{work / f'out{n}'}/"],
    }
    print(
        "| output | batch s | files | audio s | wall s | peak RSS MiB "
        "| RSS / smallest run |"
    )
    print("|---|---|---|---|---|---|---|")
    failed = 0
    for batch in args.batch_seconds:
        for label, extra in outputs.items():
            first = None
            for n in sorted(args.counts):
                d = subset(files, n, work)
                argv = ["transcribe", str(d), "--checkpoint", ckpt, *extra(n)]
                argv += ["--batch-seconds", f"{batch:g}"]
                wall, rss, status, err = child(argv)
                if status:
                    print(err[-2000:], file=sys.stderr)
                    failed += 1
                first = first or rss
                note = "" if status == 0 else f" (exit {status})"
                print(
                    f"| {label}{note} | {batch:g} | {n} | {sum(seconds[:n]):.0f} "
                    f"| {wall:.1f} | {rss:.0f} | {rss / first:.3f} |",
                    flush=True,
                )
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    if failed:  # a row of a failed run measures nothing: say so in the exit status
        sys.exit(f"{failed} run(s) of asr transcribe failed (their errors above)")


if __name__ == "__main__":
    main()
