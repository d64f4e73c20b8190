"""`asr evaluate` and `asr plot-alignment` on real (espeak) speech, fitted model."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jiwer
import pytest

from asr.cli import main
from asr.evaluate import Evaluation, UtteranceResult, default_report_path, evaluate
from asr.manifest import read_manifest
from asr.metrics import align_words, char_errors

JSON_KEYS = (
    "wer",
    "cer",
    "substitutions",
    "deletions",
    "insertions",
    "words",
    "utterances",
    "failed",
    "wer_ci",
    "decoder",
    "decoder_settings",
    "rtf",
    "rtf_model",
    "rtf_decoding",
    "audio_seconds",
    "report",
)


@pytest.fixture(scope="module")
def dev_eval(espeak_manifests, fitted_checkpoint) -> Evaluation:
    return evaluate(espeak_manifests["dev"], fitted_checkpoint)


@pytest.fixture
def model(fitted_checkpoint, tmp_path) -> Path:
    """A private copy, so that default report paths land in this test's directory."""
    return Path(shutil.copy(fitted_checkpoint, tmp_path / "model.ckpt"))


def test_training_sentences_are_recognized_exactly(espeak_manifests, fitted_checkpoint):
    ev = evaluate(espeak_manifests["train"], fitted_checkpoint)
    s = ev.summary()
    assert s["utterances"] == 18 and s["failed"] == []
    assert s["wer"] == 0.0 and s["cer"] == 0.0
    assert (s["substitutions"], s["deletions"], s["insertions"]) == (0, 0, 0)
    assert s["wer_ci"] == [0.0, 0.0]
    for u in ev.utterances:
        assert u.hypothesis == u.reference
    assert s["words"] == sum(
        len(u.text.split()) for u in read_manifest(espeak_manifests["train"])
    )


def test_held_out_voice_counts_agree_with_jiwer(dev_eval):
    s = dev_eval.summary()
    assert s["utterances"] == 6 and s["words"] == 29
    refs = [u.reference for u in dev_eval.utterances]
    hyps = [u.hypothesis for u in dev_eval.utterances]
    assert all(hyps), "the fitted model should hear words in the held-out voice"
    assert s["wer"] > 0, "a held-out voice should make some errors"
    theirs = jiwer.process_words(refs, [h or "" for h in hyps])
    assert (s["substitutions"], s["deletions"], s["insertions"]) == (
        theirs.substitutions,
        theirs.deletions,
        theirs.insertions,
    )
    assert s["errors"] == s["substitutions"] + s["deletions"] + s["insertions"]
    assert s["wer"] == pytest.approx(theirs.wer)
    assert s["wer"] == pytest.approx(s["errors"] / s["words"])
    assert s["cer"] == pytest.approx(jiwer.cer(refs, hyps))
    lo, hi = s["wer_ci"]
    assert lo <= s["wer"] <= hi and lo < hi
    assert s["rtf"] == pytest.approx(s["rtf_model"] + s["rtf_decoding"])
    assert s["rtf_model"] > 0 and s["rtf_decoding"] > 0
    assert s["audio_seconds"] == pytest.approx(
        sum(u.duration for u in dev_eval.utterances), abs=1e-3
    )


def test_evaluate_json_and_report(espeak_manifests, model, dev_eval, capsys):
    code = main(
        ["evaluate", str(espeak_manifests["dev"]), "--checkpoint", str(model), "--json"]
    )
    captured = capsys.readouterr()
    assert code == 0
    result = json.loads(captured.out)
    for key in JSON_KEYS:
        assert key in result, key
    assert result["decoder"] == "greedy"
    assert result["wer"] == dev_eval.summary()["wer"]
    # default report: next to the checkpoint, named by test set and decoder
    report = model.parent / "dev.greedy.report.txt"
    assert result["report"] == str(report)
    assert str(report) in captured.err
    text = report.read_text()
    s, d, i = result["substitutions"], result["deletions"], result["insertions"]
    assert f"S {s}, D {d}, I {i}" in text
    # every utterance, with its alignment exactly as metrics renders it, worst first
    wers = []
    for u in dev_eval.utterances:
        ref, hyp, ops = align_words(u.reference, u.hypothesis).lines()
        block = f"REF: {ref}\nHYP: {hyp}\n" + f"OPS: {ops}".rstrip() + "\n"
        assert block in text, u.id
        wers.append((text.index(f"{u.id}  WER"), u.words.rate))
    order = [rate for _, rate in sorted(wers)]
    assert order == sorted(order, reverse=True)
    # the next evaluation of the same manifest replaces this report; one of another
    # manifest of the same name (dev.jsonl elsewhere) does not: it takes the next number
    assert default_report_path(model, espeak_manifests["dev"], "greedy") == report
    elsewhere = model.parent / "elsewhere" / "dev.jsonl"
    second = model.parent / "dev.greedy.2.report.txt"
    assert default_report_path(model, elsewhere, "greedy") == second


