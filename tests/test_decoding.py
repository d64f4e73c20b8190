"""Decoders: greedy vs beam search on hand-built posteriors, hot words, the process
pool, decoder settings, word confidences; and the beam search's settings reaching
pyctcdecode, with and without a KenLM model (the LM's own behaviour is tested in
test_lm.py)."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from asr import decoding
from asr.decoding import (
    BeamSearchDecoder,
    DecoderError,
    GreedyDecoder,
    Hypothesis,
    build_decoder,
    load_decoder_settings,
    resolve_decoder_settings,
    save_decoder_settings,
)
from asr.text import VOCAB

LABELS = list(VOCAB)
V = len(LABELS)
INDEX = {c: i for i, c in enumerate(LABELS)} | {"_": 0}  # "_" = blank
FRAME = 0.04


def posteriors(frames: list[str | dict[str, float]], p: float = 0.98) -> np.ndarray:
    """``(T, V)`` log-posteriors: a frame is a label (probability ``p``) or a dict
    {label: probability}; the rest of the mass is spread over the other classes."""
    rows = []
    for f in frames:
        spec = {f: p} if isinstance(f, str) else f
        rest = (1.0 - sum(spec.values())) / (V - len(spec))
        row = np.full(V, rest)
        for c, q in spec.items():
            row[INDEX[c]] = q
        rows.append(np.log(row))
    return np.asarray(rows, dtype=np.float32)


def spell(text: str, gap: int = 2, hold: int = 1) -> list[str | dict[str, float]]:
    """Clean CTC frames for ``text``: each character held ``hold`` frames, then
    ``gap`` blanks (so doubled letters are separated)."""
    frames: list[str | dict[str, float]] = ["_"] * 3
    for c in text:
        frames += [c] * hold + ["_"] * gap
    return frames + ["_"] * 3


def test_beam_equals_greedy_on_clean_peaks():
    lp = posteriors(spell("the cat sat on the mat", hold=2))
    greedy = GreedyDecoder(LABELS).decode(lp, FRAME)
    beam = BeamSearchDecoder(LABELS, beam_width=16).decode(lp, FRAME)
    assert greedy.text == "the cat sat on the mat"
    assert beam.text == greedy.text
    # Same frames and the same definition of confidence: identical words.
    assert beam.words == greedy.words
    assert beam.words[0].start == pytest.approx(3 * FRAME)
    assert all(w.confidence == pytest.approx(0.98, abs=1e-4) for w in beam.words)


def test_word_times_and_confidence_follow_the_frames():
    # "hi" at frames 5-6 (h, confidence 0.9) and 9 (i, 0.7); "yo" later.
    frames = ["_"] * 5 + [{"h": 0.9}, {"h": 0.8}, "_", "_", {"i": 0.7}]
    frames += ["_", " ", "_", "y", "_", "o", "o", "o", "_", "_"]
    lp = posteriors(frames)
    hyp = BeamSearchDecoder(LABELS).decode(lp, FRAME)
    assert hyp.text == "hi yo"
    hi, yo = hyp.words
    assert (hi.start, hi.end) == (round(5 * FRAME, 3), round(10 * FRAME, 3))
    assert (yo.start, yo.end) == (round(13 * FRAME, 3), round(18 * FRAME, 3))
    assert hi.confidence == pytest.approx((0.9 + 0.7) / 2, abs=1e-4)
    assert hyp.words == GreedyDecoder(LABELS).decode(lp, FRAME).words


def test_low_confidence_for_an_uncertain_character():
    frames = spell("dog")
    frames[frames.index("o")] = {"o": 0.4, "a": 0.35}
    hyp = BeamSearchDecoder(LABELS).decode(posteriors(frames), FRAME)
    assert hyp.text == "dog"
    assert hyp.words[0].confidence == pytest.approx((0.98 + 0.4 + 0.98) / 3, abs=1e-4)


def test_hotwords_change_an_ambiguous_word():
    frames = spell("the kat")
    frames[frames.index("k")] = {"k": 0.5, "c": 0.45}
    lp = posteriors(frames)
    assert GreedyDecoder(LABELS).decode(lp, FRAME).text == "the kat"
    assert BeamSearchDecoder(LABELS).decode(lp, FRAME).text == "the kat"
    hot = BeamSearchDecoder(LABELS, hotwords=["Cat"])  # normalized like transcripts
    assert hot.decode(lp, FRAME).text == "the cat"
    assert hot.settings()["hotwords"] == ["cat"]


def random_posteriors(rng: np.random.Generator, T: int) -> np.ndarray:
    """Peaky, mostly-blank posteriors with some uncertain frames, like a CTC model's."""
    logits = rng.normal(size=(T, V)) * 2.0
    logits[:, 0] += np.where(rng.random(T) < 0.65, 9.0, 0.0)  # blank runs
    peaks = rng.integers(1, V, size=T)
    logits[np.arange(T), peaks] += rng.choice([0.0, 3.0, 8.0], size=T)
    logits -= np.logaddexp.reduce(logits, axis=1, keepdims=True)
    return logits.astype(np.float32)


