#!/usr/bin/env python
"""Generate an offline English speech corpus with text-to-speech voices.

The corpus lets the whole pipeline (manifests, training, decoding, evaluation) run
on a laptop or in CI with no download. Text comes from WordNet's usage examples,
audio from three Debian text-to-speech engines, and every synthetic speaker gets a
fixed configuration of engine, base voice, speaking rate, pitch and channel.

    python tools/make_synthetic_corpus.py OUT_DIR [--hours 2 | --minutes M]
        [--seed 0] [--jobs N] [--sample-rate 16000] [--dev-voices 10]
        [--test-voices 10] [--max-words 25] [--min-words 2] [--eval-fraction 0.1]
        [--utts-per-speaker 20] [--allow-missing-engines] [--wordnet-dir DIR]
    python tools/make_synthetic_corpus.py OUT_DIR --minutes 0.2   # a toy corpus

or from Python: ``generate_corpus(Path(out_dir), hours=2.0, seed=0, jobs=2)``.

Output, in the LibriSpeech layout (so the LibriSpeech tools read it unchanged)::

    OUT_DIR/{train,dev,test}/SPK/CHAPTER/SPK-CHAPTER-UTT.flac   16-bit mono FLAC
    OUT_DIR/{train,dev,test}/SPK/CHAPTER/SPK-CHAPTER-UTT.phones "LABEL START END"
    OUT_DIR/{train,dev,test}/SPK/CHAPTER/SPK-CHAPTER.trans.txt  "SPK-CHAPTER-UTT TEXT"
    OUT_DIR/voices.json      every speaker's configuration, split, utterances, seconds
    OUT_DIR/config.json      the options the corpus was made with (checked on resume)

Phones. Every engine reports what it spoke and when: espeak-ng's library sends
phoneme events (the espeak-ng program cannot), flite prints its segments with end
times (``-psdur``), festival's utterance structure holds them. They are mapped to
one ARPAbet set (:data:`asr.text.PHONES`; espeak-ng's mnemonics through
:data:`ESPEAK_PHONES`), carried through the trimming, speed factor and padding into
the recording's time, and written one ``label start end`` line per phone (seconds)
beside each FLAC. ``asr manifest`` lists them as ``phones_filepath``; training can
use them as frame-level targets (``ASRTask.phone_loss_weight``), and they allow
per-phone diagnostics of a model.

Voices. A *base voice* is what an engine can say a sentence with before we touch
its parameters:

- espeak-ng (formant synthesis): an accent (``en``, ``en-us``, ``en-gb-scotland``,
  ``en-gb-x-rp``, ``en-gb-x-gbclan``, ``en-gb-x-gbcwmd``, ``en-029``, ``en-us-nyc``)
  combined with a voice variant (``+m1`` .. ``+m8``, ``+f1`` .. ``+f5``, ``+klatt*``
  and 50-odd named variants that set pitch range, formant scaling and glottal
  source). Variants that are not speech-like were measured and left out: the
  whispers (no voicing), the robots and "Demonic" (long echoes, flat intonation),
  ``croak``/``grandpa`` (so much jitter that a pitch tracker finds no voicing),
  ``Jacky`` (clips), and ``Lee``/``Tweaky``/``kaukovalta``/``travis`` (a formant
  scaled by 9-200 %).
- flite: the diphone voice ``kal16`` and its 8 kHz twin ``kal``, the statistical
  (clustergen) voices ``awb`` (Scottish male), ``rms`` (US male), ``slt`` (US female).
- festival: the diphone voices ``kal_diphone`` and ``ked_diphone`` (US males) and the
  HMM voice ``cmu_us_slt_arctic_hts`` (US female).

A *speaker* is a base voice plus a tempo factor (engine-native: espeak words per
minute, flite/festival duration stretch, HTS rate), a pitch factor (engine-native
where the engine has one: espeak ``-p``, flite ``int_f0_target_mean``, festival's
linear-regression F0 target; ``rms`` and the HTS voice have none), a resampling
*speed* factor (shifts pitch and formants together, like a different vocal tract
length: +-6 % for dev and test speakers, 0.84-1.12 for training speakers, whose
engine tempo is divided by the same factor so that their speaking rate is drawn as
for the others) and a fixed channel: gain, high-pass, an optional low-pass (down to
telephone band), one peaking EQ band of +-6 dB, optional room reverb (RT60
0.15-0.5 s, direct-to-reverberant 4-14 dB) and white, pink or brown noise at
20-40 dB SNR. Each utterance gets its own leading/trailing silence and noise draw.

Sizes: ``--hours`` is the total; dev and test each get ``--eval-fraction`` of it
with ``--dev-voices``/``--test-voices`` speakers, train the rest with about
``--utts-per-speaker`` sentences per speaker (every speaker says at least one, so
toy sizes round up). Training speakers cycle through the engines 3:1:1
(espeak-ng : flite : festival) and through each engine's voices in a seeded order.
WordNet examples are short: 2-25 words, 5.8 on average, 2.4 s per utterance with
its silences (2.5 words per second, close to LibriSpeech's 2.7).

Speed: about 70 s of audio per CPU-second (0.5 h in 18 s wall with 2 workers on
a shared 2-core machine: 100x real time). Per core, espeak-ng and the diphone
voices synthesize at 150-230x real time, flite's clustergen voices at ~55x and the
HTS voice at ~35x; festival starts once per batch of 25 sentences.

Held-out voices. Dev and test speakers are made only of base voices that no
training speaker uses, so the scores measure generalisation to new voices:

- dev:  espeak variants ``m3 f4 klatt4 Gene2 michel iven3 linda Andrea``, the accent
  ``en-gb-x-gbcwmd`` (West Midlands), and festival's ``ked_diphone``;
- test: espeak variants ``m6 f2 klatt2 robert edward2 Hugo steph3 Annie``, the accent
  ``en-us-nyc`` (New York City), and flite's ``rms``.

Each held-out item has a relative in training (``m3`` among ``m1``..``m8``, ``steph3``
next to ``steph``/``steph2``, West Midlands next to Lancaster and RP, NYC next to
General American, ``ked`` next to ``kal``, ``rms`` next to ``awb``/``slt``), so the set
is new but learnable. Half of the espeak speakers in dev/test use the held-out accent
and the other half a training accent; all use a held-out variant. Dev and test are
disjoint from each other too. Texts are split as well: no dev or test sentence is
spoken in train.

Determinism and resumption: the plan (texts, speakers, configurations) is a pure
function of the options; every utterance's random draws come from a generator
seeded by (seed, speaker, utterance), so the same seed gives the same samples
whatever ``--jobs``. Files are written under a temporary name and renamed, so an
interrupted run leaves only complete files; running again finishes the rest, and a
complete corpus is detected and left alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import math
import multiprocessing
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
from scipy import signal

GENERATOR_VERSION = 3
SPLITS = ("train", "dev", "test")
DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")

ESPEAK = "espeak-ng"
FLITE = "flite"
FESTIVAL = "festival"
ENGINES = (ESPEAK, FLITE, FESTIVAL)
# The Debian package that provides each engine's program, for the error message.
ENGINE_PACKAGES = {
    ESPEAK: "espeak-ng",
    FLITE: "flite",
    FESTIVAL: "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
}

ESPEAK_ACCENTS = (
    "en",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
# "" is the accent's own default voice (no variant). The rest are espeak-ng's
# variant files (voices/!v) that sound like speech; see the module docstring.
ESPEAK_VARIANTS = (
    "",
    *"m1 m2 m3 m4 m5 m6 m7 m8 f1 f2 f3 f4 f5".split(),
    *"klatt klatt2 klatt3 klatt4 klatt5 klatt6".split(),
    *"Alex Alicia Andrea Andy Annie Denis Diogo Gene Gene2 Henrique Hugo".split(),
    *"Mario Michael Mike Nguyen Storm adam anika antonio aunty belinda".split(),
    *"benjamin boris david ed edward edward2 grandma gustave iven iven2".split(),
    *"iven3 iven4 john linda marcelo max michel miguel norbert pablo paul".split(),
    *"pedro quincy rob robert sandro shelby steph steph2 steph3 victor zac".split(),
)
ESPEAK_DEFAULT_WPM = 175
ESPEAK_AMPLITUDE = 60  # of 200; 100 (the default) clips with some variants

# Voice -> median F0 in Hz at the default settings (measured with librosa.pyin), the
# reference for the pitch factor; None where the engine ignores the F0 target.
FLITE_VOICES: dict[str, float | None] = {
    "kal": 90.0,
    "kal16": 90.0,
    "awb": 133.0,
    "rms": None,
    "slt": 175.0,
}
FESTIVAL_VOICES: dict[str, float | None] = {
    "kal_diphone": 105.0,
    "ked_diphone": 105.0,
    "cmu_us_slt_arctic_hts": None,
}
FESTIVAL_DIPHONE_STRETCH = 1.1  # both diphone voices set Duration_Stretch 1.1


@dataclass(frozen=True)
class HeldOut:
    """The base voices reserved for one evaluation split."""

    espeak_accent: str
    espeak_variants: tuple[str, ...]
    engine: str
    voice: str


HELD_OUT = {
    "dev": HeldOut(
        espeak_accent="en-gb-x-gbcwmd",
        espeak_variants=tuple("m3 f4 klatt4 Gene2 michel iven3 linda Andrea".split()),
        engine=FESTIVAL,
        voice="ked_diphone",
    ),
    "test": HeldOut(
        espeak_accent="en-us-nyc",
        espeak_variants=tuple("m6 f2 klatt2 robert edward2 Hugo steph3 Annie".split()),
        engine=FLITE,
        voice="rms",
    ),
}

# Training speakers' engines, in a fixed rotation: 60 % espeak-ng (the most varied),
# 20 % flite, 20 % festival. A rotation rather than a draw, so even a toy corpus of
# five speakers has all three engines.
ENGINE_ROTATION = (ESPEAK, FLITE, ESPEAK, FESTIVAL, ESPEAK)
# In dev/test, this fraction of the speakers uses the held-out engine voice.
EVAL_ENGINE_FRACTION = 0.3

# Seconds of speech (silences trimmed) at tempo 1 as intercept + slope * letters,
# fitted on 60 WordNet sentences per voice; used only to plan how many sentences
# fill the requested hours.
SPEECH_SECONDS = {ESPEAK: (0.16, 0.058), FLITE: (0.30, 0.058), FESTIVAL: (0.13, 0.069)}
MEAN_PAD_SECONDS = 0.45  # the leading + trailing silence we add, on average
# Resampling factors (vocal tract length). Held-out speakers stay near their voice's
# own; training speakers range wider. At 12 h that helped the held-out voice with the
# fewest relatives in training (flite rms, 3 test speakers: CER 44.3% -> 40.7%) and
# left the others about where they were (held-out espeak-ng voices 22.2% -> 22.6%,
# dev's festival ked 47.8% -> 47.3%); README, "What limits accuracy here".
EVAL_SPEED = (0.94, 1.06)
TRAIN_SPEED = (0.84, 1.12)
# Seconds of audio per second of one CPU, synthesis only (measured; for scheduling).
REAL_TIME = {
    ESPEAK: 140.0,
    FLITE: 170.0,
    "flite:awb": 50.0,
    "flite:slt": 57.0,
    "flite:rms": 60.0,
    FESTIVAL: 230.0,
    "festival:cmu_us_slt_arctic_hts": 34.0,
}

TRAIN_SPEAKER_BASE = 1000
DEV_SPEAKER_BASE = 9000
TEST_SPEAKER_BASE = 9500
MAX_EVAL_VOICES = 500

# Words the engines expand or spell (we could not transcribe what they say).
_BLOCKED_WORDS = frozenset("etc vs mr mrs ms dr jr sr st ltd inc lbs mph ok".split())
_ALLOWED_RAW = re.compile(r"^[A-Za-z' ,;:!?.\-]+$")
_WORD = re.compile(r"[A-Za-z']+")
_VOWEL = re.compile(r"[aeiouyAEIOUY]")


class CorpusError(Exception):
    """A user's mistake or an unusable environment: the message says what to fix."""


