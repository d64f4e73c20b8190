"""The engines and their voices: our inventory, which of it is held out for dev and
test, and which of it is installed.

A *base voice* is what an engine can say a sentence with before we touch its
parameters:

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

Held-out voices. Dev and test speakers are made only of base voices that no
training speaker uses, so the scores measure generalisation to new voices
(:data:`HELD_OUT`):

- dev:  espeak variants ``m3 f4 klatt4 Gene2 michel iven3 linda Andrea``, the accent
  ``en-gb-x-gbcwmd`` (West Midlands), and festival's ``ked_diphone``;
- test: espeak variants ``m6 f2 klatt2 robert edward2 Hugo steph3 Annie``, the accent
  ``en-us-nyc`` (New York City), and flite's ``rms``.

Each held-out item has a relative in training (``m3`` among ``m1``..``m8``, ``steph3``
next to ``steph``/``steph2``, West Midlands next to Lancaster and RP, NYC next to
General American, ``ked`` next to ``kal``, ``rms`` next to ``awb``/``slt``), so the set
is new but learnable.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from asr.synthetic.errors import EngineMissingError

__all__ = [
    "ENGINES",
    "ESPEAK",
    "ESPEAK_ACCENTS",
    "ESPEAK_VARIANTS",
    "FESTIVAL",
    "FESTIVAL_VOICES",
    "FLITE",
    "FLITE_VOICES",
    "HELD_OUT",
    "HeldOut",
    "available_voices",
    "engine_versions",
    "run_program",
    "wanted_voices",
]

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
ESPEAK_DEFAULT_WPM = 175  # espeak-ng's default speaking rate, words per minute
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
FESTIVAL_HTS = "cmu_us_slt_arctic_hts"  # the one voice with a rate but no F0 target


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


def run_program(
    cmd: Sequence[str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (``timeout`` in seconds) and capture its text output; the exit
    status is the caller's to judge."""
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
    """The voices ``engine`` lists as installed, in our inventory's spelling."""
    if engine == ESPEAK:
        voices: set[str] = set()
        for arg in ("--voices=en", "--voices=variant"):
            out = run_program([ESPEAK, arg]).stdout
            for line in out.splitlines()[1:]:
                cols = line.split()
                if len(cols) >= 5 and cols[1] != "variant":
                    voices.add(cols[1])
                elif len(cols) >= 5 and "!v/" in line:
                    voices.add("+" + line.split("!v/", 1)[1].split()[0])
        return voices
    if engine == FLITE:
        out = run_program([FLITE, "-lv"]).stdout
        return set(out.split(":", 1)[-1].split())
    out = run_program([FESTIVAL, "--batch", "(print (voice.list))"]).stdout
    return set(out.replace("(", " ").replace(")", " ").split())


def engine_versions() -> dict[str, str]:
    """Engine -> the last line of its ``--version`` output, for the installed ones
    (recorded in voices.json: another version may say a sentence differently)."""
    versions = {}
    for engine in ENGINES:
        if shutil.which(engine):
            out = run_program([engine, "--version"])
            text = (out.stdout + out.stderr).strip().splitlines()
            versions[engine] = text[-1].strip() if text else "?"
    return versions
