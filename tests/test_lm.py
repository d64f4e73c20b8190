"""KenLM language models: building with the real lmplz/build_binary, loading, beam
search with the LM on hand-built posteriors and on real audio, and weight tuning."""

from __future__ import annotations

import json
import logging
import random
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import SENTENCES
from test_decoding import FRAME, LABELS, posteriors, spell

from asr import lm as lm_module
from asr.cli import main
from asr.decoding import (
    BeamSearchDecoder,
    GreedyDecoder,
    build_decoder,
    load_decoder_settings,
    resolve_decoder_settings,
)
from asr.lm import (
    LMError,
    build_lm,
    load_lm,
    read_arpa_unigrams,
    unigrams_path,
)
from asr.tune import LogProbSet, tune_lm_weights

NOUNS = "dog fox bird house tree car boat shell rain hat cup door".split()
ADJS = "quick brown red small old happy lazy green".split()
VERBS = ["jumps over", "looked at", "ran to", "sleeps by", "walks past", "sat near"]


def corpus_lines(n: int = 300) -> list[str]:
    """The conftest sentences plus ``n`` generated ones, some in raw form (capitals,
    punctuation) to exercise normalization. "on the hat" never occurs, so the LM
    prefers "sat on the mat"."""
    rng = random.Random(0)
    lines = [s.capitalize() + "." for s in SENTENCES] * 3
    while len(lines) < 3 * len(SENTENCES) + n:
        adj, noun, verb, obj = (rng.choice(x) for x in (ADJS, NOUNS, VERBS, NOUNS))
        lines.append(f"The {adj} {noun} {verb} the {obj}!")
    return lines


@pytest.fixture(scope="module")
def lms(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lm")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(corpus_lines()) + "\n")
    out = {"corpus": corpus}
    out["bin"] = build_lm(corpus, root / "bin" / "lm.bin", order=3).path
    out["arpa"] = build_lm(corpus, root / "arpa" / "lm.arpa", order=3).path
    return out


# ------------------------------------------------------------------------- build


def test_binary_model_and_unigram_list(lms):
    path = lms["bin"]
    assert path.read_bytes().startswith(b"mmap lm ")
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "lm.bin",
        "lm.bin.unigrams.txt",
    ]  # no temporary files left behind
    words = unigrams_path(path).read_text().split("\n")[:-1]
    expected = {w for s in corpus_lines() for w in s.lower().strip(".!").split()}
    assert set(words) == expected and len(words) == len(expected)
    loaded = load_lm(path)
    assert loaded.path == path.resolve() and set(loaded.unigrams) == expected

    import kenlm

    model = kenlm.Model(str(path))
    assert model.order == 3
    assert model.score("the cat sat on the mat") > model.score("mat the on sat cat the")


def test_arpa_model_and_its_unigrams(lms):
    text = lms["arpa"].read_text()
    assert text.startswith("\n\\data\\") or text.startswith("\\data\\")
    assert "ngram 3=" in text and "\\3-grams:" in text
    words = read_arpa_unigrams(lms["arpa"])
    assert "<s>" not in words and "<unk>" not in words
    assert set(words) == set(load_lm(lms["bin"]).unigrams)
    # Without the unigram file the ARPA's own \1-grams section is used.
    bare = lms["arpa"].parent / "bare.arpa"
    shutil.copy(lms["arpa"], bare)
    assert load_lm(bare).unigrams == tuple(words)


def test_corpus_normalization_and_unspellable_lines(tmp_path, caplog):
    corpus = tmp_path / "raw.txt"
    raw = [
        "Hello, World!",
        "The CAFÉ is open -- isn't it?",
        "",
        "50% off",
        "R&D costs",
        "   ",
        *corpus_lines(40),
    ]
    corpus.write_text("\n".join(raw) + "\n")
    with caplog.at_level(logging.WARNING):
        result = build_lm(corpus, tmp_path / "lm.arpa", order=2)
    stats = result.stats
    assert (stats.lines, stats.empty, stats.skipped) == (len(raw), 2, 2)
    assert stats.kept == len(raw) - 4
    assert stats.unspellable == Counter({"5": 1, "0": 1, "%": 1, "&": 1})
    assert [n for n, _ in stats.examples] == [4, 5]
    assert "raw.txt" in caplog.text and "'%' (1)" in caplog.text
    words = set(load_lm(tmp_path / "lm.arpa").unigrams)
    assert {"hello", "world", "cafe", "isn't", "open"} <= words
    assert not any(set(w) & set("50%&") for w in words)