def test_empty_and_bad_input():
    dec = BeamSearchDecoder(LABELS)
    assert dec.decode(np.zeros((0, V), np.float32), FRAME) == Hypothesis("", (), 0.0)
    with pytest.raises(ValueError, match=r"\(T, 29\)"):
        dec.decode(np.zeros((5, V - 1), np.float32), FRAME)
    with pytest.raises(DecoderError, match="beam_width"):
        BeamSearchDecoder(LABELS, beam_width=0)
    with pytest.raises(DecoderError, match="space"):
        BeamSearchDecoder([c for c in LABELS if c != " "])
    with pytest.raises(DecoderError, match="single characters"):
        BeamSearchDecoder([*LABELS[:-1], "zz"])
    with pytest.raises(DecoderError, match=r"'r2d2'.*\['2'\]"):
        BeamSearchDecoder(LABELS, hotwords=["R2D2"])


def utterances(n: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [random_posteriors(rng, int(rng.integers(20, 90))) for _ in range(n)]


def test_decode_batch_in_a_pool_equals_serial():
    lps = utterances()
    pooled = BeamSearchDecoder(LABELS, beam_width=8, workers=2)
    serial = [pooled.decode(lp, FRAME) for lp in lps]
    assert pooled.decode_batch(lps, FRAME) == serial
    assert (
        BeamSearchDecoder(LABELS, beam_width=8, workers=1).decode_batch(lps, FRAME)
        == serial
    )


def _report_pid(job: tuple[np.ndarray, float]) -> Hypothesis:
    return Hypothesis(str(os.getpid()))


def test_decode_batch_really_uses_worker_processes(monkeypatch):
    # Each result says which process decoded it.
    monkeypatch.setattr(decoding, "_worker_decode", _report_pid)
    out = BeamSearchDecoder(LABELS, workers=2).decode_batch(utterances(4), FRAME)
    pids = {int(h.text) for h in out}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    # One utterance or one worker: decoded here, no pool.
    one = BeamSearchDecoder(LABELS, workers=2).decode_batch(utterances(1), FRAME)
    assert one[0].text != str(os.getpid())


def test_settings_are_json_and_complete():
    dec = BeamSearchDecoder(LABELS, beam_width=12, hotwords=["cat"], hotword_weight=5)
    s = dec.settings()
    assert json.loads(json.dumps(s)) == s
    assert s["decoder"] == "beam" and s["lm"] is None
    assert s["beam_width"] == 12 and s["hotwords"] == ["cat"]
    assert s["hotword_weight"] == 5.0
    assert s["alpha"] is None and s["beta"] is None  # no LM: not used
    assert {"beam_prune_logp", "token_min_logp"} <= s.keys()


def test_build_decoder_picks_greedy_or_beam(caplog):
    assert isinstance(build_decoder(LABELS), GreedyDecoder)
    assert isinstance(build_decoder(LABELS, beam_width=1), GreedyDecoder)
    with caplog.at_level(logging.WARNING):
        assert isinstance(build_decoder(LABELS, alpha=0.3), GreedyDecoder)
    assert "ignored without one" in caplog.text
    beam = build_decoder(LABELS, beam_width=10, beam_prune_logp=-8.0)
    assert isinstance(beam, BeamSearchDecoder)
    assert (beam.beam_width, beam.beam_prune_logp) == (10, -8.0)
    assert isinstance(build_decoder(LABELS, hotwords=["cat"]), BeamSearchDecoder)


def test_decoder_settings_persist_beside_the_checkpoint(tmp_path, caplog):
    ckpt = tmp_path / "exp" / "model.ckpt"
    assert load_decoder_settings(ckpt) == {}
    saved = {"alpha": 0.7, "beta": 1.5, "beam_width": 24, "tuned": {"lm": "a.bin"}}
    path = save_decoder_settings(ckpt, saved)
    assert path == tmp_path / "exp" / "decoder.json"
    assert sorted(p.name for p in path.parent.iterdir()) == ["decoder.json"]
    assert load_decoder_settings(ckpt) == saved

    # Without an LM, tuned LM weights do not apply; with one, they do, and the
    # command line wins.
    assert resolve_decoder_settings(ckpt, None, alpha=None) == {}
    with caplog.at_level(logging.WARNING):
        got = resolve_decoder_settings(ckpt, tmp_path / "b.bin", beta=0.0, alpha=None)
    assert got == {
        "alpha": 0.7,
        "beta": 0.0,
        "beam_width": 24,
        "lm": tmp_path / "b.bin",
    }
    assert "tuned with the LM a.bin" in caplog.text

    path.write_text("{not json")
    with pytest.raises(DecoderError, match="decoder.json"):
        load_decoder_settings(ckpt)


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"alpha": "0.5"}, "alpha must be a finite number, got '0.5'"),
        ({"beta": True}, "beta must be a finite number, got True"),
        ({"token_min_logp": [1]}, r"token_min_logp must be a finite number, got \[1\]"),
        ({"beam_width": 2.5}, "beam_width must be a whole number >= 1, got 2.5"),
        ({"beam_width": 0}, "beam_width must be a whole number >= 1, got 0"),
        ({"beam_width": "x" * 100}, "got 'xxxx.*\\.\\.\\.\\)$"),
    ],
)
def test_decoder_settings_of_the_wrong_type_are_named_when_read(
    tmp_path, settings, problem
):
    """decoder.json is only JSON: a value of the wrong type is refused when the file
    is read, naming the file, the key and the value -- not deep inside a search."""
    ckpt = tmp_path / "model.ckpt"
    path = save_decoder_settings(ckpt, {"alpha": 0.5, "beam_width": 8, **settings})
    with pytest.raises(
        DecoderError, match=f"^{path}: bad decoder settings .*{problem}"
    ):
        load_decoder_settings(ckpt)
    for ok in ({"alpha": None}, {"alpha": 1, "beta": -2.5, "beam_width": 64}):
        save_decoder_settings(ckpt, ok)
        assert load_decoder_settings(ckpt) == ok


