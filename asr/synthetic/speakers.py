"""Synthetic speakers: a base voice (:mod:`asr.synthetic.voices`) plus fixed
parameters, drawn from the seed.

A *speaker* is a base voice plus a tempo factor (engine-native: espeak words per
minute, flite/festival duration stretch, HTS rate), a pitch factor (engine-native
where the engine has one: espeak ``-p``, flite ``int_f0_target_mean``, festival's
linear-regression F0 target; ``rms`` and the HTS voice have none), a resampling
*speed* factor (shifts pitch and formants together, like a different vocal tract
length: +-6 % for dev and test speakers, 0.84-1.12 for training speakers, whose
engine tempo is divided by the same factor so that their speaking rate is drawn as
for the others) and a fixed :class:`~asr.synthetic.channel.Channel`.

Training speakers cycle through the engines 3:1:1 (espeak-ng : flite : festival) and
through each engine's voices in a seeded order. Dev and test speakers use only their
split's held-out base voices: a share of them the held-out engine voice, the rest
held-out espeak-ng variants, half of those in the held-out accent and half in a
training accent.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from asr.synthetic.channel import Channel
from asr.synthetic.errors import CorpusError
from asr.synthetic.voices import (
    ESPEAK,
    ESPEAK_ACCENTS,
    ESPEAK_AMPLITUDE,
    ESPEAK_DEFAULT_WPM,
    ESPEAK_VARIANTS,
    FESTIVAL,
    FESTIVAL_DIPHONE_STRETCH,
    FESTIVAL_HTS,
    FESTIVAL_VOICES,
    FLITE,
    FLITE_VOICES,
    HELD_OUT,
)

__all__ = [
    "DEV_SPEAKER_BASE",
    "EVAL_SPEED",
    "Inventory",
    "MAX_EVAL_VOICES",
    "Speaker",
    "TEST_SPEAKER_BASE",
    "TRAIN_SPEAKER_BASE",
    "TRAIN_SPEED",
    "eval_speakers",
    "make_speaker",
    "random_channel",
    "train_speakers",
]

# Training speakers' engines, in a fixed rotation: 60 % espeak-ng (the most varied),
# 20 % flite, 20 % festival. A rotation rather than a draw, so even a toy corpus of
# five speakers has all three engines.
ENGINE_ROTATION = (ESPEAK, FLITE, ESPEAK, FESTIVAL, ESPEAK)
# In dev/test, this fraction of the speakers uses the held-out engine voice.
EVAL_ENGINE_FRACTION = 0.3
# Resampling factors (vocal tract length). Held-out speakers stay near their voice's
# own; training speakers range wider. At 12 h that helped the held-out voice with the
# fewest relatives in training (flite rms, 3 test speakers: CER 44.3% -> 40.7%) and
# left the others about where they were (held-out espeak-ng voices 22.2% -> 22.6%,
# dev's festival ked 47.8% -> 47.3%); README, "What limits accuracy here".
EVAL_SPEED = (0.94, 1.06)
TRAIN_SPEED = (0.84, 1.12)

# Speaker ids by split (chapter id = 10 x speaker id): LibriSpeech-like numbers
# that tell the split at a glance.
TRAIN_SPEAKER_BASE = 1000
DEV_SPEAKER_BASE = 9000
TEST_SPEAKER_BASE = 9500
MAX_EVAL_VOICES = 500


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
        """The engine-native settings this speaker is synthesized with: espeak-ng's
        voice, words per minute, pitch (0-99) and amplitude options; flite's and
        festival's duration stretch and F0 target (Hz), or the HTS voice's rate."""
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
        if self.voice == FESTIVAL_HTS:
            return {"hts -r": round(self.rate, 4)}
        base_f0 = FESTIVAL_VOICES[self.voice]
        assert base_f0 is not None, self.voice
        return {
            "Duration_Stretch": round(FESTIVAL_DIPHONE_STRETCH / self.rate, 4),
            "target_f0_mean": round(base_f0 * self.pitch, 1),
            "target_f0_std": round(14.0 * self.expressiveness, 1),
        }


def _uniform(
    rng: np.random.Generator, low: float, high: float, digits: int = 3
) -> float:
    """A uniform draw in [low, high), rounded to ``digits`` (readable in
    voices.json, and the same value after a JSON round trip)."""
    return round(float(rng.uniform(low, high)), digits)


def random_channel(rng: np.random.Generator) -> Channel:
    """A recording channel drawn from ``rng`` (the ranges: see
    :mod:`asr.synthetic.channel`). The order of the draws is part of the corpus:
    changing it changes every speaker."""
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


def make_speaker(
    speaker_id: int,
    split: str,
    engine: str,
    voice: str,
    variant: str,
    seed: int,
) -> Speaker:
    """Speaker ``speaker_id`` of ``split`` on a base voice, its parameters drawn
    from (``seed``, ``speaker_id``) alone: the same speaker whatever else the corpus
    holds."""
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
        channel=random_channel(rng),
        seed=int(rng.integers(2**31)),
    )
    if split == "train":
        # Drawn last, so that every other setting is drawn as for a held-out
        # speaker; the engine's tempo absorbs the change of speed.
        speed = _uniform(rng, *TRAIN_SPEED)
        rate = round(speaker.rate * speaker.speed / speed, 3)
        speaker = dataclasses.replace(speaker, speed=speed, rate=rate)
    return speaker


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
class Inventory:
    """The installed voices, and which of them training may use."""

    installed: dict[str, set[str]]  # as from voices.available_voices()
    train_accents: list[str]  # espeak-ng
    train_variants: list[str]  # espeak-ng, "" = the accent's default
    train_voices: dict[str, list[str]]  # flite and festival

    @classmethod
    def of(cls, installed: dict[str, set[str]]) -> Inventory:
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


def train_speakers(seed: int, inventory: Inventory) -> Iterator[Speaker]:
    """Training speakers, without end: engines in ENGINE_ROTATION, each engine's
    voices (and espeak-ng's accents and variants, independently) in a seeded
    round-robin."""
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
        yield make_speaker(
            TRAIN_SPEAKER_BASE + i, "train", engine, voice, variant, seed
        )


def eval_speakers(
    split: str, n: int, seed: int, inventory: Inventory
) -> Iterator[Speaker]:
    """Dev or test speakers: of every ``n``, EVAL_ENGINE_FRACTION with the split's
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
        yield make_speaker(base + i, split, engine, voice, variant, seed)