def test_missing_corpus_and_empty_corpus(tmp_path):
    with pytest.raises(LMError, match=r"nothere\.txt: no such corpus file"):
        build_lm(tmp_path / "nothere.txt", tmp_path / "lm.bin")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n1999\n")
    with pytest.raises(LMError, match=r"empty\.txt: no usable text.*'9'"):
        build_lm(empty, tmp_path / "lm.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt"]


def test_missing_lmplz_is_named(tmp_path, monkeypatch):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat\n")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "nobin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LMError, match=r"'lmplz'.*make setup"):
        build_lm(corpus, tmp_path / "lm.bin")


def test_lmplz_failure_reports_its_stderr(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("the cat sat on the mat\na quick brown fox\n")
    with pytest.raises(LMError) as err:
        build_lm(corpus, tmp_path / "out" / "lm.bin", discount_fallback=False)
    message = str(err.value)
    assert "tiny.txt" in message and "lmplz failed" in message
    assert "discount" in message  # the tail of lmplz's own explanation
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_discount_failure_is_retried_with_fallback(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(lm_module, "SMALL_CORPUS_BYTES", 0)  # not "small": no -f
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("the cat sat on the mat\na quick brown fox\n")
    with caplog.at_level(logging.WARNING):
        result = build_lm(corpus, tmp_path / "lm.bin", order=3)
    assert result.discount_fallback
    assert "retrying with --discount_fallback" in caplog.text


def test_load_errors(tmp_path, lms):
    with pytest.raises(LMError, match="no such language model"):
        load_lm(tmp_path / "none.bin")
    orphan = tmp_path / "orphan.bin"
    shutil.copy(lms["bin"], orphan)  # a binary without its unigram list
    with pytest.raises(LMError, match=r"orphan\.bin\.unigrams\.txt"):
        load_lm(orphan)
    with pytest.raises(LMError, match="unigrams.txt"):
        BeamSearchDecoder(LABELS, lm=orphan)
    junk = tmp_path / "junk.bin"
    junk.write_text("hello\n")
    with pytest.raises(LMError, match="neither a KenLM binary nor an ARPA"):
        load_lm(junk)


def test_cli_lm_build(tmp_path, lms, capsys):
    out = tmp_path / "cli.bin"
    assert (
        main(["lm", "build", str(lms["corpus"]), "-o", str(out), "--order", "2"]) == 0
    )
    assert "2-gram" in capsys.readouterr().out
    assert out.is_file() and unigrams_path(out).is_file()
    assert main(["lm", "build", str(tmp_path / "no.txt"), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"asr lm: error: {tmp_path / 'no.txt'}: no such corpus file"]


# ------------------------------------------------------------- beam search + LM


def misspelled() -> np.ndarray:
    """Greedy reads "the cst sat on the mat": the 'a' of "cat" lost to an 's'."""
    frames = spell("the cat sat on the mat")
    frames[frames.index("a")] = {"s": 0.5, "a": 0.45}
    return posteriors(frames)


def hat_or_mat() -> np.ndarray:
    """The acoustics slightly prefer "hat" to "mat"; only the LM knows "on the mat"."""
    frames = spell("the cat sat on the mat")
    frames[frames.index("m")] = {"h": 0.5, "m": 0.45}
    return posteriors(frames)


def test_lm_fixes_a_misspelling(lms):
    lp = misspelled()
    assert GreedyDecoder(LABELS).decode(lp, FRAME).text == "the cst sat on the mat"
    assert BeamSearchDecoder(LABELS).decode(lp, FRAME).text == "the cst sat on the mat"
    for path in (lms["bin"], lms["arpa"]):
        hyp = BeamSearchDecoder(LABELS, lm=path).decode(lp, FRAME)
        assert hyp.text == "the cat sat on the mat"
        cat = hyp.words[1]
        assert cat.text == "cat"
        # The corrected word is less certain than the clean ones.
        assert cat.confidence == pytest.approx((0.98 + 0.45 + 0.98) / 3, abs=1e-3)
        assert all(w.confidence > 0.97 for w in hyp.words if w.text != "cat")


def test_lm_weight_decides_between_known_words(lms):
    lp = hat_or_mat()
    dec = BeamSearchDecoder(LABELS, lm=lms["bin"], alpha=0.0, beta=0.0)
    assert dec.decode(lp, FRAME).text == "the cat sat on the hat"
    dec.set_weights(1.0, 0.0)
    assert dec.decode(lp, FRAME).text == "the cat sat on the mat"
    assert dec.settings()["alpha"] == 1.0


def test_word_times_with_lm_match_greedy_on_clean_peaks(lms):
    lp = posteriors(spell("a quick brown fox jumps", hold=2))
    greedy = GreedyDecoder(LABELS).decode(lp, FRAME)
    beam = BeamSearchDecoder(LABELS, lm=lms["bin"]).decode(lp, FRAME)
    assert beam.text == greedy.text == "a quick brown fox jumps"
    assert beam.words == greedy.words


def test_hotwords_with_lm(lms):
    frames = spell("the cat sat on the mat")
    frames[frames.index("m")] = {"m": 0.5, "z": 0.45}  # "zat" is no word
    lp = posteriors(frames)
    plain = BeamSearchDecoder(LABELS, lm=lms["bin"])
    assert plain.decode(lp, FRAME).text == "the cat sat on the mat"
    # An out-of-vocabulary hot word must outweigh the LM's unknown-word penalty
    # (alpha x unk_score_offset x ln 10 = -11.5) and its lost n-gram context.
    hot = BeamSearchDecoder(LABELS, lm=lms["bin"], hotwords=["zat"], hotword_weight=25)
    assert hot.decode(lp, FRAME).text == "the cat sat on the zat"
    weak = BeamSearchDecoder(LABELS, lm=lms["bin"], hotwords=["zat"], hotword_weight=1)
    assert weak.decode(lp, FRAME).text == "the cat sat on the mat"


def test_decode_batch_pool_with_lm_equals_serial(lms):
    lps = [misspelled(), hat_or_mat(), posteriors(spell("good morning to you"))] * 2
    dec = BeamSearchDecoder(LABELS, lm=lms["bin"], alpha=1.0, beta=0.5, workers=2)
    serial = [dec.decode(lp, FRAME) for lp in lps]
    assert dec.decode_batch(lps, FRAME) == serial
    # Workers are forked per call: they see weights changed after construction.
    dec.set_weights(0.0, 0.0)
    assert dec.decode_batch(lps, FRAME)[1].text == "the cat sat on the hat"


def test_settings_with_lm(lms):
    dec = build_decoder(LABELS, lm=lms["bin"], alpha=0.8, beam_width=20)
    assert isinstance(dec, BeamSearchDecoder)
    s = dec.settings()
    assert json.loads(json.dumps(s)) == s
    assert s["lm"] == str(lms["bin"]) and s["unigrams"] == len(
        load_lm(lms["bin"]).unigrams
    )
    assert (s["alpha"], s["beta"], s["beam_width"]) == (0.8, 1.0, 20)


# ------------------------------------------------------------- tune (asr.tune)


def test_tune_picks_the_lm_weight_that_fixes_the_errors(lms, tmp_path):
    data = LogProbSet(
        ids=["a", "b"],
        references=["the cat sat on the mat"] * 2,
        log_probs=[hat_or_mat(), misspelled()],
        frame_seconds=FRAME,
        labels=["", *LABELS[1:]],
        audio_seconds=2.0,
    )
    result = tune_lm_weights(data, lms["bin"], alphas=[0.0, 1.0], betas=[0.0, 0.5])
    assert len(result.trials) == 4
    assert result.best.alpha == 1.0 and result.best.wer == 0.0
    assert result.greedy_wer == pytest.approx(2 / 12)
    assert min(t.wer for t in result.trials if t.alpha == 0.0) > 0
    s = result.settings
    assert (s["alpha"], s["tuned"]["lm"]) == (1.0, str(lms["bin"].resolve()))

    rnd = tune_lm_weights(
        data, lms["bin"], alphas=[0, 2], betas=[0, 1], random_trials=5
    )
    assert len(rnd.trials) == 5
    assert all(0 <= t.alpha <= 2 and 0 <= t.beta <= 1 for t in rnd.trials)

    # The cache round-trip the CLI uses.
    data.save(tmp_path / "lp.npz", {"m": 1})
    back, meta = LogProbSet.load(tmp_path / "lp.npz")
    assert meta == {"m": 1} and back.ids == data.ids
    assert all(
        np.array_equal(a, b)
        for a, b in zip(back.log_probs, data.log_probs, strict=True)
    )


# ----------------------------------------------------------- real audio, end to end


@pytest.fixture(scope="module")
def sentences_lm(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sentences_lm")
    (root / "corpus.txt").write_text("\n".join(SENTENCES) + "\n")
    return build_lm(root / "corpus.txt", root / "lm.bin", order=3).path


@pytest.mark.slow
def test_beam_with_lm_recognizes_the_training_audio(
    fitted_checkpoint, espeak_manifests, sentences_lm
):
    from asr.tune import manifest_log_probs

    data = manifest_log_probs(espeak_manifests["train"], fitted_checkpoint)
    assert not data.failed and len(data.ids) == 3 * len(SENTENCES)
    dec = BeamSearchDecoder(data.labels, lm=sentences_lm, workers=2)
    hyps = dec.decode_batch(data.log_probs, data.frame_seconds)
    assert [h.text for h in hyps] == data.references
    for h, lp in zip(hyps, data.log_probs, strict=True):
        ends = [(w.start, w.end) for w in h.words]
        assert all(s < e for s, e in ends)
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(ends, ends[1:], strict=False))
        assert ends[-1][1] <= len(lp) * data.frame_seconds + 1e-6


@pytest.mark.slow
def test_cli_lm_tune_writes_decoder_json(
    fitted_checkpoint, espeak_manifests, sentences_lm, tmp_path, capsys
):
    ckpt = tmp_path / "model.ckpt"
    shutil.copy(fitted_checkpoint, ckpt)  # decoder.json goes beside it
    cache = tmp_path / "dev.npz"
    argv = ["lm", "tune", str(espeak_manifests["dev"]), "--checkpoint", str(ckpt)]
    argv += ["--lm", str(sentences_lm), "--alphas", "0", "0.5", "--betas", "0", "1"]
    argv += ["--cache", str(cache), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert cache.is_file()
    assert len(out["trials"]) == 4
    best = min(out["trials"], key=lambda t: (t["wer"], t["cer"], t["alpha"], t["beta"]))
    assert out["best"] == best
    saved = load_decoder_settings(ckpt)
    assert out["saved"] == str(tmp_path / "decoder.json")
    assert (saved["alpha"], saved["beta"]) == (best["alpha"], best["beta"])
    assert saved["tuned"]["wer"] == best["wer"]
    assert saved["tuned"]["manifest"] == str(espeak_manifests["dev"])
    # transcribe/evaluate --lm pick the tuned weights up; the command line wins.
    dec = build_decoder(LABELS, **resolve_decoder_settings(ckpt, sentences_lm))
    assert (dec.alpha, dec.beta) == (best["alpha"], best["beta"])
    dec = build_decoder(
        LABELS, **resolve_decoder_settings(ckpt, sentences_lm, beta=3.0)
    )
    assert dec.beta == 3.0
    # A second run reuses the cached log-probs and prints the table.
    assert main(argv[:-1] + ["--no-save"]) == 0
    assert "best: alpha" in capsys.readouterr().out


@pytest.mark.parametrize(
    "settings",
    [
        {"alpha": "__import__('os').system('touch PWNED')"},
        {"beam_width": "3"},
        {"alpha": {"__class__": "os.system"}},
    ],
)
def test_a_hostile_decoder_json_is_one_line_and_runs_nothing(
    fitted_checkpoint,
    espeak_manifests,
    sentences_lm,
    tmp_path,
    monkeypatch,
    capsys,
    settings,
):
    """decoder.json is plain JSON: values of the wrong type are named in one line."""
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "model.ckpt"
    shutil.copy(fitted_checkpoint, ckpt)
    (tmp_path / "decoder.json").write_text(json.dumps(settings))
    audio = json.loads(espeak_manifests["train"].read_text().splitlines()[0])
    wav = str(espeak_manifests["train"].parent / audio["audio_filepath"])
    argv = ["transcribe", wav, "--checkpoint", str(ckpt), "--lm", str(sentences_lm)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"asr transcribe: error: {tmp_path / 'decoder.json'}: bad decoder settings ("
    )
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decoder.json", "model.ckpt"]


def test_lm_tune_checks_the_lm_before_running_the_model(
    espeak_manifests, tmp_path, capsys, monkeypatch
):
    import asr.tune

    def never(*args, **kwargs):
        raise AssertionError("the model ran before the LM was checked")

    monkeypatch.setattr(asr.tune, "manifest_log_probs", never)
    missing = tmp_path / "missing.bin"
    code = main(["lm", "tune", str(espeak_manifests["dev"]), "--checkpoint",
                 str(tmp_path / "m.ckpt"), "--lm", str(missing)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and f"{missing}: no such language model file" in err, err
