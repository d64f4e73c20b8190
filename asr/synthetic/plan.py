"""The plan: which speaker says which sentence, in which split, in which batch.

Sizes: ``hours`` is the total; dev and test each get ``eval_fraction`` of it with
``dev_voices``/``test_voices`` speakers, train the rest with about
``utts_per_speaker`` sentences per speaker (every speaker says at least one, so toy
sizes round up). Texts are split as well: no dev or test sentence is spoken in
train. The plan is a pure function of the options and the installed voices, so the
same seed gives the same corpus whatever the number of workers.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asr.synthetic.errors import CorpusError
from asr.synthetic.speakers import (
    DEV_SPEAKER_BASE,
    TRAIN_SPEAKER_BASE,
    Inventory,
    Speaker,
    eval_speakers,
    train_speakers,
)
from asr.synthetic.voices import ESPEAK, FESTIVAL, FESTIVAL_HTS, FLITE
from asr.synthetic.wordnet import Sentence

__all__ = [
    "GENERATOR_VERSION",
    "SPLITS",
    "Options",
    "SpeakerPlan",
    "Task",
    "Utterance",
    "make_tasks",
    "plan_corpus",
]

# Part of config.json: a corpus made by another version is not resumed.
GENERATOR_VERSION = 3
SPLITS = ("train", "dev", "test")

# Seconds of speech (silences trimmed) at tempo 1 as intercept + slope * letters,
# fitted on 60 WordNet sentences per voice; used only to plan how many sentences
# fill the requested hours.
SPEECH_SECONDS = {ESPEAK: (0.16, 0.058), FLITE: (0.30, 0.058), FESTIVAL: (0.13, 0.069)}
MEAN_PAD_SECONDS = 0.45  # the leading + trailing silence we add, on average
# Seconds of audio per second of one CPU, synthesis only (measured; for scheduling).
REAL_TIME = {
    ESPEAK: 140.0,
    FLITE: 170.0,
    "flite:awb": 50.0,
    "flite:slt": 57.0,
    "flite:rms": 60.0,
    FESTIVAL: 230.0,
    f"festival:{FESTIVAL_HTS}": 34.0,
}
# Utterances per batch: festival starts once per batch, and small batches keep the
# workers evenly loaded.
BATCH_SIZE = 25


@dataclass(frozen=True)
class Options:
    """Everything that decides the corpus's content (not how fast it is made)."""

    hours: float
    seed: int
    sample_rate: int  # Hz
    dev_voices: int
    test_voices: int
    min_words: int
    max_words: int
    eval_fraction: float
    utts_per_speaker: int
    engines: tuple[str, ...]  # the engines the corpus uses (after --allow-missing)
    missing_voices: tuple[str, ...] = ()  # "engine:voice" skipped by --allow-missing

    def to_json(self) -> dict[str, Any]:
        """The options plus the generator version, as stored in config.json."""
        data = {"generator_version": GENERATOR_VERSION, **dataclasses.asdict(self)}
        return json.loads(json.dumps(data))  # tuples as lists, as read back


@dataclass(frozen=True)
class Utterance:
    """One planned utterance of a speaker."""

    utt_id: str  # SPK-CHAPTER-UTT
    index: int
    sentence: Sentence


@dataclass(frozen=True)
class SpeakerPlan:
    """A speaker and the utterances it will say."""

    speaker: Speaker
    utterances: tuple[Utterance, ...]

    def directory(self, out_dir: Path) -> Path:
        """``OUT_DIR/SPLIT/SPK/CHAPTER``."""
        s = self.speaker
        return out_dir / s.split / str(s.speaker_id) / str(s.chapter_id)


def estimate_seconds(
    sentence: Sentence, engine: str, rate: float, speed: float
) -> float:
    """About how long ``sentence`` lasts in seconds, with its silences, said by
    ``engine`` at tempo ``rate`` and resampling factor ``speed``."""
    intercept, slope = SPEECH_SECONDS[engine]
    speech = (intercept + slope * sentence.letters) / (rate * speed)
    return speech + MEAN_PAD_SECONDS


