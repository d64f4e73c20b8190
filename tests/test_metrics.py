"""Error rates, counts and alignments against jiwer; the bootstrap interval."""

from __future__ import annotations

import math
import random

import jiwer
import numpy as np
import pytest

from asr.metrics import (
    ErrorCounts,
    align,
    align_words,
    bootstrap_ci,
    char_errors,
    error_rates,
    word_errors,
)

WORDS = "the a cat sat on mat dog ran bat hat it's o".split()


def random_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Sentence pairs over a small vocabulary, so that words often match, differ and
    repeat (ties between alignments of equal cost are common)."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        ref = [rng.choice(WORDS) for _ in range(rng.randint(1, 15))]
        hyp = list(ref)
        for _ in range(rng.randint(0, 6)):  # edit the reference a little
            k = rng.randrange(len(hyp) + 1)
            op = rng.choice("sdi")
            if op == "i" or not hyp:
                hyp.insert(k, rng.choice(WORDS))
            elif op == "d":
                del hyp[min(k, len(hyp) - 1)]
            else:
                hyp[min(k, len(hyp) - 1)] = rng.choice(WORDS)
        if rng.random() < 0.1:  # and some unrelated hypotheses, empty ones too
            hyp = [rng.choice(WORDS) for _ in range(rng.randint(0, 8))]
        pairs.append((" ".join(ref), " ".join(hyp)))
    return pairs


def test_word_counts_agree_with_jiwer_pair_by_pair():
    for ref, hyp in random_pairs(2000):
        ours = word_errors(ref, hyp)
        theirs = jiwer.process_words(ref, hyp)
        got = (ours.substitutions, ours.deletions, ours.insertions)
        want = (theirs.substitutions, theirs.deletions, theirs.insertions)
        assert got == want, (ref, hyp)
        assert ours.reference_length == len(ref.split())
        assert ours.rate == pytest.approx(theirs.wer), (ref, hyp)
        assert align_words(ref, hyp).counts == ours, (ref, hyp)


def test_char_counts_agree_with_jiwer_pair_by_pair():
    for ref, hyp in random_pairs(1000, seed=1):
        ours = char_errors(ref, hyp)
        theirs = jiwer.process_characters(ref, hyp)
        got = (ours.substitutions, ours.deletions, ours.insertions)
        want = (theirs.substitutions, theirs.deletions, theirs.insertions)
        assert got == want, (ref, hyp)
        assert ours.rate == pytest.approx(jiwer.cer(ref, hyp)), (ref, hyp)


def test_corpus_rates_agree_with_jiwer():
    refs, hyps = zip(*random_pairs(500, seed=2), strict=True)
    words, chars = error_rates(refs, hyps)
    theirs = jiwer.process_words(list(refs), list(hyps))
    assert words.rate == pytest.approx(jiwer.wer(list(refs), list(hyps)))
    assert (words.substitutions, words.deletions, words.insertions) == (
        theirs.substitutions,
        theirs.deletions,
        theirs.insertions,
    )
    assert chars.rate == pytest.approx(jiwer.cer(list(refs), list(hyps)))
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        error_rates(["a", "b"], ["a"])


def test_alignment_marks_errors_sclite_style():
    ref, hyp, ops = align_words(
        "the cat sat on the mat", "the bat sat on the mat on"
    ).lines()
    assert ref == "the CAT sat on the mat **"
    assert hyp == "the BAT sat on the mat ON"
    assert ops == "    S                  I"
    ref, hyp, ops = align_words("good morning to you", "good to you").lines()
    assert ref == "good MORNING to you"
    assert hyp == "good ******* to you"
    assert ops == "     D"
    # columns line up: each word starts where its partner starts
    ref, hyp, _ = align_words("a b c", "a bbbb c").lines()
    assert ref.index("c") == hyp.index("c")
    # an empty hypothesis is all deletions, an empty reference all insertions
    assert align_words("a b", "").counts == ErrorCounts(0, 2, 0, 2)
    assert align_words("", "x y").counts == ErrorCounts(0, 0, 2, 0)
    assert align_words("", "").lines() == ("", "", "")


def test_alignment_ops_rebuild_both_sides():
    for ref, hyp in random_pairs(300, seed=3):
        ops = align_words(ref, hyp).ops
        assert [r for op, r, _ in ops if op != "I"] == ref.split()
        assert [h for op, _, h in ops if op != "D"] == hyp.split()
        for op, r, h in ops:
            assert (op == "C") == (r == h), ops
    assert align(list("kitten"), list("sitting")).counts.errors == 3


def test_error_counts_rate_and_sum():
    assert ErrorCounts(1, 1, 1, 6).rate == 0.5
    assert ErrorCounts().rate == 0.0
    assert math.isinf(ErrorCounts(0, 0, 1, 0).rate)
    assert ErrorCounts(1, 2, 3, 4) + ErrorCounts(1, 1, 1, 1) == ErrorCounts(2, 3, 4, 5)


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_data():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 30, size=50)
    errors = rng.binomial(lengths, 0.15)
    point = errors.sum() / lengths.sum()
    lo, hi = bootstrap_ci(errors, lengths)
    assert 0 <= lo < point < hi <= 1
    # the same utterances ten times over: the interval is about sqrt(10) narrower
    lo10, hi10 = bootstrap_ci(np.tile(errors, 10), np.tile(lengths, 10))
    assert lo10 < point < hi10
    assert (hi10 - lo10) < 0.5 * (hi - lo)
    # seeded: reproducible, and another seed gives another (close) interval
    assert bootstrap_ci(errors, lengths, seed=0) == (lo, hi)
    other = bootstrap_ci(errors, lengths, seed=1)
    assert other != (lo, hi) and other == pytest.approx((lo, hi), abs=0.03)
    # a wider level gives a wider interval
    lo99, hi99 = bootstrap_ci(errors, lengths, level=0.99)
    assert lo99 <= lo and hi <= hi99


def test_bootstrap_edge_cases():
    assert bootstrap_ci([0, 0, 0], [5, 6, 7]) == (0.0, 0.0)
    assert all(math.isnan(x) for x in bootstrap_ci([], []))
    assert all(math.isnan(x) for x in bootstrap_ci([1], [0]))
    with pytest.raises(ValueError, match="must be"):
        bootstrap_ci([1, 2], [3])
