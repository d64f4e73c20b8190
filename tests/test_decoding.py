"""Decoders: greedy vs beam search on hand-built posteriors, the blank-run
compaction, hot words, the process pool, decoder settings; and the beam search
identical to pyctcdecode's own, with and without a KenLM model (the LM's own
behaviour is tested in test_lm.py)."""

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


def compact_reference(
    lp: np.ndarray, token_min_logp: float, blank: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What decoding._compact_blank_runs computes, in numpy."""
    cand = decoding._candidates(lp, token_min_logp)
    masks = (cand.astype(np.int64) << np.arange(lp.shape[1])).sum(axis=1)
    blank_only = masks == 1 << blank
    keep = np.ones(len(lp), dtype=bool)
    keep[1:] = ~(blank_only[1:] & blank_only[:-1])
    starts = np.flatnonzero(keep)
    compact = lp[keep]
    group = np.cumsum(keep) - 1
    compact[:, blank] = np.bincount(group, weights=lp[:, blank], minlength=len(starts))
    return compact, starts, masks[keep]


@pytest.mark.parametrize("seed", range(4))
def test_blank_compaction_is_exact(seed):
    rng = np.random.default_rng(seed)
    lp = random_posteriors(rng, 120)
    lp64 = lp.astype(np.float64)
    compact, starts, masks = decoding._compact_blank_runs(lp64, -5.0, 0)
    assert len(compact) < len(lp)  # there was something to merge
    ref = compact_reference(lp64, -5.0)
    ours = (compact, starts, masks)
    assert all(np.array_equal(a, b) for a, b in zip(ref, ours, strict=True))
    fast = BeamSearchDecoder(LABELS, beam_width=16, hotwords=["ab"])
    slow = BeamSearchDecoder(
        LABELS, beam_width=16, hotwords=["ab"], compact_blanks=False
    )
    a, b = fast.decode(lp, FRAME), slow.decode(lp, FRAME)
    assert a.text == b.text and a.text
    assert a.words == b.words
    assert a.score == pytest.approx(b.score, abs=1e-6)


def test_a_long_blank_run_stays_blank():
    # 70 frames of blank at 0.9 with an "x" at 0.0049 (log -5.3, below
    # token_min_logp): each frame expands the blank alone. Their blank log-probs
    # sum to -7.4, below the x's: a merged frame must not make "x" its argmax.
    frames = ["_"] * 2 + ["h", "_", "i"] + [{"_": 0.9, "x": 0.0049}] * 70
    lp = posteriors(frames + ["y", "_", "o", "_", "_"])
    compact = BeamSearchDecoder(LABELS, beam_width=8).decode(lp, FRAME)
    full = BeamSearchDecoder(LABELS, beam_width=8, compact_blanks=False)
    assert compact.text == full.decode(lp, FRAME).text == "hiyo"
    assert compact.words == full.decode(lp, FRAME).words


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


# ------------------------------------------- identical to pyctcdecode's own search

# BeamSearchDecoder runs pyctcdecode's search (_decode_logits) in its own compiled
# loop (decoding._PrefixSearch). These compare it with pyctcdecode's, built from
# pyctcdecode's own classes only (its LanguageModel with the pygtrie, its
# HotwordScorer), on the same log-probabilities: every output beam must be equal,
# texts, word frames, LM states and scores (bit for bit, not approximately).


def stock_decoder(
    lm=None, alpha=0.5, beta=1.0, unk_score_offset=-10.0, hotwords=(), weight=10.0
):
    """pyctcdecode alone: its decoder and hot-word scorer."""
    from pyctcdecode.alphabet import Alphabet
    from pyctcdecode.decoder import BeamSearchDecoderCTC
    from pyctcdecode.language_model import HotwordScorer, LanguageModel

    language_model = None
    if lm is not None:
        import kenlm

        from asr.lm import load_lm

        language_model = LanguageModel(
            kenlm.Model(str(lm)),
            load_lm(lm).unigrams,
            alpha=alpha,
            beta=beta,
            unk_score_offset=unk_score_offset,
        )
    labels = ["", *LABELS[1:]]
    decoder = BeamSearchDecoderCTC(Alphabet(labels, False), language_model)
    return decoder, HotwordScorer.build_scorer(list(hotwords), weight=weight)


def prepared(x: np.ndarray) -> np.ndarray:
    """pyctcdecode's decode_beams input preparation, in float64."""
    from pyctcdecode.decoder import _log_softmax

    return np.clip(_log_softmax(x.astype(np.float64), axis=1), decoding._MIN_LOGP, 0)


def assert_same_search(ours: BeamSearchDecoder, lps, lm=None, hotwords=(), **kw):
    """Our search == pyctcdecode's _decode_logits, beam for beam; and the public
    decode (without blank compaction) == pyctcdecode's decode_beams' best beam."""
    settings = dict(
        beam_width=ours.beam_width,
        beam_prune_logp=ours.beam_prune_logp,
        token_min_logp=ours.token_min_logp,
    )
    stock, scorer = stock_decoder(lm, hotwords=hotwords, **kw)
    full = BeamSearchDecoder(
        LABELS,
        lm=lm,
        alpha=ours.alpha,
        beta=ours.beta,
        unk_score_offset=ours.unk_score_offset,
        hotwords=hotwords,
        hotword_weight=ours.hotword_weight,
        compact_blanks=False,
        **settings,
    )
    try:
        n_beams = 0
        for x in lps:
            lp = prepared(x)
            want = stock._decode_logits(
                lp, prune_history=False, hotword_scorer=scorer, **settings
            )
            got = ours._search.decode_logits(lp, *settings.values())
            assert got == want
            n_beams += len(want)
            text, _, frames, _, score = stock.decode_beams(
                x.astype(np.float64),
                hotwords=list(hotwords),
                hotword_weight=ours.hotword_weight,
                **settings,
            )[0]
            words = [(w, s, e) for w, (s, e) in frames]
            assert full._beams(x) == (text, words, score)
        if ours.beam_width > 1:
            assert n_beams > len(lps)  # several beams compared per utterance
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
        dict(beam_width=4, token_min_logp=-3.0),
        dict(beam_width=16),
        dict(beam_width=64, beam_prune_logp=-20.0, token_min_logp=-8.0),
    ],
)
def test_search_is_pyctcdecodes_without_lm(settings):
    rng = np.random.default_rng(3)
    lps = [random_posteriors(rng, int(rng.integers(1, 150))) for _ in range(6)]
    lps += noisy_sentences(rng, 4, noise=1.5)
    assert_same_search(BeamSearchDecoder(LABELS, **settings), lps)