class EngineMissingError(CorpusError):
    """A text-to-speech program or voice the corpus needs is not installed."""


class SynthesisError(Exception):
    """One utterance could not be made (reported, left out, retried on a re-run)."""


@dataclass(frozen=True)
class Sentence:
    """One WordNet example: what the engine reads and what the transcript says."""

    prompt: str  # original case and light punctuation, for the engine's prosody
    transcript: str  # upper case letters, apostrophes and single spaces

    @property
    def letters(self) -> int:
        """Number of letters and apostrophes (the planning length unit)."""
        return len(self.transcript.replace(" ", ""))


@dataclass(frozen=True)
class Channel:
    """A speaker's fixed recording channel. Frequencies in Hz, levels in dB."""

    level_dbfs: float  # RMS of the active speech, dB re full scale
    highpass_hz: float
    lowpass_hz: float | None
    eq_hz: float
    eq_gain_db: float
    eq_q: float
    reverb_rt60_s: float | None
    reverb_drr_db: float  # direct-to-reverberant energy ratio
    reverb_predelay_s: float
    snr_db: float
    noise_color: str  # "white", "pink" or "brown"
    seed: int  # for the room impulse response


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: a base voice and fixed parameters."""

    speaker_id: int
    chapter_id: int
    split: str
    engine: str
    voice: str  # espeak accent, flite or festival voice name
    variant: str  # espeak variant ("" = the accent's default); "" for other engines
    rate: float  # tempo factor re the engine's default (>1 is faster)
    pitch: float  # F0 factor re the voice's default (1.0 where not controllable)
    expressiveness: float  # F0 range factor (festival diphones only, else 1.0)
    speed: float  # resampling factor: tempo, pitch and formants together
    channel: Channel
    seed: int

    @property
    def base_voice(self) -> str:
        """The engine's voice before our parameters, e.g. ``espeak-ng:en-us+m3``."""
        suffix = f"+{self.variant}" if self.variant else ""
        return f"{self.engine}:{self.voice}{suffix}"

    def engine_args(self) -> dict[str, Any]:
        """The engine-native settings this speaker is synthesized with."""
        if self.engine == ESPEAK:
            return {
                "-v": f"{self.voice}+{self.variant}" if self.variant else self.voice,
                "-s": round(ESPEAK_DEFAULT_WPM * self.rate),
                # espeak's -p is about 60 steps per octave around 50 (measured).
                "-p": int(np.clip(round(50 + 60 * math.log2(self.pitch)), 0, 99)),
                "-a": ESPEAK_AMPLITUDE,
            }
        if self.engine == FLITE:
            args: dict[str, Any] = {"duration_stretch": round(1 / self.rate, 4)}
            base_f0 = FLITE_VOICES[self.voice]
            if base_f0 is not None:
                args["int_f0_target_mean"] = round(base_f0 * self.pitch, 1)
            return args
        if self.voice == "cmu_us_slt_arctic_hts":
            return {"hts -r": round(self.rate, 4)}
        base_f0 = FESTIVAL_VOICES[self.voice]
        assert base_f0 is not None, self.voice
        return {
            "Duration_Stretch": round(FESTIVAL_DIPHONE_STRETCH / self.rate, 4),
            "target_f0_mean": round(base_f0 * self.pitch, 1),
            "target_f0_std": round(14.0 * self.expressiveness, 1),
        }


@dataclass(frozen=True)
class Utterance:
    """One planned utterance of a speaker."""

    utt_id: str  # SPK-CHAPTER-UTT
    index: int
    sentence: Sentence


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


