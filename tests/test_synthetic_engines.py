"""Synthesis for the synthetic corpus (asr.synthetic.engines): espeak-ng's library,
through the helper process, says each sentence as the espeak-ng program does."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.synthetic.engines import EspeakHelper


@pytest.mark.skipif(not shutil.which("espeak-ng"), reason="needs espeak-ng")
def test_espeak_phones_come_with_the_programs_own_samples(tmp_path: Path) -> None:
    """The library (for its phoneme events) says each sentence exactly as the
    espeak-ng program does, whatever it said before: klatt voices draw noise from
    rand() and the library keeps state between sentences, which a fresh fork per
    sentence avoids."""
    sentences = ["The ice broke the pipe.", "A hostile bid.", "Noxious ideas grow."]
    for voice in ("en-us+klatt2", "en-gb-scotland+f2", "en-us-nyc"):
        for text in sentences + sentences[:1]:
            speech = EspeakHelper.say(voice, 190, 40, 60, text)
            wav = tmp_path / "cli.wav"
            cmd = ["espeak-ng", "-v", voice, "-s", "190", "-p", "40", "-a", "60"]
            subprocess.run([*cmd, "-w", str(wav), text], check=True)
            cli, rate = sf.read(str(wav), dtype="int16")
            ours = np.round(speech.audio * 32768).astype(np.int16)
            assert rate == speech.sample_rate
            assert np.array_equal(ours, cli), (voice, text)  # sample for sample
            labels = [p[0] for p in speech.phones]
            assert len([x for x in labels if x != "sil"]) > len(text) // 3