def test_search_is_pyctcdecodes_with_hotwords():
    rng = np.random.default_rng(4)
    lps = [random_posteriors(rng, 100) for _ in range(4)] + noisy_sentences(rng, 4, 2)
    hot = ["cat", "sea shells", "ab"]
    dec = BeamSearchDecoder(LABELS, beam_width=12, hotwords=hot, hotword_weight=4.0)
    assert_same_search(dec, lps, hotwords=hot, weight=4.0)


def test_search_memos_and_tables_do_not_change_results():
    # The kernel's tables start tiny and grow mid-utterance; memos persist across
    # utterances. Neither may change any output.
    rng = np.random.default_rng(5)
    lps = [random_posteriors(rng, 200) for _ in range(3)]
    small = BeamSearchDecoder(LABELS, beam_width=24)
    small._search._alloc(2, 1, 1, 1)
    assert_same_search(small, lps + lps)


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
        dict(beam_width=1),
        dict(beam_width=8),
        dict(beam_width=32, alpha=1.5, beta=-0.5),
        dict(beam_width=16, token_min_logp=-8.0, unk_score_offset=-3.0),
        dict(beam_width=16, alpha=-0.3),  # no bound on LM scores: all scored
    ],
)
def test_search_is_pyctcdecodes_with_lm(small_lm, settings):
    rng = np.random.default_rng(6)
    lps = noisy_sentences(rng, 8, noise=1.0) + noisy_sentences(rng, 6, noise=2.5)
    lps += [random_posteriors(rng, 80) for _ in range(3)]
    ours = BeamSearchDecoder(LABELS, lm=small_lm, **settings)
    lm_keys = ("alpha", "beta", "unk_score_offset")
    lm_kw = {k: v for k, v in settings.items() if k in lm_keys}
    assert_same_search(ours, lps, lm=small_lm, **lm_kw)
    # Again: now the LM memos are warm.
    assert_same_search(ours, lps, lm=small_lm, **lm_kw)