# --------------------------------------------------------------------------- text


def clean_sentence(
    raw: str, min_words: int = 2, max_words: int = 25
) -> Sentence | None:
    """Turn one WordNet example into a :class:`Sentence`, or None to drop it.

    Kept: letters, apostrophes inside or closing a word ("boys'"), spaces and simple
    punctuation (a period only at the end), with ``min_words``..``max_words`` words.
    Dropped: digits and symbols, abbreviations ("Mr.", "etc"), all-capital words
    (acronyms, Roman numerals: the engines spell them), single letters other than
    "a"/"I", and words without a vowel ("hmm"): what the engine says must be what
    the transcript says. Hyphens and dashes become spaces, as in LibriSpeech.
    """
    text = " ".join(raw.split())
    if not text or not _ALLOWED_RAW.match(text):
        return None
    if "." in text.rstrip(".!?"):
        return None  # abbreviations, ellipses, initials
    prompt = " ".join(re.sub(r"-+", " ", text).split())
    words = _WORD.findall(prompt)
    if not min_words <= len(words) <= max_words:
        return None
    for word in words:
        bare = word.strip("'")
        if not bare or word.startswith("'") or "''" in word:
            return None
        if word.endswith("'") and not bare.lower().endswith("s"):
            return None  # a closing quote, not a plural possessive
        if len(bare) == 1 and bare.lower() not in ("a", "i"):
            return None
        if len(bare) > 1 and bare.isupper():
            return None
        if bare.lower() in _BLOCKED_WORDS or not _VOWEL.search(bare):
            return None
    if prompt[-1] not in ".!?":
        prompt += "."  # a full stop gives the engines a sentence-final intonation
    return Sentence(prompt=prompt, transcript=" ".join(w.upper() for w in words))


def synset_examples(
    wordnet_dir: Path = DEFAULT_WORDNET_DIR, min_words: int = 2, max_words: int = 25
) -> Iterator[tuple[Sentence, ...]]:
    """The usable usage examples of each WordNet synset, one tuple per synset line
    (empty when none is usable), in file order.

    The examples are the double-quoted strings after the ``|`` of each synset line
    in ``data.{noun,verb,adj,adv}``.
    """
    for pos in ("noun", "verb", "adj", "adv"):
        path = wordnet_dir / f"data.{pos}"
        try:
            lines = path.read_text(encoding="latin-1").splitlines()
        except OSError as e:
            raise CorpusError(
                f"{path}: cannot read WordNet data ({e.strerror}); "
                "install the Debian package wordnet-base or pass --wordnet-dir"
            ) from e
        for line in lines:
            if line.startswith(" ") or "|" not in line:
                continue  # the license header
            raws = re.findall(r'"([^"]*)"', line.split("|", 1)[1])
            yield tuple(
                s
                for s in (clean_sentence(raw, min_words, max_words) for raw in raws)
                if s is not None
            )


@functools.lru_cache(maxsize=4)
def load_sentences(
    wordnet_dir: Path = DEFAULT_WORDNET_DIR, min_words: int = 2, max_words: int = 25
) -> tuple[Sentence, ...]:
    """All usable WordNet usage examples, de-duplicated by transcript, sorted."""
    seen: dict[str, Sentence] = {}
    for examples in synset_examples(wordnet_dir, min_words, max_words):
        for sentence in examples:
            seen.setdefault(sentence.transcript, sentence)
    if not seen:
        raise CorpusError(f"{wordnet_dir}: no usable usage examples in data.*")
    return tuple(seen[t] for t in sorted(seen))


# ------------------------------------------------------------------------ engines


def _run(cmd: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, check=False
    )


def wanted_voices() -> dict[str, set[str]]:
    """Engine -> the voices of our inventory (espeak-ng: accents and ``+variant``)."""
    return {
        ESPEAK: set(ESPEAK_ACCENTS) | {f"+{v}" for v in ESPEAK_VARIANTS if v},
        FLITE: set(FLITE_VOICES),
        FESTIVAL: set(FESTIVAL_VOICES),
    }


def available_voices(allow_missing: bool = False) -> dict[str, set[str]]:
    """Engine -> the voices of our inventory that are installed.

    espeak-ng voices are reported as ``accent`` and ``+variant`` entries. A missing
    program or voice raises :class:`EngineMissingError` naming it, unless
    ``allow_missing``, which warns on stderr and leaves it out.
    """
    wanted = wanted_voices()
    found: dict[str, set[str]] = {}
    problems: list[str] = []
    for engine in ENGINES:
        if shutil.which(engine) is None:
            problems.append(
                f"text-to-speech program '{engine}' not found on PATH "
                f"(Debian: apt-get install {ENGINE_PACKAGES[engine]})"
            )
            continue
        installed = _installed_voices(engine)
        missing = sorted(wanted[engine] - installed)
        if missing:
            problems.append(
                f"{engine}: voices not installed: {' '.join(missing)} "
                f"(Debian: apt-get install {ENGINE_PACKAGES[engine]})"
            )
        found[engine] = wanted[engine] & installed
    if problems:
        if not allow_missing:
            raise EngineMissingError(
                "; ".join(problems) + " (or pass --allow-missing-engines to skip them)"
            )
        for p in problems:
            print(f"warning: {p}; skipping it", file=sys.stderr)
    return {e: v for e, v in found.items() if v}


def _installed_voices(engine: str) -> set[str]:
    if engine == ESPEAK:
        voices: set[str] = set()
        for arg in ("--voices=en", "--voices=variant"):
            out = _run([ESPEAK, arg]).stdout
            for line in out.splitlines()[1:]:
                cols = line.split()
                if len(cols) >= 5 and cols[1] != "variant":
                    voices.add(cols[1])
                elif len(cols) >= 5 and "!v/" in line:
                    voices.add("+" + line.split("!v/", 1)[1].split()[0])
        return voices
    if engine == FLITE:
        out = _run([FLITE, "-lv"]).stdout
        return set(out.split(":", 1)[-1].split())
    out = _run([FESTIVAL, "--batch", "(print (voice.list))"]).stdout
    return set(out.replace("(", " ").replace(")", " ").split())


def _engine_versions() -> dict[str, str]:
    versions = {}
    for engine, arg in (
        (ESPEAK, "--version"),
        (FLITE, "--version"),
        (FESTIVAL, "--version"),
    ):
        if shutil.which(engine):
            out = _run([engine, arg])
            text = (out.stdout + out.stderr).strip().splitlines()
            versions[engine] = text[-1].strip() if text else "?"
    return versions