def plan_corpus(
    sentences: Sequence[Sentence], options: Options, voices: dict[str, set[str]]
) -> list[SpeakerPlan]:
    """Decide every speaker and every utterance: a pure function of its arguments.

    Sentences are shuffled with the seed; dev takes the first ones, test the next,
    and train the rest (from the start again if train needs more than remain).
    ``voices`` is the installed inventory (``voices.available_voices()``).
    """
    order = np.random.default_rng([options.seed, 7]).permutation(len(sentences))
    shuffled = [sentences[i] for i in order]
    total = options.hours * 3600
    eval_target = total * options.eval_fraction
    train_target = total - 2 * eval_target
    inventory = Inventory.of(voices)
    plans: list[SpeakerPlan] = []
    used = 0
    for split, n_voices in (("dev", options.dev_voices), ("test", options.test_voices)):
        speakers = eval_speakers(split, n_voices, options.seed, inventory)
        split_plans = _fill(speakers, n_voices, eval_target, shuffled[used:])
        used += sum(len(p.utterances) for p in split_plans)
        plans += split_plans
    train_texts = shuffled[used:]
    if not train_texts:
        raise CorpusError("no WordNet sentences left for train: ask for fewer hours")
    # As many training speakers as give about utts_per_speaker sentences each.
    mean_seconds = float(
        np.mean([estimate_seconds(s, ESPEAK, 1.0, 1.0) for s in train_texts[:2000]])
    )
    n_train = max(1, round(train_target / (options.utts_per_speaker * mean_seconds)))
    if n_train > DEV_SPEAKER_BASE - TRAIN_SPEAKER_BASE:
        raise CorpusError(
            f"{n_train} training speakers is too many: raise --utts-per-speaker"
        )
    speakers = train_speakers(options.seed, inventory)
    return plans + _fill(speakers, n_train, train_target, train_texts, cycle=True)


def _fill(
    speakers: Iterator[Speaker],
    n_speakers: int,
    target_seconds: float,
    texts: Sequence[Sentence],
    cycle: bool = False,
) -> list[SpeakerPlan]:
    """Give ``n_speakers`` speakers consecutive texts, about ``target_seconds`` in
    all (by :func:`estimate_seconds`), each at least one; re-use texts if
    ``cycle``, else raise when they run out."""
    per_speaker = target_seconds / n_speakers
    plans = []
    used = 0
    for _ in range(n_speakers):
        speaker = next(speakers)
        utts: list[Utterance] = []
        seconds = 0.0
        while True:
            if used >= len(texts) and not cycle:
                raise CorpusError(
                    f"not enough WordNet sentences for {speaker.split} "
                    f"({len(texts)} left): ask for fewer hours"
                )
            sentence = texts[used % len(texts)]
            est = estimate_seconds(
                sentence, speaker.engine, speaker.rate, speaker.speed
            )
            # Stop at the sentence that would overshoot by more than half of it.
            if utts and seconds + est / 2 > per_speaker:
                break
            used += 1
            i = len(utts)
            if i > 9999:
                raise CorpusError(f"speaker {speaker.speaker_id}: over 10000 sentences")
            utt_id = f"{speaker.speaker_id}-{speaker.chapter_id}-{i:04d}"
            utts.append(Utterance(utt_id=utt_id, index=i, sentence=sentence))
            seconds += est
        plans.append(SpeakerPlan(speaker, tuple(utts)))
    return plans


@dataclass(frozen=True)
class Task:
    """A batch of one speaker's utterances: the unit of work of a worker."""

    speaker: Speaker
    utterances: tuple[Utterance, ...]
    directory: Path  # OUT_DIR/SPLIT/SPK/CHAPTER
    sample_rate: int  # Hz
    seed: int


def make_tasks(
    plans: Sequence[SpeakerPlan], out_dir: Path, options: Options
) -> list[Task]:
    """The plans in batches of at most :data:`BATCH_SIZE` utterances, the longest
    first, so the pool does not wait on one slow batch at the end."""
    tasks = []
    for plan in plans:
        for start in range(0, len(plan.utterances), BATCH_SIZE):
            tasks.append(
                Task(
                    speaker=plan.speaker,
                    utterances=plan.utterances[start : start + BATCH_SIZE],
                    directory=plan.directory(out_dir),
                    sample_rate=options.sample_rate,
                    seed=options.seed,
                )
            )
    tasks.sort(key=_task_cost, reverse=True)
    return tasks


def _task_cost(task: Task) -> float:
    """Estimated seconds of CPU for a task (for scheduling only)."""
    s = task.speaker
    speed = REAL_TIME.get(f"{s.engine}:{s.voice}", REAL_TIME[s.engine])
    audio = sum(
        estimate_seconds(u.sentence, s.engine, s.rate, s.speed) for u in task.utterances
    )
    return audio / speed
