"""The benchmark scripts under tools/ run and print the tables docs/benchmarks.md
quotes.

Not timed (timings on a shared machine mean nothing in a test): each script runs at a
tiny size, and the test checks that every row it promises is there with numbers in
it, and that a run that measured nothing (a failed child process) fails the script.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"

pytestmark = pytest.mark.slow

NUMBER = r"[0-9]+(?:\.[0-9]+)?"


def run_tool(script: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOLS / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """Cells of the markdown rows whose first cell starts with ``first_cell``."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0].startswith(first_cell):
                rows.append(cells)
    return rows


def test_bench_ctc_prints_one_row_per_shape():
    done = run_tool(
        "bench_ctc.py", "--shapes", "2x40x29", "3x24x10", "--rounds", "1",
        "--warmup", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {tuple(r[:3]): r for r in table_rows(done.stdout, "") if r[0].isdigit()}
    assert set(rows) == {("2", "40", "29"), ("3", "24", "10")}, done.stdout
    for cells in rows.values():
        assert len(cells) == 10
        assert all(re.fullmatch(NUMBER, v) for v in cells[4:]), cells
        ours_ms, native_ms, ratio, mem_ratio = (float(cells[i]) for i in (4, 5, 6, 9))
        assert ours_ms > 0 and native_ms > 0 and ratio > 0 and mem_ratio > 0, cells
    assert re.search(rf"worst time ratio {NUMBER}, worst memory ratio", done.stdout)


def test_bench_ctc_rejects_a_bad_shape():
    done = run_tool("bench_ctc.py", "--shapes", "2x40")
    assert done.returncode == 2
    assert "'2x40': expected BxTxC" in done.stderr


def test_bench_rnn_prints_layer_and_step_rows():
    done = run_tool("bench_rnn.py", "--rounds", "1", "--batches", "1", "--threads", "1")
    assert done.returncode == 0, done.stderr
    layer = table_rows(done.stdout, "GRU layer fwd+bwd")
    step = table_rows(done.stdout, "training step")
    assert len(layer) == 2 and len(step) == 3, done.stdout
    for cells in layer + step:
        assert all(float(v) > 0 for v in cells[1:]), cells


def test_bench_alloc_runs_each_allocator_in_its_own_process():
    from asr.malloc import find_tcmalloc

    if find_tcmalloc() is None:
        pytest.skip("libtcmalloc-minimal4 is not installed (make setup installs it)")
    done = run_tool("bench_alloc.py", "--steps", "2", "--rounds", "1")
    assert done.returncode == 0, done.stderr
    rows = {cells[0]: cells[1:] for cells in table_rows(done.stdout, "")[1:]}
    assert set(rows) == {"glibc", "tcmalloc"}, done.stdout
    for cells in rows.values():
        assert float(cells[0]) > 0 and all(c.endswith(("x", "MB")) for c in cells[1:])
    assert re.search(
        rf"time tcmalloc / glibc \(median of rounds\): {NUMBER}", done.stdout
    )


def test_bench_sampler_times_each_arm(espeak_manifests):
    done = run_tool(
        "bench_sampler.py", "--manifest", str(espeak_manifests["train"]),
        "--rounds", "1", "--chunk", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {cells[0]: cells[1:] for cells in table_rows(done.stdout, "")[1:]}
    assert set(rows) == {"jitter 0.10", "jitter 0.01", "sorted"}, done.stdout
    for padded, per_epoch, speed, ratio in rows.values():
        assert float(padded) >= 1.0 and int(per_epoch) >= 1
        assert speed.endswith("x") and float(ratio) > 0
    assert rows["jitter 0.10"][3] == "1.00"


def test_bench_sampler_compares_batch_sizes(espeak_manifests):
    done = run_tool(
        "bench_sampler.py", "--manifest", str(espeak_manifests["train"]),
        "--rounds", "1", "--chunk", "1", "--sizes", "20x8,10x4",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "| vs 20 s / 8 |" in done.stdout, done.stdout
    rows = {cells[0]: cells[1:] for cells in table_rows(done.stdout, "")[1:]}
    assert set(rows) == {"20 s / 8", "10 s / 4"}, done.stdout
    assert int(rows["10 s / 4"][1]) > int(rows["20 s / 8"][1])  # more, smaller
    assert rows["20 s / 8"][3] == "1.00"
    bad = run_tool("bench_sampler.py", "--sizes", "60x32,60")
    assert bad.returncode == 2 and "'60' is not SECONDSxUTTERANCES" in bad.stderr


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    from conftest import SENTENCES

    from asr.lm import build_lm

    root = tmp_path_factory.mktemp("bench_lm")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES * 3) + "\n")
    return build_lm(corpus, root / "lm.bin", order=3).path


def test_bench_transcribe_prints_its_three_tables(
    fitted_checkpoint, espeak_manifests, tiny_lm
):
    done = run_tool(
        "bench_transcribe.py", "--checkpoint", str(fitted_checkpoint),
        "--inputs", str(espeak_manifests["dev"]), "--limit", "4", "--rounds", "1",
        "--long-seconds", "8", "--lm", str(tiny_lm), "--beam-widths", "4", "8",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "4 files of" in out
    threads = {r[0]: r for r in table_rows(out, "") if r[0] in ("1", "2")}
    assert set(threads) == {"1", "2"}, out
    assert re.search(rf"median {NUMBER} over 1 alternating rounds", out)
    decoding = [r[0] for r in table_rows(out, "") if len(r) == 7 and r[1] != "audio s"]
    assert decoding == [
        "greedy",
        "beam search + lm.bin",
        "8 s file, windows of 30 s",
        "8 s file, one pass",
    ], out
    processes = table_rows(out, "")
    processes = [
        r for r in processes if len(r) == 3 and r[0] != "`asr transcribe` process"
    ]
    labels = [r[0] for r in processes]
    assert labels == [
        "start-up only (`--help`: imports)",
        "greedy",
        "greedy, --threads 2",
        "beam search + LM",
        "8 s file, windows",
        "8 s file, one pass",
    ], out
    for cells in processes:  # the process measured: a wall time and a peak RSS
        assert float(cells[1]) > 0 and float(cells[2]) > 0, cells
    for cells in processes[1:]:  # transcribing loads torch and the model
        assert float(cells[2]) > 100, cells
    # Ours vs stock pyctcdecode, end to end: times, WERs, identical texts, ratio.
    stock = [r for r in table_rows(out, "") if len(r) == 9 and r[0] != "beam"]
    assert [r[0] for r in stock] == ["4", "8"], out
    for cells in stock:
        assert all(re.fullmatch(NUMBER, c) for c in cells[:7] + cells[8:]), cells
        assert cells[7] == "4/4", cells
    assert re.search(
        rf"fresh process .*: ours {NUMBER} s, pyctcdecode {NUMBER} s", out
    ), out


def test_bench_transcribe_stock_only_needs_an_lm():
    done = run_tool("bench_transcribe.py", "--stock-only")
    assert done.returncode == 1 and "give --lm" in done.stderr, done.stderr


def test_bench_memory_rows_and_a_failed_run_fails(fitted_checkpoint, tmp_path):
    done = run_tool(
        "bench_memory.py", "--checkpoint", str(fitted_checkpoint), "--files", "4",
        "--counts", "2", "4", "--batch-seconds", "30", "--workdir", str(tmp_path / "w"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [r for r in table_rows(done.stdout, "") if len(r) == 7 and r[1] == "30"]
    assert [(r[0], r[2]) for r in rows] == [
        ("json, one document", "2"),
        ("json, one document", "4"),
        ("text, one file per input", "2"),
        ("text, one file per input", "4"),
    ], done.stdout
    for cells in rows:
        assert float(cells[5]) > 50 and float(cells[6]) > 0, cells
    # The four text outputs of the largest run were written.
    assert len(list((tmp_path / "w" / "out4").glob("*.txt"))) == 4

    missing = tmp_path / "no-such-model.ckpt"
    done = run_tool(
        "bench_memory.py", "--checkpoint", str(missing), "--files", "2",
        "--counts", "2", "--batch-seconds", "30", "--workdir", str(tmp_path / "w"),
    )  # fmt: skip
    assert done.returncode == 1, done.stdout
    assert "(exit " in done.stdout
    assert "run(s) of asr transcribe failed" in done.stderr
    assert "no-such-model.ckpt" in done.stderr  # the child's own error, shown


def test_bench_decode_against_flashlight(
    fitted_checkpoint, espeak_manifests, tiny_lm, tmp_path
):
    pytest.importorskip("flashlight.lib.text", reason="the bench extra (make bench)")
    done = run_tool(
        "bench_decode.py", "--checkpoint", str(fitted_checkpoint),
        "--manifest", str(espeak_manifests["dev"]), "--lm", str(tiny_lm),
        "--beam-widths", "4", "8", "--rounds", "1", "--alpha", "0.5", "--beta", "1.0",
        "--work-dir", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.search(rf"Greedy .* WER {NUMBER}%", done.stdout), done.stdout
    rows = [r for r in table_rows(done.stdout, "") if len(r) == 10 and r[0] != "beam"]
    pairs = [r for r in rows if r[5].startswith("flashlight")]  # not pyctcdecode's
    assert [(r[0], r[1], r[5]) for r in pairs] == [
        (beam, ours, theirs)
        for beam in ("4", "8")
        for ours, theirs in (
            ("ours + LM", "flashlight lexicon + LM"),
            ("ours + LM", "flashlight lexicon + LM, our candidates"),
            ("ours, no LM", "flashlight lexicon-free, no LM"),
            ("ours, no LM", "flashlight lexicon-free, no LM, our candidates"),
        )
    ], done.stdout
    for cells in pairs:  # WERs of both, times of both, their ratio
        assert all(re.fullmatch(NUMBER, cells[i]) for i in (3, 4, 7, 8, 9)), cells


def test_bench_decode_against_stock_pyctcdecode(
    fitted_checkpoint, espeak_manifests, tiny_lm, tmp_path
):
    done = run_tool(
        "bench_decode.py", "--checkpoint", str(fitted_checkpoint),
        "--manifest", str(espeak_manifests["dev"]), "--lm", str(tiny_lm),
        "--beam-widths", "4", "8", "--rounds", "1", "--alpha", "0.5", "--beta", "1.0",
        "--work-dir", str(tmp_path), "--peers", "pyctcdecode",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "flashlight" not in done.stdout.replace("flashlight-text", "")
    pairs = [r for r in table_rows(done.stdout, "") if len(r) == 10 and r[0] != "beam"]
    assert [(r[0], r[1], r[4]) for r in pairs] == [
        (beam, ours, theirs)
        for beam in ("4", "8")
        for ours, theirs in (
            ("ours + LM", "pyctcdecode + LM"),
            ("ours + LM, pool", "pyctcdecode + LM, pool"),
            ("ours, no LM", "pyctcdecode, no LM"),
        )
    ], done.stdout
    for cells in pairs:  # WERs and times of both, their ratio; pyctcdecode's search
        assert all(re.fullmatch(NUMBER, cells[i]) for i in (2, 3, 5, 6, 9)), cells
        assert cells[7] == cells[8] == "6/6", cells  # same texts, words and times


def test_bench_stream_prints_a_row_per_load_and_arm(espeak_manifests):
    done = run_tool(
        "bench_stream.py", "--random-config", "conf/synthetic/streaming.yaml",
        "--manifest", str(espeak_manifests["dev"]), "--streams", "1", "3",
        "--seconds", "1.5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout, "")
    loads = [(r[0], r[1]) for r in rows if r[0].isdigit()]
    assert loads == [("1", "batch"), ("1", "one by one"), ("3", "batch"),
                     ("3", "one by one")], done.stdout  # fmt: skip
    for cells in rows:
        if cells[0].isdigit():
            assert re.fullmatch(r"\d+/\d+", cells[5]), cells
            numbers = cells[2:5] + cells[6:]
            assert all(re.fullmatch(NUMBER, v) for v in numbers), cells
    assert re.search(rf"N=3: CPU per stream one by one / batch = {NUMBER}", done.stdout)
    assert "shared with other work" in done.stdout