# Phone labels. Every engine reports the phones it spoke with their times; we keep
# them, mapped to one ARPAbet set, beside each recording (UTT.phones) so that
# training can use them as frame-level targets (an auxiliary loss; see asr.task).
# The set is asr.text.PHONES, copied (a test keeps the two equal): importing asr
# would import torch into every worker.
PHONES = (
    "sil aa ae ah ao aw ax ay b ch d dh eh er ey f g hh ih iy jh k l m n ng ow oy "
    "p r s sh t th uh uw v w y z zh"
).split()
# espeak-ng's English phoneme mnemonics (phsource/ph_english*) -> ARPAbet. Rhotic
# vowels (A@, O@, e@, i@, U@) keep their vowel; syllabic consonants their consonant.
ESPEAK_PHONES = {
    "_": "sil",
    "_:": "sil",
    "_!": "sil",
    "_|": "sil",
    "_^_": "sil",
    ";": None,
    "a": "ae",
    "aa": "ae",
    "a#": "ax",
    "a2": "ax",
    "A:": "aa",
    "A@": "aa",
    "A~": "aa",
    "0": "aa",
    "V": "ah",
    "VR": "ah",
    "@": "ax",
    "@2": "ax",
    "@5": "ax",
    "@-": "ax",
    "@L": "l",
    "3": "er",
    "3:": "er",
    "E": "eh",
    "E2": "eh",
    "E3": "eh",
    "e": "eh",
    "e@": "eh",
    "eI": "ey",
    "I": "ih",
    "I2": "ih",
    "I#": "ih",
    "IR": "ih",
    "i": "iy",
    "i:": "iy",
    "i@": "ih",
    "i@3": "ih",
    "aI": "ay",
    "aI@": "ay",
    "aI2": "ay",
    "aI3": "ay",
    "aU": "aw",
    "aU@": "aw",
    "oU": "ow",
    "oU#": "ow",
    "o@": "ao",
    "O": "ao",
    "O:": "ao",
    "O2": "ao",
    "O@": "ao",
    "OI": "oy",
    "U": "uh",
    "U@": "uh",
    "u": "uw",
    "u:": "uw",
    "b": "b",
    "d": "d",
    "d#": "d",
    "D": "dh",
    "dZ": "jh",
    "f": "f",
    "g": "g",
    "h": "hh",
    "j": "y",
    "k": "k",
    "l": "l",
    "l/": "l",
    "m": "m",
    "n": "n",
    "n-": "n",
    "N": "ng",
    "p": "p",
    "r": "r",
    "r-": "r",
    "s": "s",
    "S": "sh",
    "t": "t",
    "t#": "t",
    "t2": "t",
    "t[": "t",
    "?": "t",
    "T": "th",
    "tS": "ch",
    "v": "v",
    "w": "w",
    "w#": "w",
    "z": "z",
    "Z": "zh",
    "x": "hh",
    # The rest of the English tables (en, en-us, en-sc, en-rp, en-us-nyc, ...):
    # variants, and vowels of loan words ("bon vivant": O~).
    "E#": "eh",
    "e#": "eh",
    "e:": "ey",
    "I2#": "ih",
    "0#": "aa",
    "02": "aa",
    "A#": "ae",  # the BATH vowel; /ae/ as CMUdict has it
    "a/": "ae",
    "a#2": "ax",
    "@#": "ax",
    "o:": "ow",
    "O~": "ao",
    "z#": "z",
    "z/2": "z",
    "r/": "r",
    "l/2": "l",
    # base1's sounds that English entries may borrow, where ARPAbet has a match
    "o": "ow",
    "m-": "m",
    "N-": "ng",
    "l-": "l",
    "R": "r",
    "R2": "r",
    "R3": "r",
    "r.": "r",
    "l/3": "l",
    "L": "l",
    "n^": "n",
    "d[": "d",
    "c": "k",
    "q": "k",
    "B": "v",
    "v#": "v",
    "C": "hh",
    "X": "hh",
    "*": "t",  # the alveolar tap, like CMU's dx
    # pauses
    "_::": "sil",
    "_;_": "sil",
    "||": "sil",
    "_X1": "sil",
}
# flite's and festival's US phone sets are ARPAbet already, plus these.
CMU_PHONES = {
    "pau": "sil",
    "h#": "sil",
    "brth": "sil",
    "#": "sil",
    "el": "l",
    "em": "m",
    "en": "n",
    "dx": "t",
    "axr": "er",
    "ix": "ih",
    "h": "hh",
}


def map_phone(engine: str, name: str) -> str | None:
    """One engine phone name -> an ARPAbet label of :data:`PHONES`, or None for a
    marker that takes no time. Raises SynthesisError for a name we do not know."""
    if engine == ESPEAK:
        if name in ESPEAK_PHONES:
            return ESPEAK_PHONES[name]
    else:
        name = name.lower()
        if name in CMU_PHONES:
            return CMU_PHONES[name]
        if name in PHONES:
            return name
    raise SynthesisError(f"{engine} spoke a phone we cannot label: {name!r}")


Segment = tuple[str, float, float]  # (ARPAbet label, start, end), seconds


@dataclass(frozen=True)
class Speech:
    """What an engine made of one prompt: ``(n,)`` float64 audio at ``sample_rate``
    Hz and the phones it spoke, in the engine's time (seconds from the first
    sample), consecutive and in order."""

    audio: np.ndarray
    sample_rate: int
    phones: tuple[Segment, ...]


def _segments(
    engine: str, names_ends: Sequence[tuple[str, float]]
) -> tuple[Segment, ...]:
    """Phones given by their end times (flite, festival) -> labelled segments; a
    marker that maps to no label extends the phone before it."""
    segments: list[Segment] = []
    start = 0.0
    for name, end in names_ends:
        label = map_phone(engine, name)
        if end <= start:
            continue
        if label is None:
            if segments:
                segments[-1] = (segments[-1][0], segments[-1][1], end)
        else:
            segments.append((label, start, end))
        start = end
    return tuple(segments)


# The espeak-ng program cannot say when it speaks each phoneme; its library can
# (phoneme events), but it keeps state from one sentence to the next (so a sentence
# would sound different depending on what the process said before) and cannot be
# initialised twice. So a small helper process (one per worker) initialises the
# library once and forks a pristine copy of itself for every sentence: the samples
# depend on the sentence and the settings alone, and are the espeak-ng program's
# (tested). Requests and replies are length-prefixed messages on its stdin/stdout.
_ESPEAK_HELPER = r"""
import ctypes, ctypes.util, os, struct, sys

class Event(ctypes.Structure):  # espeak_EVENT, speak_lib.h
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]

lib = ctypes.CDLL(ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1")
# AUDIO_OUTPUT_SYNCHRONOUS, espeakINITIALIZE_PHONEME_EVENTS
rate = lib.espeak_Initialize(2, 0, None, 1)
audio, events = [], []

@ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                  ctypes.POINTER(Event))
def on_audio(wav, n, ev):
    if n > 0:
        audio.append(ctypes.string_at(wav, 2 * n))
    i = 0
    while ev[i].type != 0:  # espeakEVENT_LIST_TERMINATED
        if ev[i].type == 7:  # espeakEVENT_PHONEME
            events.append(struct.pack("<8si", ev[i].id, ev[i].sample))
        i += 1
    return 0

lib.espeak_SetSynthCallback(on_audio)
stdin, stdout = sys.stdin.buffer, sys.stdout.buffer

def say(request):
    voice, wpm, pitch, amplitude, text = request.decode().split("\t", 4)
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        return b"E" + f"no voice {voice!r}".encode()
    for parameter, value in ((1, wpm), (2, amplitude), (3, pitch)):
        lib.espeak_SetParameter(parameter, int(value), 0)
    ctypes.CDLL(None).srand(1)  # the noise sources draw from libc's rand()
    data = text.encode()
    # POS_CHARACTER; espeakCHARS_AUTO | espeakENDPAUSE, as the espeak-ng program
    status = lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 0x1000, None, None)
    lib.espeak_Synchronize()
    if status != 0 or not audio:
        return b"E" + f"synthesis failed (status {status})".encode()
    return b"K" + struct.pack("<ii", rate, len(events)) + b"".join(events + audio)

if rate <= 0:
    sys.exit("espeak-ng's library failed to initialise")
while True:
    header = stdin.read(4)
    if len(header) < 4:
        break
    request = stdin.read(struct.unpack("<I", header)[0])
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # a pristine copy of the initialised library
        os.close(read_end)
        with os.fdopen(write_end, "wb") as f:
            f.write(say(request))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        reply = f.read()
    _, status = os.waitpid(pid, 0)
    reply = reply or b"E" + f"crashed (wait status {status})".encode()
    stdout.write(struct.pack("<I", len(reply)) + reply)
    stdout.flush()
"""


