"""Phone labels: every engine's phone names mapped to one ARPAbet set.

Every engine reports what it spoke and when: espeak-ng's library sends phoneme
events (the espeak-ng program cannot), flite prints its segments with end times
(``-psdur``), festival's utterance structure holds them. They are mapped to
:data:`asr.text.PHONES` (espeak-ng's mnemonics through :data:`ESPEAK_PHONES`, the
CMU sets of flite and festival through :data:`CMU_PHONES`), carried through the
trimming, speed factor and padding into the recording's time
(:func:`asr.synthetic.channel.render_speech`), and written one ``label start end``
line per phone (seconds) beside each FLAC (:func:`format_phones`). ``asr manifest``
lists them as ``phones_filepath``; training can use them as frame-level targets
(``ASRTask.phone_loss_weight``), and they allow per-phone diagnostics of a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from asr.synthetic.errors import SynthesisError
from asr.synthetic.voices import ESPEAK
from asr.text import PHONES

__all__ = [
    "CMU_PHONES",
    "ESPEAK_PHONES",
    "Segment",
    "Speech",
    "format_phones",
    "map_phone",
    "segments_from_ends",
]

# espeak-ng's English phoneme mnemonics (phsource/ph_english*) -> ARPAbet. Rhotic
# vowels (A@, O@, e@, i@, U@) keep their vowel; syllabic consonants their consonant.
ESPEAK_PHONES: dict[str, str | None] = {
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
CMU_PHONES: dict[str, str] = {
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
    """One engine phone name -> an ARPAbet label of :data:`asr.text.PHONES`, or None
    for a marker that takes no time. Raises SynthesisError for a name we do not
    know."""
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


def segments_from_ends(
    engine: str, names_ends: Sequence[tuple[str, float]]
) -> tuple[Segment, ...]:
    """Phones given by their names and end times in seconds -> labelled segments,
    each starting where the one before ended; a marker that maps to no label extends
    the phone before it."""
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


def format_phones(phones: Sequence[Segment]) -> str:
    """``UTT.phones``: one ``label start end`` line per phone (seconds)."""
    return "".join(f"{label} {a:.4f} {b:.4f}\n" for label, a, b in phones)