def test_search_is_pyctcdecodes_with_lm_and_hotwords(small_lm):
    rng = np.random.default_rng(7)
    lps = noisy_sentences(rng, 8, noise=1.5)
    hot = ["mat", "zat", "good morning"]
    ours = BeamSearchDecoder(LABELS, lm=small_lm, beam_width=16, hotwords=hot)
    assert_same_search(ours, lps, lm=small_lm, hotwords=hot)


def test_new_lm_weights_forget_the_memos(small_lm):
    rng = np.random.default_rng(8)
    lps = noisy_sentences(rng, 6, noise=1.5)
    ours = BeamSearchDecoder(LABELS, lm=small_lm, beam_width=16, alpha=0.5, beta=1.0)
    assert_same_search(ours, lps, lm=small_lm, alpha=0.5, beta=1.0)
    ours.set_weights(2.0, 3.0)
    assert_same_search(ours, lps, lm=small_lm, alpha=2.0, beta=3.0)


@pytest.mark.slow
def test_search_is_pyctcdecodes_on_real_log_probs(
    fitted_checkpoint, espeak_manifests, small_lm
):
    from asr.tune import manifest_log_probs

    data = manifest_log_probs(espeak_manifests["dev"], fitted_checkpoint)
    for width in (4, 32):
        ours = BeamSearchDecoder(data.labels, lm=small_lm, beam_width=width)
        assert_same_search(ours, data.log_probs, lm=small_lm)
        plain = BeamSearchDecoder(data.labels, beam_width=width)
        assert_same_search(plain, data.log_probs)


def viterbi_reference(segment: np.ndarray, ids: list[int], blank: int = 0) -> list:
    """decoding._char_confidences in numpy (the CTC Viterbi it compiles)."""
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
    # Beyond 62 classes the candidate sets are not bit masks; the blank need not be
    # class 0. pyctcdecode's own alphabet: "" is the blank, " " the word separator.
    from pyctcdecode.alphabet import Alphabet
    from pyctcdecode.decoder import BeamSearchDecoderCTC
    from pyctcdecode.language_model import HotwordScorer

    labels = [" ", *"abcdefghij", "", *(chr(0x3B1 + i) for i in range(60))]
    rng = np.random.default_rng(10)
    ours = BeamSearchDecoder(labels, beam_width=12, blank=11)
    stock = BeamSearchDecoderCTC(Alphabet(labels, False), None)
    scorer = HotwordScorer.build_scorer([])
    for T in (0, 1, 40, 90):
        x = rng.normal(size=(T, len(labels))) * 3
        x[:, 11] += 4 * (rng.random(T) < 0.5)
        lp = prepared(x)
        want = stock._decode_logits(
            lp, 12, -10.0, -5.0, prune_history=False, hotword_scorer=scorer
        )
        assert ours._search.decode_logits(lp, 12, -10.0, -5.0) == want
        if T:
            text, _, frames, _, score = want[0]
            assert ours._beams(x) == (text, [(w, s, e) for w, (s, e) in frames], score)


def test_an_lm_above_probability_one_is_refused():
    # The search skips texts by a bound that needs KenLM log-probs <= 0.
    from types import SimpleNamespace

    lm = SimpleNamespace(
        alpha=0.5,
        beta=1.0,
        unk_score_offset=-10.0,
        _kenlm_model=SimpleNamespace(path=b"x.bin"),
    )
    decoding._check_bound(1.0, lm, "ok")
    with pytest.raises(DecoderError, match=r"x\.bin: KenLM scored 'odd' above"):
        decoding._check_bound(1.2, lm, "odd")
