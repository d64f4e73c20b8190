"""The synthetic corpus generator end to end (asr.synthetic.corpus, ``asr data
synthetic``): layout, audio format, phones, held-out voices and texts, determinism,
resumption, the command. Each corpus here is a toy of ~20 s; every test that makes
one is slow."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from asr.synthetic.corpus import CorpusSummary, generate_corpus
from asr.synthetic.errors import CorpusError
from asr.synthetic.voices import ENGINES, HELD_OUT
from asr.synthetic.wordnet import DEFAULT_WORDNET_DIR

ROOT = Path(__file__).resolve().parent.parent

requires_tts = pytest.mark.skipif(
    any(shutil.which(e) is None for e in ENGINES)
    or not (DEFAULT_WORDNET_DIR / "data.noun").is_file(),
    reason="needs espeak-ng, flite, festival and wordnet (make setup installs them)",
)

# ~18 s in all: 5 training speakers (the engine rotation gives espeak-ng, flite,
# espeak-ng, festival, espeak-ng), 2 dev and 2 test speakers (one held-out engine
# voice and one held-out espeak-ng variant each).
TOY = dict(
    hours=18 / 3600,
    eval_fraction=0.15,
    dev_voices=2,
    test_voices=2,
    utts_per_speaker=1,
    max_words=12,
)
UTT_ID = re.compile(r"^(\d+)-(\d+)-(\d{4})$")
TRANSCRIPT = re.compile(r"^[A-Z']+( [A-Z']+)*$")


def _generate(out_dir: Path, **overrides: Any) -> CorpusSummary:
    kwargs = {**TOY, "seed": 0, "jobs": 1, "progress": lambda msg: None, **overrides}
    return generate_corpus(out_dir, **kwargs)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if any(shutil.which(e) is None for e in ENGINES):
        pytest.skip("text-to-speech engines not installed")
    out = tmp_path_factory.mktemp("corpus") / "a"
    _generate(out, jobs=2)
    return out


def _transcripts(split_dir: Path) -> dict[str, str]:
    """utt_id -> text over all ``*.trans.txt`` of a split."""
    out = {}
    for trans in sorted(split_dir.glob("*/*/*.trans.txt")):
        for line in trans.read_text(encoding="utf-8").splitlines():
            utt_id, text = line.split(" ", 1)
            assert utt_id not in out, f"{trans}: {utt_id} twice"
            out[utt_id] = text
    return out


def _flacs(root: Path) -> Iterator[Path]:
    return iter(sorted(root.rglob("*.flac")))


def _voices(corpus_dir: Path) -> list[dict[str, Any]]:
    return json.loads((corpus_dir / "voices.json").read_text())["speakers"]


@pytest.mark.slow
@requires_tts
def test_layout_and_transcripts_match_files(corpus: Path) -> None:
    for split in ("train", "dev", "test"):
        split_dir = corpus / split
        texts = _transcripts(split_dir)
        flacs = sorted(split_dir.glob("*/*/*.flac"))
        assert texts, f"{split} is empty"
        assert {f.stem for f in flacs} == set(texts), split
        for flac in flacs:
            spk, chapter, _ = UTT_ID.match(flac.stem).groups()
            assert flac.parent.name == chapter and flac.parent.parent.name == spk
            trans = flac.parent / f"{spk}-{chapter}.trans.txt"
            assert trans.is_file()
            assert TRANSCRIPT.match(texts[flac.stem]), texts[flac.stem]
    # Nothing else in the tree: no temporary or partial files.
    others = [
        p
        for p in corpus.rglob("*")
        if p.is_file() and p.suffix not in (".flac", ".phones", ".txt", ".json")
    ]
    assert others == []
    assert not list(corpus.rglob(".*"))


@pytest.mark.slow
@requires_tts
def test_every_recording_has_its_phones_aligned(corpus: Path) -> None:
    """Each FLAC has a ``.phones`` file from its engine: ARPAbet labels, in order,
    inside the recording, about as many as the transcript's letters, and on the
    speech (louder than the lead-in silence)."""
    from asr.data import read_phones
    from asr.text import PHONES

    texts = {}
    for split in ("train", "dev", "test"):
        texts.update(_transcripts(corpus / split))
    engines = {s["speaker"]: s["engine"] for s in _voices(corpus)}
    seen = set()
    for flac in _flacs(corpus):
        phones = read_phones(str(flac.with_suffix(".phones")))
        y, rate = sf.read(str(flac), dtype="float64")
        starts, ends = phones[:, 1].numpy(), phones[:, 2].numpy()
        assert (starts[1:] >= ends[:-1] - 1e-4).all(), flac  # in order, no overlap
        assert starts[0] >= 0.09 and ends[-1] <= len(y) / rate + 1e-4, flac
        spoken = [PHONES[int(i)] for i in phones[:, 0] if PHONES[int(i)] != "sil"]
        letters = len(texts[flac.stem].replace(" ", ""))
        assert 0.4 * letters <= len(spoken) <= 1.3 * letters, (flac, spoken)
        first = int(starts[0] * rate)
        speech = y[first : int(ends[-1] * rate)]
        silence = y[: max(first - 160, 160)]
        assert np.mean(speech**2) > 10 * np.mean(silence**2), flac
        seen.add(engines[flac.stem.split("-")[0]])
    assert seen == set(ENGINES)


@pytest.mark.slow
@requires_tts
def test_audio_is_16k_mono_flac_with_speech(corpus: Path) -> None:
    texts = {}
    for split in ("train", "dev", "test"):
        texts.update(_transcripts(corpus / split))
    for flac in _flacs(corpus):
        info = sf.info(str(flac))
        assert (info.format, info.subtype) == ("FLAC", "PCM_16"), flac
        assert (info.samplerate, info.channels) == (16000, 1), flac
        y, _ = sf.read(str(flac), dtype="float32")
        words = len(texts[flac.stem].split())
        seconds = len(y) / 16000
        # 0.1-1.2 s per word plus 0.2-0.7 s of silence: what was said fits the text.
        assert 0.1 * words + 0.2 <= seconds <= 1.2 * words + 1.5, (flac, seconds)
        frames = y[: len(y) // 320 * 320].reshape(-1, 320)  # 20 ms
        level = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
        assert level.max() > -35, flac  # speech, not silence
        assert level.max() - np.median(level[:5]) > 15, flac  # above the noise
        assert np.abs(y).max() < 0.99, flac  # no clipping


@pytest.mark.slow
@requires_tts
def test_voices_json_describes_every_speaker(corpus: Path) -> None:
    speakers = _voices(corpus)
    on_disk = {
        (p.parent.parent.parent.name, p.parent.parent.name) for p in _flacs(corpus)
    }
    assert {(s["split"], s["speaker"]) for s in speakers} == on_disk
    for s in speakers:
        directory = corpus / s["split"] / s["speaker"] / s["chapter"]
        flacs = sorted(directory.glob("*.flac"))
        assert s["utterances"] == len(flacs)
        seconds = sum(sf.info(str(f)).duration for f in flacs)
        assert s["seconds"] == pytest.approx(seconds, abs=0.01)
        for key in ("engine", "voice", "variant", "rate", "pitch", "speed"):
            assert key in s, key
        assert {"snr_db", "highpass_hz", "reverb_rt60_s"} <= set(s["channel"])
        assert 20 <= s["channel"]["snr_db"] <= 40
    # Many distinct speakers: no two share a configuration.
    configs = [json.dumps({**s, "speaker": 0, "chapter": 0}) for s in speakers]
    assert len(set(configs)) == len(configs)
    assert {s["engine"] for s in speakers if s["split"] == "train"} == set(ENGINES)


@pytest.mark.slow
@requires_tts
def test_splits_are_disjoint_by_voice(corpus: Path) -> None:
    speakers = _voices(corpus)
    by_split = {
        split: [s for s in speakers if s["split"] == split]
        for split in ("train", "dev", "test")
    }
    assert all(by_split.values()), {k: len(v) for k, v in by_split.items()}
    train_base = {s["base_voice"] for s in by_split["train"]}
    train_variants = {
        s["variant"] for s in by_split["train"] if s["engine"] == "espeak-ng"
    }
    train_engine_voices = {
        (s["engine"], s["voice"])
        for s in by_split["train"]
        if s["engine"] != "espeak-ng"
    }
    for split in ("dev", "test"):
        for s in by_split[split]:
            assert s["base_voice"] not in train_base, s
            if s["engine"] == "espeak-ng":
                assert s["variant"] and s["variant"] not in train_variants, s
            else:
                assert (s["engine"], s["voice"]) not in train_engine_voices, s
    dev = {s["base_voice"] for s in by_split["dev"]}
    assert dev.isdisjoint(s["base_voice"] for s in by_split["test"])
    # The held-out inventory itself never reaches a training speaker.
    for held in HELD_OUT.values():
        assert held.espeak_accent not in {
            s["voice"] for s in by_split["train"] if s["engine"] == "espeak-ng"
        }
        assert not train_variants & set(held.espeak_variants)
        assert (held.engine, held.voice) not in train_engine_voices


@pytest.mark.slow
@requires_tts
def test_splits_are_disjoint_by_text(corpus: Path) -> None:
    texts = {
        s: set(_transcripts(corpus / s).values()) for s in ("train", "dev", "test")
    }
    assert texts["train"].isdisjoint(texts["dev"])
    assert texts["train"].isdisjoint(texts["test"])
    assert texts["dev"].isdisjoint(texts["test"])


@pytest.mark.slow
@requires_tts
def test_same_seed_same_corpus(corpus: Path, tmp_path: Path) -> None:
    """Generated again (one worker instead of two): the same texts and samples."""
    again = tmp_path / "b"
    _generate(again, jobs=1)
    for split in ("train", "dev", "test"):
        assert _transcripts(corpus / split) == _transcripts(again / split)
    a = [p.relative_to(corpus) for p in _flacs(corpus)]
    b = [p.relative_to(again) for p in _flacs(again)]
    assert a == b and a
    for rel in a:
        ya, _ = sf.read(str(corpus / rel), dtype="int16")
        yb, _ = sf.read(str(again / rel), dtype="int16")
        assert np.array_equal(ya, yb), rel
    assert _voices(corpus) == _voices(again)
    # Another seed: other texts and other speakers.
    other = tmp_path / "c"
    _generate(other, seed=1)
    assert _transcripts(other / "train") != _transcripts(corpus / "train")
    assert _voices(other) != _voices(corpus)


@pytest.mark.slow
@requires_tts
def test_resume_and_complete_detection(corpus: Path, tmp_path: Path) -> None:
    work = tmp_path / "copy"
    shutil.copytree(corpus, work)
    victim = next(_flacs(work / "dev"))
    original, _ = sf.read(str(victim), dtype="int16")
    victim.unlink()
    # What an interrupted run leaves behind: a partial file and no transcript.
    partial = victim.with_name(f".{victim.name}.12345.partial")
    partial.write_bytes(b"half a flac")
    trans = next(victim.parent.glob("*.trans.txt"))
    trans.unlink()
    summary = _generate(work)
    assert not summary.already_complete
    assert summary.generated_utterances == 1
    assert summary.skipped_utterances == sum(1 for _ in _flacs(corpus)) - 1
    again, _ = sf.read(str(victim), dtype="int16")
    assert np.array_equal(original, again)
    assert not partial.exists() and trans.is_file()
    assert _transcripts(work / "dev") == _transcripts(corpus / "dev")
    summary = _generate(work)
    assert summary.already_complete and summary.generated_utterances == 0
    assert summary.splits["train"].utterances > 0
    # Only voices.json's config decides, not the program it names: the same files
    # made with the same options by another program are complete.
    voices = work / "voices.json"
    voices.write_text(voices.read_text().replace('"asr data synthetic"', '"other"', 1))
    assert _generate(work).already_complete
    # Other options into the same directory: refused, naming the difference.
    with pytest.raises(CorpusError, match=r"config\.json.*seed: 0 there, 7 now"):
        _generate(work, seed=7)


@pytest.mark.slow
@requires_tts
def test_cli_runs(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "asr", "data", "synthetic", str(out)]
    cmd += ["--minutes", "0.2", "--seed", "3", "--jobs", "2"]
    cmd += ["--dev-voices", "1", "--test-voices", "1"]
    cmd += ["--utts-per-speaker", "2", "--eval-fraction", "0.2"]
    # cwd: this checkout's asr, whatever the environment has installed.
    run = dict(capture_output=True, text=True, timeout=120, cwd=ROOT)
    proc = subprocess.run(cmd, **run)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^train\s+\d+\s+\d+", proc.stdout, re.M), proc.stdout
    assert "x real time" in proc.stdout
    for split in ("train", "dev", "test"):
        assert _transcripts(out / split)
    assert json.loads((out / "config.json").read_text())["seed"] == 3
    assert json.loads((out / "voices.json").read_text())["generator"] == (
        "asr data synthetic"
    )
    # A bad option: one line on stderr and a non-zero status.
    proc = subprocess.run([*cmd[:6], "--hours", "-1"], **run)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "hours" in proc.stderr


@pytest.mark.slow
@requires_tts
def test_allow_missing_engines_skips_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bin_dir = tmp_path / "bin"  # a PATH with the engines but flite
    bin_dir.mkdir()
    for engine in ("espeak-ng", "festival"):
        (bin_dir / engine).symlink_to(shutil.which(engine))
    monkeypatch.setenv("PATH", str(bin_dir))
    out = tmp_path / "out"
    _generate(out, allow_missing_engines=True)
    assert (
        "warning: text-to-speech program 'flite' not found" in capsys.readouterr().err
    )
    speakers = _voices(out)
    assert speakers and "flite" not in {s["engine"] for s in speakers}
    # The test split's held-out engine voice (flite rms) is gone: espeak-ng only.
    assert {s["engine"] for s in speakers if s["split"] == "test"} == {"espeak-ng"}
    config = json.loads((out / "config.json").read_text())
    assert config["engines"] == ["espeak-ng", "festival"]
    assert "flite:rms" in config["missing_voices"]
