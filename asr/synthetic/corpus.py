"""The driver: :func:`generate_corpus` plans, runs the workers and writes the
transcripts, ``voices.json`` and ``config.json``; and the summary it returns.

Output, in the LibriSpeech layout (so the LibriSpeech tools read it unchanged)::

    OUT_DIR/{train,dev,test}/SPK/CHAPTER/SPK-CHAPTER-UTT.flac   16-bit mono FLAC
    OUT_DIR/{train,dev,test}/SPK/CHAPTER/SPK-CHAPTER-UTT.phones "LABEL START END"
    OUT_DIR/{train,dev,test}/SPK/CHAPTER/SPK-CHAPTER.trans.txt  "SPK-CHAPTER-UTT TEXT"
    OUT_DIR/voices.json      every speaker's configuration, split, utterances, seconds
    OUT_DIR/config.json      the options the corpus was made with (checked on resume)

Resumption: files already on disk are kept, so running again finishes an
interrupted corpus; a complete one (every planned file, and a voices.json written
for these options) is detected and left alone; a directory holding a corpus made
with other options is refused.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf

from asr.synthetic.errors import CorpusError
from asr.synthetic.plan import SPLITS, Options, SpeakerPlan, make_tasks, plan_corpus
from asr.synthetic.speakers import MAX_EVAL_VOICES
from asr.synthetic.voices import (
    ENGINES,
    HELD_OUT,
    available_voices,
    engine_versions,
    wanted_voices,
)
from asr.synthetic.wordnet import DEFAULT_WORDNET_DIR, load_sentences
from asr.synthetic.worker import run_tasks, write_atomic

__all__ = ["CorpusSummary", "SplitSummary", "generate_corpus"]

# What voices.json names as its maker (informational: the resume check reads only
# its "config").
GENERATOR = "asr data synthetic"


@dataclass
class SplitSummary:
    """What one split holds after generation."""

    speakers: int = 0
    utterances: int = 0
    seconds: float = 0.0
    words: int = 0

    @property
    def hours(self) -> float:
        """Total audio in hours."""
        return self.seconds / 3600


@dataclass
class CorpusSummary:
    """The result of :func:`generate_corpus`."""

    out_dir: Path
    splits: dict[str, SplitSummary]
    wall_seconds: float
    generated_utterances: int  # synthesized in this run (not found on disk)
    generated_seconds: float  # seconds of audio synthesized in this run
    skipped_utterances: int  # already complete on disk
    failed: list[str] = field(default_factory=list)  # "utt_id: reason"
    already_complete: bool = False

    @property
    def real_time_factor(self) -> float:
        """Seconds of audio generated per second of wall time in this run."""
        return self.generated_seconds / max(self.wall_seconds, 1e-9)

    def format(self) -> str:
        """A human-readable table of the corpus and of this run's speed."""
        lines = [f"corpus in {self.out_dir}"]
        lines.append(
            f"{'split':6s} {'speakers':>8s} {'utts':>6s} {'hours':>7s} "
            f"{'s/utt':>6s} {'words/utt':>9s}"
        )
        for name, s in self.splits.items():
            n = max(s.utterances, 1)
            lines.append(
                f"{name:6s} {s.speakers:8d} {s.utterances:6d} {s.hours:7.3f} "
                f"{s.seconds / n:6.2f} {s.words / n:9.2f}"
            )
        if self.already_complete:
            lines.append("already complete: nothing generated")
        else:
            lines.append(
                f"generated {self.generated_utterances} utterances "
                f"({self.generated_seconds:.1f} s of audio) in "
                f"{self.wall_seconds:.1f} s wall: "
                f"{self.real_time_factor:.1f}x real time; "
                f"{self.skipped_utterances} already on disk"
            )
        if self.failed:
            lines.append(f"{len(self.failed)} utterances failed and were left out:")
            lines.extend(f"  {f}" for f in self.failed[:20])
        return "\n".join(lines)


def _write_transcripts(plan: SpeakerPlan, out_dir: Path, ok: set[str]) -> None:
    """The speaker's ``SPK-CHAPTER.trans.txt``, of its utterances in ``ok``."""
    directory = plan.directory(out_dir)
    s = plan.speaker
    lines = [
        f"{u.utt_id} {u.sentence.transcript}\n"
        for u in plan.utterances
        if u.utt_id in ok
    ]
    if lines:
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(
            directory / f"{s.speaker_id}-{s.chapter_id}.trans.txt", "".join(lines)
        )


def _remove_partials(out_dir: Path) -> None:
    """Delete what an interrupted run left half written."""
    for split in SPLITS:
        for partial in (out_dir / split).glob("*/*/.*.partial"):
            partial.unlink()
    for partial in out_dir.glob(".*.partial"):
        partial.unlink()