def test_default_report_path_keeps_other_files(tmp_path):
    ckpt = tmp_path / "exp" / "model.ckpt"
    ckpt.parent.mkdir()
    a, b = tmp_path / "a" / "test.jsonl", tmp_path / "b" / "test.jsonl"
    first = ckpt.parent / "test.beam.report.txt"
    assert default_report_path(ckpt, a, "beam") == first  # nothing there yet
    header = (
        "# asr evaluate: per-utterance alignments\n# manifest:   {}\n# checkpoint: x\n"
    )
    first.write_text(header.format(a))
    assert default_report_path(ckpt, a, "beam") == first
    second = ckpt.parent / "test.beam.2.report.txt"
    assert default_report_path(ckpt, b, "beam") == second
    second.write_text("notes of my own\n")  # not a report: never overwritten either
    third = ckpt.parent / "test.beam.3.report.txt"
    assert default_report_path(ckpt, b, "beam") == third
    third.write_text(header.format(b))
    assert default_report_path(ckpt, b, "beam") == third
    assert default_report_path(ckpt, a, "beam") == first


def test_report_header_names_the_manifest_from_any_directory(tmp_path, monkeypatch):
    """A report written from one directory is recognised from another: the header
    holds the manifest's absolute path, not the (cwd-relative) one it was given."""
    (tmp_path / "data").mkdir()
    manifest = tmp_path / "data" / "test.jsonl"
    ckpt = tmp_path / "exp" / "model.ckpt"
    ckpt.parent.mkdir()
    monkeypatch.chdir(tmp_path)
    ev = Evaluation(
        manifest="data/test.jsonl",
        checkpoint="exp/model.ckpt",
        decoder="greedy",
        decoder_settings={},
        utterances=[],
    )
    report = default_report_path(ckpt, "data/test.jsonl", "greedy")
    report.write_text(ev.report())
    assert f"# manifest:   {manifest}" in report.read_text()
    monkeypatch.chdir(tmp_path / "data")
    assert default_report_path(ckpt, "test.jsonl", "greedy") == report
    assert default_report_path(ckpt, "../elsewhere/test.jsonl", "greedy") != report


def test_report_marks_a_known_pair(tmp_path):
    ref, hyp = "the cat sat on the mat", "the bat sat on the mat on"
    utt = UtteranceResult(
        index=0,
        id="utt-1",
        audio_filepath="utt-1.flac",
        duration=2.0,
        reference=ref,
        hypothesis=hyp,
        alignment=align_words(ref, hyp),
        chars=char_errors(ref, hyp),
    )
    ok = UtteranceResult(
        1,
        "utt-2",
        "utt-2.flac",
        1.0,
        "a b",
        "a b",
        align_words("a b", "a b"),
        char_errors("a b", "a b"),
    )
    ev = Evaluation("m.jsonl", "model.ckpt", "greedy", {"decoder": "greedy"}, [ok, utt])
    text = ev.report()
    assert (
        "utt-1  WER 33.33% (S 1, D 0, I 1 / 6 words)\n"
        "REF: the CAT sat on the mat **\n"
        "HYP: the BAT sat on the mat ON\n"
        "OPS:     S                  I\n"
    ) in text
    assert text.index("utt-1") < text.index("utt-2")  # worst first
    assert ev.report("manifest").index("utt-2") < ev.report("manifest").index("utt-1")
    assert "# WER 25.00% (2 / 8 words: S 1, D 0, I 1;" in text


def test_unreadable_audio_is_named_counted_and_the_rest_scored(
    espeak_manifests, model, dev_eval, tmp_path, capsys
):
    lines = espeak_manifests["dev"].read_text().splitlines()
    base = espeak_manifests["dev"].parent
    records = [json.loads(line) for line in lines]
    for r in records:  # absolute paths, as the manifest moves
        r["audio_filepath"] = str(base / r["audio_filepath"])
    not_audio = tmp_path / "notes.flac"
    not_audio.write_text("this is not audio\n")
    records.append(
        {
            "audio_filepath": str(tmp_path / "gone.flac"),
            "duration": 1.0,
            "text": "one two three",
            "id": "gone",
        }
    )
    records.append(
        {
            "audio_filepath": str(not_audio),
            "duration": 1.0,
            "text": "four five",
            "id": "junk",
        }
    )
    manifest = tmp_path / "mixed.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))

    args = ["evaluate", str(manifest), "--checkpoint", str(model), "--json"]
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0  # scored; the failures are reported, not fatal (see --strict)
    result = json.loads(captured.out)
    assert {f["id"] for f in result["failed"]} == {"gone", "junk"}
    assert all(f["error"] for f in result["failed"])
    assert "gone.flac" in captured.err and "notes.flac" in captured.err
    # the other utterances are scored as without the bad ones; the bad ones' words
    # are all deletions
    clean = dev_eval.summary()
    assert result["utterances"] == 8
    assert result["words"] == clean["words"] + 5
    assert result["deletions"] == clean["deletions"] + 5
    assert result["substitutions"] == clean["substitutions"]
    assert result["insertions"] == clean["insertions"]
    assert result["audio_seconds"] == pytest.approx(clean["audio_seconds"])
    report = Path(result["report"]).read_text()
    assert "gone  WER 100.00%" in report and "UNREADABLE" in report

    assert main([*args, "--strict", "--no-report"]) == 3
    assert capsys.readouterr().err.count("unreadable audio") == 2


