"""Phone labels of the synthetic corpus (asr.synthetic.phones): every engine's phone
names map to asr.text.PHONES, with their times."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from asr.synthetic.errors import SynthesisError
from asr.synthetic.phones import (
    CMU_PHONES,
    ESPEAK_PHONES,
    format_phones,
    map_phone,
    segments_from_ends,
)
from asr.text import PHONES


@pytest.mark.parametrize(
    ("engine", "name", "label"),
    [
        ("espeak-ng", "a#", "ax"),
        ("espeak-ng", "dZ", "jh"),
        ("espeak-ng", "_:", "sil"),
        ("espeak-ng", ";", None),
        ("espeak-ng", "O~", "ao"),
        ("flite", "pau", "sil"),
        ("festival", "hh", "hh"),
        ("festival", "EL", "l"),
    ],
)
def test_engine_phones_map_to_arpabet(
    engine: str, name: str, label: str | None
) -> None:
    assert map_phone(engine, name) == label


def test_an_unknown_engine_phone_is_an_error_naming_it() -> None:
    with pytest.raises(SynthesisError, match="'Q9'"):
        map_phone("espeak-ng", "Q9")
    with pytest.raises(SynthesisError, match="'xx'"):
        map_phone("flite", "xx")


def test_every_mapping_lands_in_asr_s_phone_set() -> None:
    assert set(ESPEAK_PHONES.values()) - {None} <= set(PHONES)
    assert set(CMU_PHONES.values()) <= set(PHONES)


def test_segments_from_end_times() -> None:
    """Each phone starts where the one before ended; a marker that takes no time
    (espeak-ng's ";") extends the phone before it; empty phones are dropped."""
    names_ends = [("_:", 0.1), ("h", 0.2), (";", 0.25), ("@", 0.25), ("l", 0.4)]
    segments = segments_from_ends("espeak-ng", names_ends)
    assert segments == (("sil", 0.0, 0.1), ("hh", 0.1, 0.25), ("l", 0.25, 0.4))
    assert format_phones(segments).splitlines() == [
        "sil 0.0000 0.1000",
        "hh 0.1000 0.2500",
        "l 0.2500 0.4000",
    ]


def _espeak_phoneme_tables() -> dict[str, list[tuple[str, int]]]:
    """espeak-ng's compiled phoneme tables (phontab): table name -> its own
    phonemes as (mnemonic, type), read from the installed data."""
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True)
    data = Path(out.stdout.split("Data at:")[1].strip())
    raw = (data / "phontab").read_bytes()
    tables, pos = {}, 4
    for _ in range(raw[0]):
        n, name = raw[pos], raw[pos + 4 : pos + 36].split(b"\0")[0].decode()
        pos += 36
        phonemes = []
        for _ in range(n):  # PHONEME_TAB: 16 bytes; mnemonic first, type at 11
            mnemonic, kind = struct.unpack_from("<I7xB", raw, pos)
            pos += 16
            label = mnemonic.to_bytes(4, "little").split(b"\0")[0].decode("latin-1")
            phonemes.append((label, kind))  # an unused slot has no mnemonic
        tables[name] = phonemes
    return tables


@pytest.mark.skipif(not shutil.which("espeak-ng"), reason="needs espeak-ng")
def test_every_phoneme_of_espeak_ngs_english_tables_has_a_label() -> None:
    """An English word can be spoken with any phoneme of the en* tables; each must
    map to ARPAbet, or the utterance is lost (one in 47,000 at 30 h was, to the
    O~ of a loan word, before the tables were read)."""
    stress, virtual = 1, 9  # phoneme types that are never spoken
    tables = _espeak_phoneme_tables()
    english = [name for name in tables if name.startswith("en")]
    assert "en" in english and "en-us" in english
    unmapped = {
        (table, label)
        for table in english
        for label, kind in tables[table]
        if label and kind not in (stress, virtual) and label not in ESPEAK_PHONES
    }
    assert not unmapped