# ------------------------------------------------------- pyctcdecode, wired right

# BeamSearchDecoder is pyctcdecode's search. These check that every setting reaches
# it: its best beam equals what pyctcdecode's own build_ctcdecoder + decode_beams
# give with the same settings (texts, word frames and scores, exactly).


def assert_is_pyctcdecode(
    ours: BeamSearchDecoder, lps: list[np.ndarray], labels=LABELS, blank: int = 0
) -> None:
    from pyctcdecode import build_ctcdecoder

    from asr.lm import load_lm

    ctc_labels = ["" if i == blank else c for i, c in enumerate(labels)]
    lm = {}
    if ours.lm is not None:
        lm = dict(
            kenlm_model_path=str(ours.lm),
            unigrams=list(load_lm(ours.lm).unigrams),
            alpha=ours.alpha,
            beta=ours.beta,
            unk_score_offset=ours.unk_score_offset,
        )
    stock = build_ctcdecoder(ctc_labels, **lm)
    try:
        for x in lps:
            text, _, frames, _, score = stock.decode_beams(
                x.astype(np.float64),
                beam_width=ours.beam_width,
                beam_prune_logp=ours.beam_prune_logp,
                token_min_logp=ours.token_min_logp,
                hotwords=ours.hotwords,
                hotword_weight=ours.hotword_weight,
            )[0]
            want = (text, [(w, s, e) for w, (s, e) in frames], score)
            assert ours._beams(x) == want
            hyp = ours.decode(x, FRAME)
            assert hyp.text == text and hyp.score == score
            assert [w.text for w in hyp.words] == text.split()
    finally:
        stock.cleanup()


def noisy_sentences(rng: np.random.Generator, n: int, noise: float) -> list[np.ndarray]:
    """Sentences of the conftest corpus spelled in CTC frames, with Gaussian noise
    on the logits (some frames uncertain, some wrong; words known and unknown)."""
    from conftest import SENTENCES

    out = []
    for i in range(n):
        text = SENTENCES[i % len(SENTENCES)]
        lp = posteriors(spell(text, gap=int(rng.integers(1, 4))), p=0.9)
        logits = lp + noise * rng.normal(size=lp.shape)
        logits -= np.logaddexp.reduce(logits, axis=1, keepdims=True)
        out.append(logits.astype(np.float32))
    return out


@pytest.mark.parametrize(
    "settings",
    [
        dict(beam_width=1),
        dict(beam_width=16, token_min_logp=-3.0),
        dict(beam_width=12, beam_prune_logp=-20.0, hotwords=["cat", "sea shells"]),
    ],
)
def test_search_is_pyctcdecodes_without_lm(settings):
    rng = np.random.default_rng(3)
    lps = [random_posteriors(rng, int(rng.integers(1, 150))) for _ in range(4)]
    lps += noisy_sentences(rng, 4, noise=1.5)
    assert_is_pyctcdecode(BeamSearchDecoder(LABELS, **settings), lps)