def test_human_readable_summary(espeak_manifests, model, tmp_path, capsys):
    report = tmp_path / "out" / "r.txt"
    code = main(
        [
            "evaluate",
            str(espeak_manifests["dev"]),
            "--checkpoint",
            str(model),
            "--report",
            str(report),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and report.is_file()
    assert "6 utterances, 29 words, greedy decoding" in out
    assert "WER " in out and "95% CI" in out and "RTF " in out


def test_plot_alignment_writes_a_figure(
    espeak_manifests, fitted_checkpoint, tmp_path, capsys
):
    import matplotlib.image

    utt = read_manifest(espeak_manifests["train"])[0]
    out = tmp_path / "plots" / "a.png"
    code = main(
        [
            "plot-alignment",
            utt.audio_filepath,
            "--checkpoint",
            str(fitted_checkpoint),
            "-o",
            str(out),
        ]
    )
    assert code == 0
    assert utt.text in capsys.readouterr().out  # the words drawn are the right ones
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 20_000
    height, width = matplotlib.image.imread(out).shape[:2]
    assert width >= 800 and height >= 700


def test_plot_alignment_refuses_a_non_audio_file(fitted_checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really")
    out = tmp_path / "a.png"
    code = main(
        [
            "plot-alignment",
            str(bad),
            "--checkpoint",
            str(fitted_checkpoint),
            "-o",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "bad.wav" in err
    assert not out.exists()


@pytest.fixture(scope="module")
def sentences_lm(tmp_path_factory) -> Path:
    from conftest import SENTENCES

    from asr.lm import build_lm

    root = tmp_path_factory.mktemp("sentences_lm")
    (root / "corpus.txt").write_text("\n".join(SENTENCES) + "\n")
    return build_lm(root / "corpus.txt", root / "lm.bin", order=3).path


def test_evaluate_with_an_lm_uses_tuned_then_given_settings(
    espeak_manifests, model, dev_eval, sentences_lm, capsys
):
    from asr.decoding import save_decoder_settings

    save_decoder_settings(model, {"alpha": 0.7, "beta": 1.5, "beam_width": 16})
    dev = str(espeak_manifests["dev"])
    args = ["evaluate", dev, "--checkpoint", str(model), "--lm", str(sentences_lm)]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    settings = result["decoder_settings"]
    assert result["decoder"] == "beam" and settings["lm"] == str(sentences_lm)
    assert (settings["alpha"], settings["beta"], settings["beam_width"]) == (
        0.7,
        1.5,
        16,
    )
    assert result["report"] == str(model.parent / "dev.beam.report.txt")
    # an LM of exactly these sentences can only help on them
    assert result["wer"] <= dev_eval.summary()["wer"]
    assert result["rtf_decoding"] > 0

    assert main([*args, "--alpha", "0.3", "--beam-width", "8", "--json"]) == 0
    settings = json.loads(capsys.readouterr().out)["decoder_settings"]
    assert (settings["alpha"], settings["beta"], settings["beam_width"]) == (
        0.3,
        1.5,
        8,
    )

    assert main([*args[:-1], str(model.parent / "missing.bin")]) == 1
    assert "missing.bin" in capsys.readouterr().err


def _result(i: int, speaker: str | None, ref: str, hyp: str) -> UtteranceResult:
    return UtteranceResult(
        i, f"u{i}", f"u{i}.flac", 1.0, ref, hyp, align_words(ref, hyp),
        char_errors(ref, hyp), speaker=speaker,
    )  # fmt: skip


def test_speaker_interval_resamples_whole_speakers():
    """Errors shared within speakers: two of four speakers get every word, two get
    none. Resampling utterances treats 80 utterances as 80 independent draws; with
    4 speakers the honest interval is far wider, and it is what the speaker
    interval gives."""
    utts = [
        _result(i, f"spk{s}", "a b c d", "a b c d" if s < 2 else "")
        for s in range(4)
        for i in range(s * 20, s * 20 + 20)
    ]
    ev = Evaluation("m.jsonl", "model.ckpt", "greedy", {}, utts)
    s = ev.summary()
    assert s["wer"] == 0.5 and s["speakers"] == 4
    (ulo, uhi), (slo, shi) = s["wer_ci"], s["wer_ci_speakers"]
    assert ulo < 0.5 < uhi and slo <= 0.25 and shi >= 0.75
    assert (shi - slo) > 2 * (uhi - ulo)
    rows = [(r["speaker"], r["utterances"], r["words"], r["wer"])
            for r in s["per_speaker"]]  # fmt: skip
    assert rows == [("spk0", 20, 80, 0.0), ("spk1", 20, 80, 0.0),
                    ("spk2", 20, 80, 1.0), ("spk3", 20, 80, 1.0)]  # fmt: skip
    report = ev.report()
    assert "# speakers: 4; 95% CI resampling whole speakers: WER " in report
    lines = [line for line in report.splitlines() if line.startswith("#   spk")]
    worst_first = ["spk2", "spk3", "spk0", "spk1"]
    assert [line.split()[1] for line in lines] == worst_first

    # one utterance without a speaker: no per-speaker results rather than wrong ones
    utts.append(_result(80, None, "a b", "a b"))
    s = Evaluation("m.jsonl", "model.ckpt", "greedy", {}, utts).summary()
    assert s["speakers"] == 0 and s["per_speaker"] == []
    assert s["wer_ci_speakers"] == [None, None] and s["cer_ci_speakers"] == [None, None]
    header = Evaluation("m.jsonl", "model.ckpt", "greedy", {}, utts).report()
    assert "speakers" not in header.split("# Errors")[0]


def test_per_speaker_results_on_real_speech(espeak_manifests, model, capsys):
    """The three training voices of the espeak corpus, scored by `asr evaluate`:
    per-speaker counts add up to the corpus's, and the summary names the spread."""
    manifest = espeak_manifests["train"]
    assert main(["evaluate", str(manifest), "--checkpoint", str(model), "--json",
                 "--no-report"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    speakers = {u.speaker for u in read_manifest(manifest)}
    assert result["speakers"] == len(speakers) == 3
    rows = result["per_speaker"]
    assert {r["speaker"] for r in rows} == speakers
    assert sum(r["utterances"] for r in rows) == result["utterances"]
    assert sum(r["words"] for r in rows) == result["words"]
    assert sum(r["chars"] for r in rows) == result["chars"]
    errors = sum(round(r["wer"] * r["words"]) for r in rows)
    assert errors == result["errors"]
    lo, hi = result["cer_ci_speakers"]
    assert lo <= result["cer"] <= hi

    assert main(["evaluate", str(manifest), "--checkpoint", str(model),
                 "--no-report"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "3 speakers: CER " in out and "95% CI resampling whole speakers" in out
    # the dev set has one speaker: no interval over speakers is printed
    assert main(["evaluate", str(espeak_manifests["dev"]), "--checkpoint",
                 str(model), "--no-report"]) == 0  # fmt: skip
    assert "speakers" not in capsys.readouterr().out


def test_evaluate_reports_the_seconds_it_measured(
    espeak_manifests, fitted_checkpoint, tmp_path
):
    """A manifest claiming 1e308 s is not believed: the RTF and the durations are
    those of the audio read (the validator names the claim)."""
    from asr.audio import audio_info
    from asr.manifest import write_manifest

    utts = read_manifest(espeak_manifests["dev"])[:2]
    lying = [dataclasses.replace(utts[0], duration=1e308), utts[1]]
    manifest = tmp_path / "lying.jsonl"
    write_manifest(manifest, lying)
    s = evaluate(manifest, fitted_checkpoint).summary()
    real = sum(audio_info(u.audio_filepath).duration for u in utts)
    assert s["audio_seconds"] == pytest.approx(real, abs=1e-3)
    assert s["rtf"] < 10
    assert main(["validate", str(manifest), "--checkpoint", str(fitted_checkpoint)])


def test_evaluate_shows_progress_without_a_terminal(
    espeak_manifests, fitted_checkpoint, monkeypatch
):
    import io

    import asr.posteriors

    monkeypatch.setattr(asr.posteriors, "_PROGRESS_INTERVAL", 0.0)  # every batch
    stream = io.StringIO()
    evaluate(espeak_manifests["dev"], fitted_checkpoint, progress=stream)
    lines = stream.getvalue().splitlines()
    assert lines and all(line.startswith("evaluating: ") for line in lines), lines
    assert lines[-1].split("(")[1].startswith("100%")
    # the default: a line a minute, so a run this short prints none
    monkeypatch.setattr(asr.posteriors, "_PROGRESS_INTERVAL", 60.0)
    stream = io.StringIO()
    evaluate(espeak_manifests["dev"], fitted_checkpoint, progress=stream)
    assert stream.getvalue() == ""
