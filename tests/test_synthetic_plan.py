"""The plan of the synthetic corpus (asr.synthetic.plan): held-out voices and texts,
sizes, batches; no audio is made."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from asr.synthetic.plan import Options, _task_cost, make_tasks, plan_corpus
from asr.synthetic.voices import ENGINES, ESPEAK, available_voices
from asr.synthetic.wordnet import DEFAULT_WORDNET_DIR, load_sentences

pytestmark = pytest.mark.skipif(
    any(shutil.which(e) is None for e in ENGINES)
    or not (DEFAULT_WORDNET_DIR / "data.noun").is_file(),
    reason="needs espeak-ng, flite, festival and wordnet (make setup installs them)",
)

OPTIONS = Options(
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


@pytest.fixture(scope="module")
def voices() -> dict[str, set[str]]:
    return available_voices()


def test_held_out_voices_and_texts(voices: dict[str, set[str]]) -> None:
    """A 2 h plan: dev and test speakers use base voices no training speaker uses
    (3 of 10 the held-out engine voice, 7 distinct espeak-ng voices), and no dev or
    test sentence is said in train or in the other split."""
    plans = plan_corpus(load_sentences(), OPTIONS, voices)
    train = {p.speaker.base_voice for p in plans if p.speaker.split == "train"}
    assert len(train) > 60, len(train)
    texts = {
        split: {
            u.sentence.transcript
            for p in plans
            if p.speaker.split == split
            for u in p.utterances
        }
        for split in ("train", "dev", "test")
    }
    for split in ("dev", "test"):
        held = [p.speaker for p in plans if p.speaker.split == split]
        assert len(held) == 10 and train.isdisjoint(s.base_voice for s in held)
        espeak = {s.base_voice for s in held if s.engine == ESPEAK}
        assert len(espeak) == 7, espeak
        assert texts[split].isdisjoint(texts["train"])
    assert texts["dev"].isdisjoint(texts["test"])
    # About the hours asked for, by the planner's own estimate.
    n = sum(len(p.utterances) for p in plans)
    assert 2 * 3600 / 3.5 < n < 2 * 3600 / 1.8, n


def test_the_plan_is_a_function_of_the_options(voices: dict[str, set[str]]) -> None:
    sentences = load_sentences()
    assert plan_corpus(sentences, OPTIONS, voices) == plan_corpus(
        sentences, OPTIONS, voices
    )
    other = plan_corpus(sentences, Options(**{**vars(OPTIONS), "seed": 1}), voices)
    assert other != plan_corpus(sentences, OPTIONS, voices)


def test_batches_of_one_speaker_longest_first(voices: dict[str, set[str]]) -> None:
    plans = plan_corpus(load_sentences(), OPTIONS, voices)
    tasks = make_tasks(plans, Path("/corpus"), OPTIONS)
    assert sum(len(t.utterances) for t in tasks) == sum(
        len(p.utterances) for p in plans
    )
    for task in tasks:
        assert 1 <= len(task.utterances) <= 25
        s = task.speaker
        assert task.directory == Path(
            f"/corpus/{s.split}/{s.speaker_id}/{s.chapter_id}"
        )
        assert all(u.utt_id.startswith(f"{s.speaker_id}-") for u in task.utterances)
    costs = [_task_cost(t) for t in tasks]
    assert costs == sorted(costs, reverse=True)