def _voices_json(
    plans: Sequence[SpeakerPlan],
    options: Options,
    seconds: dict[str, float],
    failed: Sequence[str],
) -> dict[str, Any]:
    """voices.json's content: every speaker's configuration and what it said."""
    speakers = []
    for plan in plans:
        s = plan.speaker
        ok = [u for u in plan.utterances if u.utt_id in seconds]
        speakers.append(
            {
                "speaker": str(s.speaker_id),
                "chapter": str(s.chapter_id),
                "split": s.split,
                "engine": s.engine,
                "voice": s.voice,
                "variant": s.variant,
                "base_voice": s.base_voice,
                "rate": s.rate,
                "pitch": s.pitch,
                "expressiveness": s.expressiveness,
                "speed": s.speed,
                "engine_args": s.engine_args(),
                "channel": dataclasses.asdict(s.channel),
                "utterances": len(ok),
                "seconds": round(sum(seconds[u.utt_id] for u in ok), 3),
            }
        )
    return {
        "generator": GENERATOR,
        "config": options.to_json(),
        "engine_versions": engine_versions(),
        "held_out": {k: dataclasses.asdict(v) for k, v in HELD_OUT.items()},
        "failed": list(failed),
        "speakers": speakers,
    }


def _summarize(
    plans: Sequence[SpeakerPlan], seconds: dict[str, float]
) -> dict[str, SplitSummary]:
    """Speakers, utterances, seconds and words per split, of the utterances made."""
    splits = {name: SplitSummary() for name in SPLITS}
    for plan in plans:
        ok = [u for u in plan.utterances if u.utt_id in seconds]
        if not ok:
            continue
        s = splits[plan.speaker.split]
        s.speakers += 1
        s.utterances += len(ok)
        s.seconds += sum(seconds[u.utt_id] for u in ok)
        s.words += sum(len(u.sentence.transcript.split()) for u in ok)
    return splits


def _check_config(out_dir: Path, options: Options) -> None:
    """Write ``config.json`` into a new corpus; in an old one, refuse other options
    (naming each difference) or a tree this tool did not make."""
    path = out_dir / "config.json"
    wanted = options.to_json()
    if path.is_file():
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise CorpusError(
                f"{path}: unreadable ({e}); delete it or use another OUT_DIR"
            ) from e
        if found != wanted:
            diff = ", ".join(
                f"{k}: {found.get(k)!r} there, {v!r} now"
                for k, v in wanted.items()
                if found.get(k) != v
            )
            raise CorpusError(
                f"{path}: {out_dir} holds a corpus made with other options ({diff}); "
                "use another OUT_DIR or delete it"
            )
    else:
        for split in SPLITS:
            if (out_dir / split).exists():
                raise CorpusError(
                    f"{out_dir / split} exists but {path} does not: not a corpus made "
                    "by this tool; use another OUT_DIR"
                )
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(wanted, indent=2) + "\n")


def _load_complete(
    out_dir: Path, plans: Sequence[SpeakerPlan], options: Options
) -> dict[str, float] | None:
    """Utterance seconds if ``out_dir`` holds every planned file and a voices.json
    written for these options, else None (failed utterances make it incomplete, so
    a re-run retries them)."""
    path = out_dir / "voices.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if data.get("config") != options.to_json():
        return None
    seconds: dict[str, float] = {}
    for plan in plans:
        directory = plan.directory(out_dir)
        s = plan.speaker
        if not (directory / f"{s.speaker_id}-{s.chapter_id}.trans.txt").is_file():
            return None
        for utt in plan.utterances:
            flac = directory / f"{utt.utt_id}.flac"
            if not flac.is_file():
                return None
            seconds[utt.utt_id] = sf.info(str(flac)).duration
    return seconds


def _check_options(
    hours: float,
    sample_rate: int,
    dev_voices: int,
    test_voices: int,
    min_words: int,
    max_words: int,
    eval_fraction: float,
    utts_per_speaker: int,
    jobs: int,
) -> None:
    """Raise :class:`CorpusError` naming the first option out of its range."""
    if not hours > 0:
        raise CorpusError(f"hours must be positive, got {hours}")
    if not 8000 <= sample_rate <= 48000:
        raise CorpusError(f"sample rate must be 8000-48000 Hz, got {sample_rate}")
    for name, n in (("dev_voices", dev_voices), ("test_voices", test_voices)):
        if not 1 <= n <= MAX_EVAL_VOICES:
            raise CorpusError(f"{name} must be 1-{MAX_EVAL_VOICES}, got {n}")
    if not 1 <= min_words <= max_words:
        raise CorpusError(
            f"need 1 <= min_words <= max_words, got {min_words}, {max_words}"
        )
    if not 0 < eval_fraction < 0.5:
        raise CorpusError(f"eval_fraction must be in (0, 0.5), got {eval_fraction}")
    if utts_per_speaker < 1:
        raise CorpusError(f"utts_per_speaker must be >= 1, got {utts_per_speaker}")
    if jobs < 1:
        raise CorpusError(f"jobs must be >= 1, got {jobs}")