class _EspeakHelper:
    """The worker's end of the espeak-ng helper process (started on first use)."""

    _process: subprocess.Popen[bytes] | None = None

    @classmethod
    def say(cls, voice: str, wpm: int, pitch: int, amplitude: int, text: str) -> Speech:
        if cls._process is None or cls._process.poll() is not None:
            cls._process = subprocess.Popen(
                [sys.executable, "-S", "-c", _ESPEAK_HELPER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        proc = cls._process
        assert proc.stdin is not None and proc.stdout is not None
        request = "\t".join(map(str, (voice, wpm, pitch, amplitude, text))).encode()
        try:
            proc.stdin.write(struct.pack("<I", len(request)) + request)
            proc.stdin.flush()
            header = proc.stdout.read(4)
            reply = proc.stdout.read(struct.unpack("<I", header)[0])
        except (OSError, struct.error) as e:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            cls._process = None
            raise SynthesisError(f"espeak-ng's library failed: {err or e}") from e
        if reply[:1] != b"K":
            raise SynthesisError(f"espeak-ng: {reply[1:].decode(errors='replace')}")
        rate, n = struct.unpack_from("<ii", reply, 1)
        starts = []
        for i in range(n):
            name, sample = struct.unpack_from("<8si", reply, 9 + 12 * i)
            starts.append((name.rstrip(b"\0").decode("ascii", "replace"), sample))
        samples = np.frombuffer(reply, dtype="<i2", offset=9 + 12 * n)
        audio = samples.astype(np.float64) / 32768.0
        # A phoneme event marks where its phoneme starts; it lasts until the next.
        ends = [sample for _, sample in starts[1:]] + [len(audio)]
        names_ends = [
            (name, end / rate) for (name, _), end in zip(starts, ends, strict=True)
        ]
        segments = _segments(ESPEAK, names_ends)
        first = starts[0][1] / rate if starts else 0.0
        if first > 0:  # before the first phoneme: silence
            segments = (("sil", 0.0, first),) + tuple(
                (label, max(a, first), b) for label, a, b in segments if b > first
            )
        return Speech(audio, rate, segments)


def _synthesize_espeak(
    speaker: Speaker, prompts: Sequence[str], tmp: Path
) -> list[Speech | str]:
    args = speaker.engine_args()
    results: list[Speech | str] = []
    for prompt in prompts:
        try:
            results.append(
                _EspeakHelper.say(
                    args["-v"], args["-s"], args["-p"], args["-a"], prompt
                )
            )
        except SynthesisError as e:
            results.append(str(e))
    return results


def _synthesize_flite(
    speaker: Speaker, prompts: Sequence[str], tmp: Path
) -> list[Speech | str]:
    results: list[Speech | str] = []
    args = speaker.engine_args()
    for i, prompt in enumerate(prompts):
        wav = tmp / f"{i}.wav"
        cmd = [FLITE, "-voice", speaker.voice, "-psdur"]
        for name, value in args.items():
            cmd += ["--setf", f"{name}={value}"]
        cmd += ["-t", prompt, "-o", str(wav)]
        proc = _run(cmd)
        # -psdur prints "name:end name:end ..." (seconds) on one line.
        names_ends = []
        for token in proc.stdout.split():
            name, _, end = token.rpartition(":")
            try:
                names_ends.append((name, float(end)))
            except ValueError:
                continue
        results.append(_read_speech(proc, wav, cmd, FLITE, names_ends))
    return results


def _synthesize_festival(
    speaker: Speaker, prompts: Sequence[str], tmp: Path
) -> list[Speech | str]:
    # One festival process per batch: starting it and loading a voice costs 0.2-0.3 s,
    # longer than synthesizing a sentence. Prompts hold no quote or backslash.
    args = speaker.engine_args()
    script = [f"(voice_{speaker.voice})"]
    if "hts -r" in args:
        script.append(
            f"(set! hts_engine_params (append hts_engine_params "
            f'(list \'("-r" {args["hts -r"]}))))'
        )
    else:
        script.append(f"(Parameter.set 'Duration_Stretch {args['Duration_Stretch']})")
        script.append(
            f"(set! int_lr_params '((target_f0_mean {args['target_f0_mean']}) "
            f"(target_f0_std {args['target_f0_std']}) "
            "(model_f0_mean 170) (model_f0_std 34)))"
        )
    wavs = [tmp / f"{i}.wav" for i in range(len(prompts))]
    for i, (prompt, wav) in enumerate(zip(prompts, wavs, strict=True)):
        assert '"' not in prompt and "\\" not in prompt, prompt
        script.append(f'(set! utt (utt.synth (Utterance Text "{prompt}")))')
        script.append(f'(utt.save.wave utt "{wav}" \'riff)')
        # One line per utterance: "@@ i name:end name:end ...".
        script.append(
            f'(format t "@@ {i}")(mapcar (lambda (s) (format t " %s:%f" '
            '(item.name s) (item.feat s "end"))) (utt.relation.items utt '
            '\'Segment))(format t "\\n")'
        )
    scm = tmp / "batch.scm"
    scm.write_text("\n".join(script) + "\n")
    cmd = [FESTIVAL, "--batch", str(scm)]
    proc = _run(cmd, timeout=60.0 + 10.0 * len(prompts))
    phones: dict[int, list[tuple[str, float]]] = {}
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "@@" and fields[1].isdigit():
            pairs = (f.rpartition(":") for f in fields[2:])
            phones[int(fields[1])] = [(n, float(e)) for n, _, e in pairs if n]
    return [
        _read_speech(proc, wav, cmd, FESTIVAL, phones.get(i, []))
        for i, wav in enumerate(wavs)
    ]


def _read_speech(
    proc: subprocess.CompletedProcess[str],
    wav: Path,
    cmd: Sequence[str],
    engine: str,
    names_ends: Sequence[tuple[str, float]],
) -> Speech | str:
    """The engine's WAV file and its phones, or why there are none."""
    if not (wav.is_file() and wav.stat().st_size > 44):
        err = (proc.stderr or proc.stdout or "").strip().splitlines()
        detail = err[-1] if err else "no output file"
        return f"{cmd[0]} exited with {proc.returncode}: {detail}"
    if not names_ends:
        return f"{cmd[0]} reported no phones for {wav.name}"
    try:
        audio, rate = sf.read(str(wav), dtype="float64", always_2d=True)
        return Speech(audio.mean(axis=1), rate, _segments(engine, names_ends))
    except (OSError, sf.LibsndfileError, SynthesisError) as e:
        return f"{wav.name}: {e}"


SYNTHESIZERS: dict[
    str, Callable[[Speaker, Sequence[str], Path], list[Speech | str]]
] = {
    ESPEAK: _synthesize_espeak,
    FLITE: _synthesize_flite,
    FESTIVAL: _synthesize_festival,
}


# ------------------------------------------------------------------------ channel


@functools.lru_cache(maxsize=64)
def room_impulse_response(channel: Channel, sample_rate: int) -> np.ndarray | None:
    """A synthetic room: a direct path, a pre-delay, then exponentially decaying noise.

    Returns ``(n,)`` float64 at ``sample_rate`` Hz, or None for a dry channel. The tail
    decays by 60 dB over ``reverb_rt60_s`` and carries ``reverb_drr_db`` less energy
    than the direct path.
    """
    if channel.reverb_rt60_s is None:
        return None
    rng = np.random.default_rng(channel.seed)
    n_tail = int(channel.reverb_rt60_s * sample_rate)
    t = np.arange(n_tail) / sample_rate
    tail = rng.standard_normal(n_tail) * np.exp(-6.91 * t / channel.reverb_rt60_s)
    tail *= math.sqrt(10 ** (-channel.reverb_drr_db / 10) / np.sum(tail**2))
    delay = int(channel.reverb_predelay_s * sample_rate)
    ir = np.zeros(delay + n_tail)
    ir[0] = 1.0
    ir[delay:] += tail
    ir.setflags(write=False)  # shared through the cache
    return ir


@functools.lru_cache(maxsize=64)
def channel_filter(channel: Channel, sample_rate: int) -> np.ndarray:
    """The channel's high-pass, low-pass and EQ as ``(sections, 6)`` SOS at
    ``sample_rate`` Hz (bands above the Nyquist frequency are left out)."""
    nyquist = sample_rate / 2
    hp = min(channel.highpass_hz, 0.2 * nyquist)
    sos = [signal.butter(2, hp, "highpass", fs=sample_rate, output="sos")]
    if channel.lowpass_hz is not None and channel.lowpass_hz < 0.95 * nyquist:
        lowpass = signal.butter(4, channel.lowpass_hz, fs=sample_rate, output="sos")
        sos.append(lowpass)
    if channel.eq_hz < 0.9 * nyquist:
        eq = _peaking_sos(channel.eq_hz, channel.eq_gain_db, channel.eq_q, sample_rate)
        sos.append(eq)
    return np.concatenate(sos)


def _peaking_sos(freq: float, gain_db: float, q: float, sample_rate: int) -> np.ndarray:
    # RBJ audio-EQ cookbook peaking filter.
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * freq / sample_rate
    alpha = math.sin(w0) / (2 * q)
    b = [1 + alpha * a, -2 * math.cos(w0), 1 - alpha * a]
    den = [1 + alpha / a, -2 * math.cos(w0), 1 - alpha / a]
    return np.array([[*(x / den[0] for x in b), 1.0, den[1] / den[0], den[2] / den[0]]])


def _colored_noise(color: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n,)`` noise with unit RMS and a 1/f^0 (white), 1/f (pink) or 1/f^2 (brown)
    power spectrum."""
    white = rng.standard_normal(n)
    if color != "white":
        exponent = {"pink": 0.5, "brown": 1.0}[color]  # amplitude ~ f^-exponent
        spectrum = np.fft.rfft(white)
        spectrum[0] = 0.0  # no DC offset
        freqs = np.fft.rfftfreq(n)
        freqs[0] = 1.0
        white = np.fft.irfft(spectrum / freqs**exponent, n)
    return white / max(float(np.sqrt(np.mean(white**2))), 1e-12)


def _active_power(x: np.ndarray, sample_rate: int) -> float:
    """Mean power of the 20 ms frames within 40 dB of the loudest one."""
    hop = max(1, sample_rate // 50)
    n = len(x) // hop
    if n == 0:
        return float(np.mean(x**2)) if len(x) else 0.0
    power = np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1)
    active = power[power >= power.max() * 1e-4]
    return float(np.mean(active))


def _trim(x: np.ndarray, sample_rate: int, threshold_db: float = -45.0) -> slice:
    """The part of ``x`` left after cutting leading and trailing 10 ms frames quieter
    than ``threshold_db`` re peak."""
    hop = max(1, sample_rate // 100)
    n = len(x) // hop
    if n == 0:
        return slice(0, len(x))
    peak = np.abs(x[: n * hop]).reshape(n, hop).max(axis=1)
    loud = np.nonzero(peak >= peak.max() * 10 ** (threshold_db / 20))[0]
    return slice(int(loud[0]) * hop, (int(loud[-1]) + 1) * hop)


def render_speech(
    speech: Speech,
    speaker: Speaker,
    sample_rate: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, tuple[Segment, ...]]:
    """Turn an engine's output into the speaker's recording, and its phones into the
    recording's time.

    ``speech.audio`` is ``(n,)`` float at ``speech.sample_rate`` Hz; returns ``(m,)``
    float32 at ``sample_rate`` Hz in [-1, 1] and the phones (seconds in the
    recording, cut to the speech kept). Steps: trim the engine's silences, resample
    with the speaker's speed factor, pad with 0.1-0.35 s of silence each side,
    high-pass, low-pass, EQ, reverb, set the level, add noise at the speaker's SNR,
    limit peaks. ``rng`` draws this utterance's padding and noise; the rest is fixed
    by the speaker.
    """
    engine_rate = speech.sample_rate
    ch = speaker.channel
    x = np.asarray(speech.audio, dtype=np.float64)
    kept = _trim(x, engine_rate)
    x = x[kept]
    if len(x) < 0.2 * engine_rate:
        raise SynthesisError(f"the engine said {len(x) / engine_rate:.2f} s only")
    # Read as if recorded at engine_rate * speed: faster and higher when speed > 1.
    x = soxr.resample(x, engine_rate * speaker.speed, sample_rate)
    pads = rng.uniform(0.10, 0.35, size=2)
    lead = int(pads[0] * sample_rate)
    # Engine time t -> recording time: past the lead-in, sped up by the speed factor.
    t0, t1 = kept.start / engine_rate, kept.stop / engine_rate
    shift = lead / sample_rate
    phones = tuple(
        (
            label,
            round(shift + (max(a, t0) - t0) / speaker.speed, 4),
            round(shift + (min(b, t1) - t0) / speaker.speed, 4),
        )
        for label, a, b in speech.phones
        if min(b, t1) - max(a, t0) >= 0.01  # slivers left by the 10 ms trim: dropped
    )
    x = np.concatenate([np.zeros(lead), x, np.zeros(int(pads[1] * sample_rate))])
    x = signal.sosfilt(channel_filter(ch, sample_rate), x)
    ir = room_impulse_response(ch, sample_rate)
    if ir is not None:
        tail = min(len(ir) - 1, int(0.2 * sample_rate))
        x = signal.fftconvolve(x, ir)[: len(x) + tail]
    power = _active_power(x, sample_rate)
    if power <= 0:
        raise SynthesisError("the engine's output is silent")
    x *= math.sqrt(10 ** (ch.level_dbfs / 10) / power)
    noise_power = 10 ** ((ch.level_dbfs - ch.snr_db) / 10)
    x += math.sqrt(noise_power) * _colored_noise(ch.noise_color, len(x), rng)
    peak = float(np.max(np.abs(x)))
    if peak > 0.98:
        x *= 0.98 / peak
    return x.astype(np.float32), phones


# ------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Options:
    """Everything that decides the corpus's content (not how fast it is made)."""

    hours: float
    seed: int
    sample_rate: int
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
class SpeakerPlan:
    """A speaker and the utterances it will say."""

    speaker: Speaker
    utterances: tuple[Utterance, ...]

    def directory(self, out_dir: Path) -> Path:
        """``OUT_DIR/SPLIT/SPK/CHAPTER``."""
        s = self.speaker
        return out_dir / s.split / str(s.speaker_id) / str(s.chapter_id)


def _uniform(
    rng: np.random.Generator, low: float, high: float, digits: int = 3
) -> float:
    return round(float(rng.uniform(low, high)), digits)


def _random_channel(rng: np.random.Generator) -> Channel:
    reverb = rng.random() < 0.5
    return Channel(
        level_dbfs=_uniform(rng, -32, -18, 1),
        highpass_hz=_uniform(rng, 40, 250, 0),
        lowpass_hz=_uniform(rng, 3400, 7000, 0) if rng.random() < 0.3 else None,
        eq_hz=round(float(np.exp(rng.uniform(math.log(300), math.log(4000)))), 0),
        eq_gain_db=_uniform(rng, -6, 6, 1),
        eq_q=_uniform(rng, 0.7, 2.0, 2),
        reverb_rt60_s=_uniform(rng, 0.15, 0.5) if reverb else None,
        reverb_drr_db=_uniform(rng, 4, 14, 1),
        reverb_predelay_s=_uniform(rng, 0.003, 0.02, 4),
        snr_db=_uniform(rng, 20, 40, 1),
        noise_color=str(rng.choice(["white", "pink", "brown"], p=[0.25, 0.5, 0.25])),
        seed=int(rng.integers(2**31)),
    )


def _make_speaker(
    speaker_id: int,
    split: str,
    engine: str,
    voice: str,
    variant: str,
    seed: int,
) -> Speaker:
    rng = np.random.default_rng([seed, speaker_id])
    pitch_settable = engine == ESPEAK or (
        (FLITE_VOICES if engine == FLITE else FESTIVAL_VOICES).get(voice) is not None
    )
    speaker = Speaker(
        speaker_id=speaker_id,
        chapter_id=speaker_id * 10,
        split=split,
        engine=engine,
        voice=voice,
        variant=variant,
        rate=_uniform(rng, 0.85, 1.2),
        pitch=_uniform(rng, 0.85, 1.2) if pitch_settable else 1.0,
        expressiveness=_uniform(rng, 0.7, 1.6) if engine == FESTIVAL else 1.0,
        speed=_uniform(rng, *EVAL_SPEED),
        channel=_random_channel(rng),
        seed=int(rng.integers(2**31)),
    )
    if split == "train":
        # Drawn last, so that every other setting is drawn as for a held-out
        # speaker; the engine's tempo absorbs the change of speed.
        speed = _uniform(rng, *TRAIN_SPEED)
        rate = round(speaker.rate * speaker.speed / speed, 3)
        speaker = dataclasses.replace(speaker, speed=speed, rate=rate)
    return speaker


def _estimate_seconds(
    sentence: Sentence, engine: str, rate: float, speed: float
) -> float:
    intercept, slope = SPEECH_SECONDS[engine]
    speech = (intercept + slope * sentence.letters) / (rate * speed)
    return speech + MEAN_PAD_SECONDS


class _Cycle:
    """An endless round-robin over a seeded permutation of ``items``."""

    def __init__(self, items: Sequence[str], rng: np.random.Generator) -> None:
        assert items, "a cycle over no voices"
        self.items = [items[i] for i in rng.permutation(len(items))]
        self.i = 0

    def __next__(self) -> str:
        item = self.items[self.i % len(self.items)]
        self.i += 1
        return item


@dataclass(frozen=True)
class _Inventory:
    """The installed voices, and which of them training may use."""

    installed: dict[str, set[str]]  # as from available_voices()
    train_accents: list[str]  # espeak-ng
    train_variants: list[str]  # espeak-ng, "" = the accent's default
    train_voices: dict[str, list[str]]  # flite and festival

    @classmethod
    def of(cls, installed: dict[str, set[str]]) -> _Inventory:
        """Split ``installed`` (engine -> voices) into training and held-out."""
        held_voices = {h.voice for h in HELD_OUT.values()}
        held_accents = {h.espeak_accent for h in HELD_OUT.values()}
        held_variants = {v for h in HELD_OUT.values() for v in h.espeak_variants}
        esp = installed.get(ESPEAK, set())
        return cls(
            installed=installed,
            train_accents=[
                a for a in ESPEAK_ACCENTS if a in esp and a not in held_accents
            ],
            train_variants=[
                v
                for v in ESPEAK_VARIANTS
                if (v == "" or f"+{v}" in esp) and v not in held_variants
            ],
            train_voices={
                engine: [
                    v
                    for v in names
                    if v in installed.get(engine, set()) and v not in held_voices
                ]
                for engine, names in (
                    (FLITE, FLITE_VOICES),
                    (FESTIVAL, FESTIVAL_VOICES),
                )
            },
        )


def plan_corpus(
    sentences: Sequence[Sentence], options: Options, voices: dict[str, set[str]]
) -> list[SpeakerPlan]:
    """Decide every speaker and every utterance: a pure function of its arguments.

    Sentences are shuffled with the seed; dev takes the first ones, test the next,
    and train the rest (from the start again if train needs more than remain).
    """
    order = np.random.default_rng([options.seed, 7]).permutation(len(sentences))
    shuffled = [sentences[i] for i in order]
    total = options.hours * 3600
    eval_target = total * options.eval_fraction
    train_target = total - 2 * eval_target
    inventory = _Inventory.of(voices)
    plans: list[SpeakerPlan] = []
    used = 0
    for split, n_voices in (("dev", options.dev_voices), ("test", options.test_voices)):
        speakers = _eval_speakers(split, n_voices, options.seed, inventory)
        split_plans = _fill(speakers, n_voices, eval_target, shuffled[used:])
        used += sum(len(p.utterances) for p in split_plans)
        plans += split_plans
    train_texts = shuffled[used:]
    if not train_texts:
        raise CorpusError("no WordNet sentences left for train: ask for fewer hours")
    # As many training speakers as give about utts_per_speaker sentences each.
    mean_seconds = float(
        np.mean([_estimate_seconds(s, ESPEAK, 1.0, 1.0) for s in train_texts[:2000]])
    )
    n_train = max(1, round(train_target / (options.utts_per_speaker * mean_seconds)))
    if n_train > DEV_SPEAKER_BASE - TRAIN_SPEAKER_BASE:
        raise CorpusError(
            f"{n_train} training speakers is too many: raise --utts-per-speaker"
        )
    speakers = _train_speakers(options.seed, inventory)
    return plans + _fill(speakers, n_train, train_target, train_texts, cycle=True)


def _fill(
    speakers: Iterator[Speaker],
    n_speakers: int,
    target_seconds: float,
    texts: Sequence[Sentence],
    cycle: bool = False,
) -> list[SpeakerPlan]:
    """Give ``n_speakers`` speakers consecutive texts, about ``target_seconds`` in
    all (by :func:`_estimate_seconds`), each at least one; re-use texts if
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
            est = _estimate_seconds(
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


def _train_speakers(seed: int, inventory: _Inventory) -> Iterator[Speaker]:
    """Training speakers: engines in ENGINE_ROTATION, each engine's voices (and
    espeak-ng's accents and variants, independently) in a seeded round-robin."""
    rng = np.random.default_rng([seed, 11])
    usable = {
        ESPEAK: bool(inventory.train_accents),
        **{e: bool(v) for e, v in inventory.train_voices.items()},
    }
    rotation = [e for e in ENGINE_ROTATION if usable[e]]
    if not rotation:
        raise CorpusError("no training voice is installed")
    cycles = {e: _Cycle(v, rng) for e, v in inventory.train_voices.items() if v}
    if usable[ESPEAK]:
        cycles[ESPEAK] = _Cycle(inventory.train_accents, rng)
        variants = _Cycle(inventory.train_variants, rng)
    for i in itertools.count():
        engine = rotation[i % len(rotation)]
        voice = next(cycles[engine])
        variant = next(variants) if engine == ESPEAK else ""
        yield _make_speaker(
            TRAIN_SPEAKER_BASE + i, "train", engine, voice, variant, seed
        )


def _eval_speakers(
    split: str, n: int, seed: int, inventory: _Inventory
) -> Iterator[Speaker]:
    """Dev or test speakers: ``n`` of them, EVAL_ENGINE_FRACTION with the split's
    held-out engine voice and the rest with its held-out espeak-ng variants, every
    other one in its held-out accent (the others in a training accent)."""
    held = HELD_OUT[split]
    base = DEV_SPEAKER_BASE if split == "dev" else TEST_SPEAKER_BASE
    rng = np.random.default_rng([seed, 13, base])
    esp = inventory.installed.get(ESPEAK, set())
    variants = [v for v in held.espeak_variants if f"+{v}" in esp]
    engine_ok = held.voice in inventory.installed.get(held.engine, set())
    if not variants and not engine_ok:
        raise CorpusError(f"none of the held-out voices for {split} is installed")
    if not variants:
        n_engine = n
    elif not engine_ok:
        n_engine = 0
    else:
        n_engine = round(n * EVAL_ENGINE_FRACTION)
    # The engine-voice speakers are spread evenly among the espeak-ng ones.
    engine_slots = {k * n // n_engine for k in range(n_engine)}
    if variants:
        variant_cycle = _Cycle(variants, rng)
        accents = [held.espeak_accent] if held.espeak_accent in esp else []
        other_accents = _Cycle(inventory.train_accents or accents, rng)
    j = 0
    for i in itertools.count():
        if i in engine_slots:
            voice, variant = held.voice, ""
            engine = held.engine
        else:
            engine, variant = ESPEAK, next(variant_cycle)
            voice = accents[0] if accents and j % 2 == 0 else next(other_accents)
            j += 1
        yield _make_speaker(base + i, split, engine, voice, variant, seed)


# ----------------------------------------------------------------------- workers


@dataclass(frozen=True)
class _Task:
    speaker: Speaker
    utterances: tuple[Utterance, ...]
    directory: Path
    sample_rate: int
    seed: int


@dataclass(frozen=True)
class _Result:
    utt_id: str
    seconds: float
    generated: bool
    error: str | None = None


def _partial_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def _run_task(task: _Task) -> list[_Result]:
    """Synthesize, render and write the task's utterances that are not on disk."""
    results: list[_Result] = []
    todo: list[Utterance] = []
    for utt in task.utterances:
        flac = task.directory / f"{utt.utt_id}.flac"
        if flac.is_file():
            results.append(_Result(utt.utt_id, sf.info(str(flac)).duration, False))
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
                results.append(_Result(utt.utt_id, 0.0, False, out))
                continue
            try:
                rng = np.random.default_rng(
                    [task.seed, speaker.speaker_id, utt.index, 1]
                )
                y, phones = render_speech(out, speaker, task.sample_rate, rng)
                flac = task.directory / f"{utt.utt_id}.flac"
                # The phones first: a FLAC on disk always has its phones beside it.
                _write_atomic(flac.with_suffix(".phones"), format_phones(phones))
                partial = _partial_name(flac)
                sf.write(
                    str(partial), y, task.sample_rate, format="FLAC", subtype="PCM_16"
                )
                os.replace(partial, flac)
                results.append(_Result(utt.utt_id, len(y) / task.sample_rate, True))
            except (OSError, sf.LibsndfileError, SynthesisError) as e:
                results.append(_Result(utt.utt_id, 0.0, False, f"{utt.utt_id}: {e}"))
    return results


def _tasks(
    plans: Sequence[SpeakerPlan], out_dir: Path, options: Options
) -> list[_Task]:
    # Batches of at most 25 utterances: festival starts once per batch, and small
    # batches keep the workers evenly loaded.
    tasks = []
    for plan in plans:
        for start in range(0, len(plan.utterances), 25):
            tasks.append(
                _Task(
                    speaker=plan.speaker,
                    utterances=plan.utterances[start : start + 25],
                    directory=plan.directory(out_dir),
                    sample_rate=options.sample_rate,
                    seed=options.seed,
                )
            )
    # Longest first, so the pool does not wait on one slow batch at the end.
    tasks.sort(key=_task_cost, reverse=True)
    return tasks


def _task_cost(task: _Task) -> float:
    """Estimated seconds of CPU for a task (for scheduling only)."""
    s = task.speaker
    speed = REAL_TIME.get(f"{s.engine}:{s.voice}", REAL_TIME[s.engine])
    audio = sum(
        _estimate_seconds(u.sentence, s.engine, s.rate, s.speed)
        for u in task.utterances
    )
    return audio / speed


def _run_tasks(tasks: Sequence[_Task], jobs: int) -> Iterator[list[_Result]]:
    if jobs <= 1 or len(tasks) <= 1:
        yield from map(_run_task, tasks)
        return
    methods = multiprocessing.get_all_start_methods()
    # fork: workers inherit this module even when it was loaded from a file path.
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ctx.Pool(min(jobs, len(tasks))) as pool:
        yield from pool.imap_unordered(_run_task, tasks)


# ---------------------------------------------------------------------- outputs


def format_phones(phones: Sequence[Segment]) -> str:
    """``UTT.phones``: one ``label start end`` line per phone (seconds)."""
    return "".join(f"{label} {a:.4f} {b:.4f}\n" for label, a, b in phones)


def _write_atomic(path: Path, text: str) -> None:
    partial = _partial_name(path)
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _write_transcripts(plan: SpeakerPlan, out_dir: Path, ok: set[str]) -> None:
    directory = plan.directory(out_dir)
    s = plan.speaker
    lines = [
        f"{u.utt_id} {u.sentence.transcript}\n"
        for u in plan.utterances
        if u.utt_id in ok
    ]
    if lines:
        directory.mkdir(parents=True, exist_ok=True)
        _write_atomic(
            directory / f"{s.speaker_id}-{s.chapter_id}.trans.txt", "".join(lines)
        )


def _remove_partials(out_dir: Path) -> None:
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
        "generator": "tools/make_synthetic_corpus.py",
        "config": options.to_json(),
        "engine_versions": _engine_versions(),
        "held_out": {k: dataclasses.asdict(v) for k, v in HELD_OUT.items()},
        "failed": list(failed),
        "speakers": speakers,
    }


def _summarize(
    plans: Sequence[SpeakerPlan], seconds: dict[str, float]
) -> dict[str, SplitSummary]:
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
        _write_atomic(path, json.dumps(wanted, indent=2) + "\n")


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
            base voices (see the module docstring).
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
        splits = _summarize(plans, complete)
        return CorpusSummary(
            out_dir=out_dir,
            splits=splits,
            wall_seconds=time.perf_counter() - start,
            generated_utterances=0,
            generated_seconds=0.0,
            skipped_utterances=len(complete),
            already_complete=True,
        )

    _remove_partials(out_dir)
    tasks = _tasks(plans, out_dir, options)
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
    for results in _run_tasks(tasks, jobs):
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
    _write_atomic(
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


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="make_synthetic_corpus.py",
        description="Generate an offline English speech corpus (LibriSpeech layout) "
        "with espeak-ng, flite and festival voices; dev/test use held-out voices.",
    )
    p.add_argument("out_dir", type=Path, help="output directory")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--hours", type=float, help="total audio in hours (default 2)")
    size.add_argument(
        "--minutes", type=float, help="total audio in minutes (toy sizes)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes"
    )
    p.add_argument("--sample-rate", type=int, default=16000, help="Hz (default 16000)")
    p.add_argument("--dev-voices", type=int, default=10, help="speakers in dev")
    p.add_argument("--test-voices", type=int, default=10, help="speakers in test")
    p.add_argument("--max-words", type=int, default=25, help="longest sentence, words")
    p.add_argument("--min-words", type=int, default=2, help="shortest sentence, words")
    p.add_argument(
        "--eval-fraction",
        type=float,
        default=0.1,
        help="share of the total for dev, and again for test (default 0.1)",
    )
    p.add_argument(
        "--utts-per-speaker",
        type=int,
        default=20,
        help="about how many sentences each training speaker says (default 20)",
    )
    p.add_argument(
        "--allow-missing-engines",
        action="store_true",
        help="skip an engine or voice that is not installed (with a warning)",
    )
    p.add_argument(
        "--wordnet-dir", type=Path, default=DEFAULT_WORDNET_DIR, help="WordNet data.*"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (errors: one line on stderr, status 1)."""
    args = build_parser().parse_args(argv)
    hours = 2.0 if args.hours is None and args.minutes is None else args.hours
    if args.minutes is not None:
        hours = args.minutes / 60
    try:
        summary = generate_corpus(
            args.out_dir,
            hours=hours,
            seed=args.seed,
            jobs=args.jobs,
            sample_rate=args.sample_rate,
            dev_voices=args.dev_voices,
            test_voices=args.test_voices,
            max_words=args.max_words,
            min_words=args.min_words,
            eval_fraction=args.eval_fraction,
            utts_per_speaker=args.utts_per_speaker,
            allow_missing_engines=args.allow_missing_engines,
            wordnet_dir=args.wordnet_dir,
        )
    except CorpusError as e:
        print(f"make_synthetic_corpus.py: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "make_synthetic_corpus.py: interrupted; the same command finishes the job",
            file=sys.stderr,
        )
        return 130
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