@pytest.fixture(scope="module")
def small_lm(tmp_path_factory):
    """A 3-gram KenLM model of the conftest sentences and generated ones (lmplz)."""
    import random

    from conftest import SENTENCES

    from asr.lm import build_lm

    rng = random.Random(0)
    words = " ".join(SENTENCES).split()
    lines = list(SENTENCES) * 3
    lines += [" ".join(rng.choice(words) for _ in range(6)) for _ in range(200)]
    root = tmp_path_factory.mktemp("small_lm")
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")
    return build_lm(root / "corpus.txt", root / "lm.bin", order=3).path


@pytest.mark.parametrize(
    "settings",
    [
        dict(beam_width=8),
        dict(beam_width=32, alpha=1.5, beta=-0.5),
        dict(beam_width=16, token_min_logp=-8.0, unk_score_offset=-3.0),
        dict(beam_width=16, hotwords=["mat", "zat", "good morning"]),
    ],
)
def test_search_is_pyctcdecodes_with_lm(small_lm, settings):
    rng = np.random.default_rng(6)
    lps = noisy_sentences(rng, 6, noise=1.0) + noisy_sentences(rng, 4, noise=2.5)
    lps += [random_posteriors(rng, 80) for _ in range(2)]
    assert_is_pyctcdecode(BeamSearchDecoder(LABELS, lm=small_lm, **settings), lps)


def test_new_lm_weights_take_effect(small_lm):
    rng = np.random.default_rng(8)
    lps = noisy_sentences(rng, 6, noise=1.5)
    ours = BeamSearchDecoder(LABELS, lm=small_lm, beam_width=16, alpha=0.5, beta=1.0)
    before = [ours.decode(x, FRAME).score for x in lps]
    ours.set_weights(2.0, 3.0)
    assert (ours.alpha, ours.beta) == (2.0, 3.0)
    assert_is_pyctcdecode(ours, lps)
    assert [ours.decode(x, FRAME).score for x in lps] != before


def viterbi_reference(segment: np.ndarray, ids: list[int], blank: int = 0) -> list:
    """decoding._char_confidences in numpy, vectorized over states (the CTC
    Viterbi it runs on Python floats)."""
    n, L = segment.shape[0], len(ids)
    S = 2 * L - 1
    labels = np.full(S, blank, dtype=np.int64)
    labels[0::2] = ids
    emit = segment[:, labels]
    skip = np.zeros(S, dtype=bool)
    skip[2::2] = labels[2::2] != labels[0:-2:2]
    back = np.zeros((n, S), dtype=np.int64)
    cand = np.full((3, S), -np.inf)  # row k: coming from state s-k
    cand[0, 0] = emit[0, 0]
    for t in range(1, n):
        cand[1, 1:] = cand[0, :-1]
        cand[2, 2:] = np.where(skip[2:], cand[0, :-2], -np.inf)
        back[t] = cand.argmax(axis=0)
        cand[0] = cand[back[t], np.arange(S)] + emit[t]
    if n < L or not np.isfinite(cand[0, S - 1]):
        return [float(np.exp(segment[:, c].max())) for c in ids]
    state, best = S - 1, np.full(L, -np.inf)
    for t in range(n - 1, -1, -1):
        if state % 2 == 0:
            best[state // 2] = max(best[state // 2], segment[t, labels[state]])
        state -= int(back[t, state])
    return np.exp(best).tolist()


def test_word_confidence_alignment_matches_its_reference():
    rng = np.random.default_rng(9)
    for _ in range(300):
        n, L = int(rng.integers(1, 20)), int(rng.integers(1, 7))
        x = rng.normal(size=(n, V)) * rng.choice([1.0, 4.0])
        x = np.round(x - np.logaddexp.reduce(x, axis=1, keepdims=True), 1)  # ties
        ids = rng.integers(1, rng.choice([3, V]), size=L).tolist()
        for seg in (x, x.astype(np.float32)):
            want = viterbi_reference(seg, ids)
            assert decoding._char_confidences(seg, ids, 0).tolist() == want


def test_search_is_pyctcdecodes_for_any_alphabet():
    # The blank need not be class 0; any number of classes.
    labels = [" ", *"abcdefghij", "<b>", *(chr(0x3B1 + i) for i in range(60))]
    rng = np.random.default_rng(10)
    ours = BeamSearchDecoder(labels, beam_width=12, blank=11)
    lps = []
    for T in (1, 40, 90):
        x = rng.normal(size=(T, len(labels))) * 3
        x[:, 11] += 4 * (rng.random(T) < 0.5)
        lps.append(x.astype(np.float32))
    assert_is_pyctcdecode(ours, lps, labels, blank=11)
