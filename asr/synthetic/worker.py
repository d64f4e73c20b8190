"""The workers: synthesize, render and write a batch of utterances.

Files are written under a temporary name (``.NAME.PID.partial``) and renamed, so an
interrupted run leaves only complete files and a re-run finishes the rest. Every
utterance's random draws come from a generator seeded by (seed, speaker,
utterance), so the samples do not depend on the batch, the worker or ``--jobs``.
"""

from __future__ import annotations

import io
import multiprocessing
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from asr.atomic import atomic_write_bytes, atomic_write_text
from asr.synthetic.channel import render_speech
from asr.synthetic.engines import SYNTHESIZERS
from asr.synthetic.errors import SynthesisError
from asr.synthetic.phones import format_phones
from asr.synthetic.plan import Task, Utterance

__all__ = ["Result", "run_task", "run_tasks", "write_atomic"]


@dataclass(frozen=True)
class Result:
    """What became of one utterance."""

    utt_id: str
    seconds: float  # of audio in the FLAC; 0.0 when it failed
    generated: bool  # synthesized in this run (False: found on disk, or failed)
    error: str | None = None


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all (:mod:`asr.atomic`;
    not flushed to the disk: a rerun remakes what a power cut loses)."""
    atomic_write_text(path, text, durable=False)


def run_task(task: Task) -> list[Result]:
    """Synthesize, render and write the task's utterances that are not on disk."""
    results: list[Result] = []
    todo: list[Utterance] = []
    for utt in task.utterances:
        flac = task.directory / f"{utt.utt_id}.flac"
        if flac.is_file():
            results.append(Result(utt.utt_id, sf.info(str(flac)).duration, False))
        else:
            todo.append(utt)
    if not todo:
        return results
    task.directory.mkdir(parents=True, exist_ok=True)
    speaker = task.speaker
    with tempfile.TemporaryDirectory(prefix="synth-") as tmp:
        try:
            outputs = SYNTHESIZERS[speaker.engine](
                speaker, [u.sentence.prompt for u in todo], Path(tmp)
            )
        except (OSError, subprocess.SubprocessError) as e:
            outputs = [f"{speaker.engine}: {e}"] * len(todo)
        for utt, out in zip(todo, outputs, strict=True):
            if isinstance(out, str):
                results.append(Result(utt.utt_id, 0.0, False, out))
                continue
            try:
                rng = np.random.default_rng(
                    [task.seed, speaker.speaker_id, utt.index, 1]
                )
                y, phones = render_speech(
                    out, speaker.channel, speaker.speed, task.sample_rate, rng
                )
                flac = task.directory / f"{utt.utt_id}.flac"
                # The phones first: a FLAC on disk always has its phones beside it.
                write_atomic(flac.with_suffix(".phones"), format_phones(phones))
                audio = io.BytesIO()
                sf.write(audio, y, task.sample_rate, format="FLAC", subtype="PCM_16")
                atomic_write_bytes(flac, audio.getbuffer(), durable=False)
                results.append(Result(utt.utt_id, len(y) / task.sample_rate, True))
            except (OSError, sf.LibsndfileError, SynthesisError) as e:
                results.append(Result(utt.utt_id, 0.0, False, f"{utt.utt_id}: {e}"))
    return results


def run_tasks(tasks: Sequence[Task], jobs: int) -> Iterator[list[Result]]:
    """Run ``tasks`` on ``jobs`` worker processes; results as tasks finish."""
    if jobs <= 1 or len(tasks) <= 1:
        yield from map(run_task, tasks)
        return
    methods = multiprocessing.get_all_start_methods()
    # fork: the workers start at once with the modules already imported (spawn
    # would import numpy and scipy again in each).
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ctx.Pool(min(jobs, len(tasks))) as pool:
        yield from pool.imap_unordered(run_task, tasks)
