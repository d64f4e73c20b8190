"""The offline text-to-speech corpus generator (tools/make_synthetic_corpus.py): layout,
audio format, held-out voices and texts, determinism, resumption, the CLI and the
errors for missing engines. Each corpus here is a toy of ~20 s."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "make_synthetic_corpus.py"


def _load_tool() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("make_synthetic_corpus", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and workers look it up by name
    spec.loader.exec_module(module)
    return module


msc = _load_tool()

ENGINES = ("espeak-ng", "flite", "festival")
requires_tts = pytest.mark.skipif(
    any(shutil.which(e) is None for e in ENGINES)
    or not (msc.DEFAULT_WORDNET_DIR / "data.noun").is_file(),
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


def _generate(out_dir: Path, **overrides: Any) -> msc.CorpusSummary:
    kwargs = {**TOY, "seed": 0, "jobs": 1, "progress": lambda msg: None, **overrides}
    return msc.generate_corpus(out_dir, **kwargs)


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


# ---------------------------------------------------------------------- text


@pytest.mark.parametrize(
    ("raw", "transcript"),
    [
        ("don't stop the music", "DON'T STOP THE MUSIC"),
        ("a well-known author", "A WELL KNOWN AUTHOR"),
        ("the boys' toys were broken", "THE BOYS' TOYS WERE BROKEN"),
        ("I hope so; she left early!", "I HOPE SO SHE LEFT EARLY"),
        ("he ran  --  fast", "HE RAN FAST"),
        ("Mr. Smith arrived late", None),  # abbreviation
        ("the U.S. army", None),  # initials
        ("NATO forces landed", None),  # acronym: the engines spell it
        ("Henry VIII was king", None),  # Roman numeral
        ("I saw 3 cats", None),  # digit
        ("`It's funny,' he said", None),  # nested quotation
        ("hmm that is odd", None),  # no vowel: spelled out
        ("vitamin C deficiency", None),  # a lone letter
        ("books etc were sold", None),  # expanded to "et cetera"
        ("wonderful", None),  # one word
        ("café au lait", None),  # not ASCII
        (" ".join(["word"] * 26), None),  # too long
    ],
)
def test_clean_sentence(raw: str, transcript: str | None) -> None:
    sentence = msc.clean_sentence(raw, min_words=2, max_words=25)
    assert (sentence and sentence.transcript) == transcript
    if sentence is not None:
        # The engine reads the same words, with punctuation kept for prosody.
        assert re.sub(r"[^A-Za-z' ]", " ", sentence.prompt).upper().split() == (
            transcript.split()
        )
        assert sentence.prompt[-1] in ".!?"


@requires_tts
def test_wordnet_sentences_are_clean_and_unique() -> None:
    sentences = msc.load_sentences(msc.DEFAULT_WORDNET_DIR, 2, 25)
    assert len(sentences) > 30000
    transcripts = [s.transcript for s in sentences]
    assert len(set(transcripts)) == len(transcripts)
    for t in transcripts:
        assert TRANSCRIPT.match(t), t
        assert 2 <= len(t.split()) <= 25, t


def test_missing_wordnet_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(msc.CorpusError, match=r"data\.noun"):
        msc.load_sentences(tmp_path, 2, 25)


# -------------------------------------------------------------------- channel


def test_render_sets_level_and_snr() -> None:
    """The speech comes out at the speaker's level, the noise at level - SNR."""
    channel = msc.Channel(
        level_dbfs=-24.0,
        highpass_hz=50.0,
        lowpass_hz=None,
        eq_hz=1000.0,
        eq_gain_db=0.0,
        eq_q=1.0,
        reverb_rt60_s=None,
        reverb_drr_db=10.0,
        reverb_predelay_s=0.01,
        snr_db=25.0,
        noise_color="white",
        seed=0,
    )
    speaker = msc.Speaker(
        speaker_id=1000,
        chapter_id=10000,
        split="train",
        engine="espeak-ng",
        voice="en-us",
        variant="",
        rate=1.0,
        pitch=1.0,
        expressiveness=1.0,
        speed=1.0,
        channel=channel,
        seed=0,
    )
    engine_rate = 22050
    t = np.arange(engine_rate) / engine_rate  # one second of a vowel-like tone
    tone = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 20))
    audio = np.concatenate([np.zeros(engine_rate // 2), 0.3 * tone, np.zeros(4000)])
    speech = msc.Speech(audio, engine_rate, ())

    def render(seed: int) -> np.ndarray:
        return msc.render_speech(speech, speaker, 16000, np.random.default_rng(seed))[0]

    y = render(0)
    assert y.dtype == np.float32 and np.abs(y).max() <= 0.98

    def db(x: np.ndarray) -> float:
        return 10 * math.log10(float(np.mean(x.astype(np.float64) ** 2)))

    # The engine's leading 0.5 s of silence is trimmed and 0.10-0.35 s padded.
    assert 1.2 <= len(y) / 16000 <= 1.75
    assert db(y[:1500]) == pytest.approx(-24.0 - 25.0, abs=1.5)  # padding: noise
    middle = y[len(y) // 2 - 4000 : len(y) // 2 + 4000]
    assert db(middle) == pytest.approx(-24.0, abs=1.0)
    # Same generator seed, same samples; another seed, other noise.
    again, other = render(0), render(1)
    assert np.array_equal(y, again)
    assert not np.array_equal(y[:1000], other[:1000])


def test_render_speech_maps_phones_to_the_recording() -> None:
    """Phone times follow the trim, the lead-in silence and the speed factor."""
    speaker = msc._make_speaker(1000, "train", "espeak-ng", "en-us", "", 0)
    dry = dataclasses.replace(
        speaker.channel, lowpass_hz=None, reverb_rt60_s=None, snr_db=40.0
    )
    speaker = dataclasses.replace(speaker, speed=1.25, channel=dry)
    rate = 22050
    t = np.arange(rate) / rate
    tone = 0.3 * np.sin(2 * np.pi * 200 * t)
    # 0.5 s of silence (trimmed), 0.5 s "aa", 0.5 s "s", 0.3 s of silence.
    audio = np.concatenate([np.zeros(rate // 2), tone, np.zeros(int(0.3 * rate))])
    phones = (("sil", 0.0, 0.5), ("aa", 0.5, 1.0), ("s", 1.0, 1.5), ("sil", 1.5, 1.8))
    speech = msc.Speech(audio, rate, phones)
    y, mapped = msc.render_speech(speech, speaker, 16000, np.random.default_rng(0))
    labels = [p[0] for p in mapped]
    assert labels == ["aa", "s"]  # the silences were trimmed away
    lead = mapped[0][1]
    assert 0.10 <= lead <= 0.35  # the lead-in padding
    assert mapped[0][2] - lead == pytest.approx(0.5 / 1.25, abs=1e-3)
    assert mapped[1][1] == mapped[0][2]
    assert mapped[1][2] - mapped[1][1] == pytest.approx(0.5 / 1.25, abs=1e-3)
    assert mapped[1][2] <= len(y) / 16000

    # The tone is where the phones say it is.
    def level(a: float, b: float) -> float:
        x = y[int(a * 16000) : int(b * 16000)].astype(np.float64)
        return 10 * math.log10(float(np.mean(x**2)))

    assert level(lead + 0.05, mapped[1][2] - 0.05) > level(0.0, lead - 0.02) + 20


@requires_tts
def test_espeak_phones_come_with_the_programs_own_samples(tmp_path: Path) -> None:
    """The library (for its phoneme events) says each sentence exactly as the
    espeak-ng program does, whatever it said before: klatt voices draw noise from
    rand() and the library keeps state between sentences, which a fresh fork per
    sentence avoids."""
    sentences = ["The ice broke the pipe.", "A hostile bid.", "Noxious ideas grow."]
    for voice in ("en-us+klatt2", "en-gb-scotland+f2", "en-us-nyc"):
        for text in sentences + sentences[:1]:
            speech = msc._EspeakHelper.say(voice, 190, 40, 60, text)
            wav = tmp_path / "cli.wav"
            cmd = ["espeak-ng", "-v", voice, "-s", "190", "-p", "40", "-a", "60"]
            subprocess.run([*cmd, "-w", str(wav), text], check=True)
            cli, rate = sf.read(str(wav), dtype="int16")
            ours = np.round(speech.audio * 32768).astype(np.int16)
            assert rate == speech.sample_rate
            assert np.array_equal(ours, cli), (voice, text)  # sample for sample
            labels = [p[0] for p in speech.phones]
            assert len([x for x in labels if x != "sil"]) > len(text) // 3


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
    assert msc.map_phone(engine, name) == label


def test_an_unknown_engine_phone_is_an_error_naming_it() -> None:
    with pytest.raises(msc.SynthesisError, match="'Q9'"):
        msc.map_phone("espeak-ng", "Q9")
    with pytest.raises(msc.SynthesisError, match="'xx'"):
        msc.map_phone("flite", "xx")


def test_the_phone_set_is_asr_s() -> None:
    from asr.text import PHONES

    assert tuple(msc.PHONES) == PHONES
    assert set(msc.ESPEAK_PHONES.values()) - {None} <= set(PHONES)
    assert set(msc.CMU_PHONES.values()) <= set(PHONES)


def _espeak_phoneme_tables() -> dict[str, list[tuple[str, int]]]:
    """espeak-ng's compiled phoneme tables (phontab): table name -> its own
    phonemes as (mnemonic, type), read from the installed data."""
    import struct

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
        if label and kind not in (stress, virtual) and label not in msc.ESPEAK_PHONES
    }
    assert not unmapped


def test_room_impulse_response_drr() -> None:
    channel = dataclasses.replace(
        msc._random_channel(np.random.default_rng(0)),
        reverb_rt60_s=0.3,
        reverb_drr_db=8.0,
    )
    ir = msc.room_impulse_response(channel, 16000)
    assert ir is not None and ir[0] == 1.0
    tail_energy = float(np.sum(ir[1:] ** 2))
    assert 10 * math.log10(1.0 / tail_energy) == pytest.approx(8.0, abs=0.1)
    dry = dataclasses.replace(channel, reverb_rt60_s=None)
    assert msc.room_impulse_response(dry, 16000) is None


# -------------------------------------------------------------------- corpus


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
    for held in msc.HELD_OUT.values():
        assert held.espeak_accent not in {
            s["voice"] for s in by_split["train"] if s["engine"] == "espeak-ng"
        }
        assert not train_variants & set(held.espeak_variants)
        assert (held.engine, held.voice) not in train_engine_voices
    # And the plan for a full-size corpus keeps to it too (no audio made).
    voices = msc.available_voices()
    options = msc.Options(
        hours=2.0,
        seed=0,
        sample_rate=16000,
        dev_voices=10,
        test_voices=10,
        min_words=2,
        max_words=25,
        eval_fraction=0.1,
        utts_per_speaker=20,
        engines=ENGINES,
    )
    plans = msc.plan_corpus(msc.load_sentences(), options, voices)
    train = {p.speaker.base_voice for p in plans if p.speaker.split == "train"}
    assert len(train) > 60, len(train)
    for split in ("dev", "test"):
        held = [p.speaker for p in plans if p.speaker.split == split]
        assert len(held) == 10 and train.isdisjoint(s.base_voice for s in held)
        # 3 of 10 use the held-out engine voice, 7 distinct espeak-ng voices.
        espeak = {s.base_voice for s in held if s.engine == "espeak-ng"}
        assert len(espeak) == 7, espeak


@requires_tts
def test_splits_are_disjoint_by_text(corpus: Path) -> None:
    texts = {
        s: set(_transcripts(corpus / s).values()) for s in ("train", "dev", "test")
    }
    assert texts["train"].isdisjoint(texts["dev"])
    assert texts["train"].isdisjoint(texts["test"])
    assert texts["dev"].isdisjoint(texts["test"])


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
    # Other options into the same directory: refused, naming the difference.
    with pytest.raises(msc.CorpusError, match=r"config\.json.*seed: 0 there, 7 now"):
        _generate(work, seed=7)


@requires_tts
def test_cli_runs(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [sys.executable, str(SCRIPT), str(out), "--minutes", "0.2", "--seed", "3"]
    cmd += ["--jobs", "2", "--dev-voices", "1", "--test-voices", "1"]
    cmd += ["--utts-per-speaker", "2", "--eval-fraction", "0.2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^train\s+\d+\s+\d+", proc.stdout, re.M), proc.stdout
    assert "x real time" in proc.stdout
    for split in ("train", "dev", "test"):
        assert _transcripts(out / split)
    assert json.loads((out / "config.json").read_text())["seed"] == 3
    # A bad option: one line on stderr and a non-zero status.
    proc = subprocess.run(
        [*cmd[:3], "--hours", "-1"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "hours" in proc.stderr


def _path_without(tmp_path: Path, missing: str) -> str:
    """A PATH with symlinks to the engines except ``missing``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for engine in ENGINES:
        found = shutil.which(engine)
        if engine != missing and found:
            (bin_dir / engine).symlink_to(found)
    return str(bin_dir)


@pytest.mark.parametrize("missing", ENGINES)
def test_missing_engine_is_named(
    missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", _path_without(tmp_path, missing))
    with pytest.raises(msc.EngineMissingError, match=rf"'{missing}' not found"):
        _generate(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_missing_engine_exits_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": _path_without(tmp_path, "espeak-ng")}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "out"), "--minutes", "0.1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "espeak-ng" in lines[0] and "apt-get" in lines[0]
    assert "--allow-missing-engines" in lines[0]


@requires_tts
def test_allow_missing_engines_skips_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATH", _path_without(tmp_path, "flite"))
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


def test_training_speakers_range_wider_in_vocal_tract_at_the_same_tempo() -> None:
    """Training speakers' resampling factor spans 0.84-1.12, held-out speakers'
    +-6 %; the engine tempo absorbs it, so the speaking rate (engine tempo x speed)
    is drawn alike for all. Everything else is drawn as for a held-out speaker."""
    ids = range(400)
    speakers = {
        split: [msc._make_speaker(i, split, msc.FLITE, "awb", "", 0) for i in ids]
        for split in ("train", "test")
    }
    train = [s.speed for s in speakers["train"]]
    held = [s.speed for s in speakers["test"]]
    assert msc.TRAIN_SPEED[0] <= min(train) < 0.86 and 1.10 < max(train) <= 1.12
    assert 0.94 <= min(held) and max(held) <= 1.06
    for t, h in zip(speakers["train"], speakers["test"], strict=True):
        assert t.channel == h.channel and t.pitch == h.pitch  # same draws...
        assert t.rate * t.speed == pytest.approx(h.rate * h.speed, rel=2e-3)  # tempo