def generate_corpus(
    out_dir: Path,
    hours: float = 2.0,
    seed: int = 0,
    jobs: int = 1,
    sample_rate: int = 16000,
    dev_voices: int = 10,
    test_voices: int = 10,
    max_words: int = 25,
    min_words: int = 2,
    eval_fraction: float = 0.1,
    utts_per_speaker: int = 20,
    allow_missing_engines: bool = False,
    wordnet_dir: Path = DEFAULT_WORDNET_DIR,
    progress: Callable[[str], None] | None = None,
) -> CorpusSummary:
    """Generate (or finish, or find complete) a synthetic corpus in ``out_dir``.

    Args:
        out_dir: where the ``train``/``dev``/``test`` trees and ``voices.json`` go.
        hours: total audio over the three splits, in hours (planned from an estimate
            of the speaking rate; the summary reports what was made, within ~15 %).
        seed: decides texts, speakers and every random draw.
        jobs: worker processes.
        sample_rate: output sample rate in Hz.
        dev_voices, test_voices: speakers in dev and test, built only from held-out
            base voices (:mod:`asr.synthetic.voices`).
        max_words, min_words: sentence length bounds, in words.
        eval_fraction: the share of ``hours`` that dev gets, and again test.
        utts_per_speaker: about how many sentences each training speaker says.
        allow_missing_engines: skip, with a warning, an engine or voice that is not
            installed instead of raising :class:`EngineMissingError`.
        wordnet_dir: the directory holding WordNet's ``data.noun`` etc.
        progress: called with one-line progress reports (None: stderr).

    Raises:
        EngineMissingError: an engine or voice is not installed (naming it).
        CorpusError: bad options, missing WordNet, or ``out_dir`` holding a corpus
            made with other options.
    """
    start = time.perf_counter()
    log = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    _check_options(
        hours,
        sample_rate,
        dev_voices,
        test_voices,
        min_words,
        max_words,
        eval_fraction,
        utts_per_speaker,
        jobs,
    )
    voices = available_voices(allow_missing_engines)
    options = Options(
        hours=hours,
        seed=seed,
        sample_rate=sample_rate,
        dev_voices=dev_voices,
        test_voices=test_voices,
        min_words=min_words,
        max_words=max_words,
        eval_fraction=eval_fraction,
        utts_per_speaker=utts_per_speaker,
        engines=tuple(e for e in ENGINES if e in voices),
        missing_voices=tuple(
            f"{engine}:{voice}"
            for engine, names in wanted_voices().items()
            for voice in sorted(names - voices.get(engine, set()))
        ),
    )
    sentences = load_sentences(wordnet_dir, min_words, max_words)
    plans = plan_corpus(sentences, options, voices)
    out_dir = Path(out_dir)
    _check_config(out_dir, options)

    complete = _load_complete(out_dir, plans, options)
    if complete is not None:
        return CorpusSummary(
            out_dir=out_dir,
            splits=_summarize(plans, complete),
            wall_seconds=time.perf_counter() - start,
            generated_utterances=0,
            generated_seconds=0.0,
            skipped_utterances=len(complete),
            already_complete=True,
        )

    _remove_partials(out_dir)
    tasks = make_tasks(plans, out_dir, options)
    n_utts = sum(len(p.utterances) for p in plans)
    log(
        f"planned {len(plans)} speakers, {n_utts} utterances, ~{hours:.3g} h; "
        f"{len(tasks)} batches on {jobs} workers"
    )
    seconds: dict[str, float] = {}
    failed: list[str] = []
    generated = skipped = 0
    generated_seconds = 0.0
    done = 0
    last_report = time.perf_counter()
    for results in run_tasks(tasks, jobs):
        for r in results:
            done += 1
            if r.error is not None:
                failed.append(f"{r.utt_id}: {r.error}")
                if len(failed) <= 10:
                    log(f"warning: {r.utt_id} failed and is left out: {r.error}")
                continue
            seconds[r.utt_id] = r.seconds
            if r.generated:
                generated += 1
                generated_seconds += r.seconds
            else:
                skipped += 1
        now = time.perf_counter()
        if now - last_report > 10:
            last_report = now
            log(
                f"{done}/{n_utts} utterances, {generated_seconds:.0f} s of audio, "
                f"{generated_seconds / (now - start):.0f}x real time"
            )
    if not seconds:
        raise CorpusError(
            f"{out_dir}: all {n_utts} utterances failed; the first: {failed[0]}"
        )
    for plan in plans:
        _write_transcripts(plan, out_dir, set(seconds))
    write_atomic(
        out_dir / "voices.json",
        json.dumps(_voices_json(plans, options, seconds, failed), indent=1) + "\n",
    )
    return CorpusSummary(
        out_dir=out_dir,
        splits=_summarize(plans, seconds),
        wall_seconds=time.perf_counter() - start,
        generated_utterances=generated,
        generated_seconds=generated_seconds,
        skipped_utterances=skipped,
        failed=failed,
    )
