#!/usr/bin/env python
"""PyTorch against onnxruntime (float32 and dynamic int8) on a test set: speed, peak
memory and WER/CER of each.

The checkpoint is exported (``asr export``, float32 and ``--int8``) into
``--workdir``; the test set's audio is read once into memory. Speed: the test set
is cut into ``--chunks`` groups of utterances; on each group every arm runs in turn
(the order rotating from group to group), in this one process, and the group's
ratio of PyTorch's time to the arm's is recorded; the table gives each arm's
real-time factor over the whole set and the median of the per-group ratios, so a
burst of load from another process on a shared machine moves one group's ratio,
not the median. Times are split into the features (the same torch frontend for
every arm) and the model. WER/CER: greedy decoding of each arm's own log-probs over
the whole set. Peak RSS: each arm again in a fresh process of its own, over the
first ``--rss-utterances`` utterances (``VmHWM``, after loading and running).

``--levers`` then measures, on the first ``--lever-utterances`` utterances and the
same alternating scheme, the settings that could change onnxruntime's speed: the
graph optimization level, intra-op threads (1 or 2, against PyTorch with as many),
thread spinning, and the batch size.

    python tools/bench_export.py [--checkpoint exp/demo/model.ckpt]
        [--manifest data/synthetic/test.jsonl] [--threads 2] [--levers]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from asr.audio import load_audio  # noqa: E402
from asr.data import DurationBatchSampler  # noqa: E402
from asr.decoding import greedy_decode  # noqa: E402
from asr.export import export_model  # noqa: E402
from asr.inference import Recognizer, load_model  # noqa: E402
from asr.manifest import read_manifest  # noqa: E402
from asr.metrics import error_rates  # noqa: E402
from asr.runtime import onnx_session  # noqa: E402

ARMS = ("pytorch", "onnxruntime fp32", "onnxruntime int8")


def make_batches(
    waves: list[torch.Tensor], batch_seconds: float, rate: int
) -> list[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Duration-sorted padded batches as asr transcribe forms them: (indices,
    waves (B, N), lens (B,))."""
    seconds = [len(w) / rate for w in waves]
    out = []
    for batch in DurationBatchSampler(seconds, batch_seconds, shuffle=False):
        idx = [i for i, _ in batch]
        lens = torch.tensor([len(waves[i]) for i in idx])
        padded = torch.zeros(len(idx), int(lens.max()))
        for row, i in enumerate(idx):
            padded[row, : len(waves[i])] = waves[i]
        out.append((idx, padded, lens))
    return out


def run_arm(
    rec: Recognizer, batches: list, hyps: dict[int, str] | None
) -> tuple[float, float]:
    """(feature seconds, model seconds) over ``batches``; fills ``hyps``."""
    t_feat = t_model = 0.0
    with torch.inference_mode():
        for idx, waves, lens in batches:
            t0 = time.perf_counter()
            feats, feat_lens = rec.frontend(waves, lens)
            t1 = time.perf_counter()
            log_probs, out_lens = rec.model(feats, feat_lens)
            t2 = time.perf_counter()
            t_feat, t_model = t_feat + t1 - t0, t_model + t2 - t1
            if hyps is not None:
                ids = greedy_decode(log_probs, out_lens, rec.tokenizer.blank)
                for i, x in zip(idx, ids, strict=True):
                    hyps[i] = rec.tokenizer.decode(x)
    return t_feat, t_model


def alternate(
    arms: dict[str, Recognizer],
    groups: list[list],
    audio_seconds: float,
    hyps: dict[str, dict[int, str]] | None = None,
) -> dict[str, dict[str, float]]:
    """Every arm on every group in turn, order rotating; per arm: real-time factor
    (features + model, and model only) and the median per-group ratio of the first
    arm's time to this arm's."""
    names = list(arms)
    total = {n: [0.0, 0.0] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    model_ratios: dict[str, list[float]] = {n: [] for n in names}
    for g, batches in enumerate(groups):
        times = {}
        for k in range(len(names)):
            name = names[(g + k) % len(names)]
            tf, tm = run_arm(arms[name], batches, hyps[name] if hyps else None)
            times[name] = (tf, tm)
            total[name][0] += tf
            total[name][1] += tm
        base = times[names[0]]
        for n in names:
            ratios[n].append(sum(base) / sum(times[n]))
            model_ratios[n].append(base[1] / times[n][1])
    return {
        n: {
            "rtf": sum(total[n]) / audio_seconds,
            "rtf_model": total[n][1] / audio_seconds,
            "speedup": statistics.median(ratios[n]),
            "speedup_model": statistics.median(model_ratios[n]),
        }
        for n in names
    }


def peak_rss(path: Path, utts: list, threads: int, batch_seconds: float) -> float:
    """Peak RSS (MiB) of a fresh process that loads ``path`` and runs ``utts``."""
    code = (
        "import json, re, sys, torch\n"
        f"sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tools')!r}]\n"
        f"torch.set_num_threads({threads})\n"
        "from bench_export import make_batches, run_arm\n"
        "from asr.audio import load_audio\n"
        "from asr.inference import load_model\n"
        f"rec = load_model({str(path)!r})\n"
        f"utts = json.loads({json.dumps(utts)!r})\n"
        "waves = [load_audio(p, rec.sample_rate) for p in utts]\n"
        f"run_arm(rec, make_batches(waves, {batch_seconds}, rec.sample_rate), None)\n"
        "status = open('/proc/self/status').read()\n"
        "print('VmHWM_kB', re.search(r'VmHWM:\\s+(\\d+)', status).group(1))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT
    )
    found = re.search(r"VmHWM_kB (\d+)", proc.stdout)
    if proc.returncode or not found:
        raise RuntimeError(f"the peak-RSS child for {path} failed:\n{proc.stderr}")
    return int(found.group(1)) / 1024


def with_session(rec: Recognizer, path: Path, **options) -> Recognizer:
    """``rec`` (an ONNX recognizer) with a session built with other options."""
    rec.model.runner = onnx_session(path, **options)
    return rec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="exp/demo/model.ckpt")
    parser.add_argument("--manifest", default="data/synthetic/test.jsonl")
    parser.add_argument("--utterances", type=int, help="the first N only")
    parser.add_argument("--threads", type=int, default=1, help="as asr transcribe")
    parser.add_argument("--batch-seconds", type=float, default=300.0)
    parser.add_argument("--chunks", type=int, default=9)
    parser.add_argument("--rss-utterances", type=int, default=200)
    parser.add_argument("--levers", action="store_true")
    parser.add_argument("--lever-utterances", type=int, default=240)
    parser.add_argument("--workdir", type=Path, help="where the exports go")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_export."))
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    paths = {"pytorch": Path(args.checkpoint)}
    for name, file, int8 in (
        ("onnxruntime fp32", "model.onnx", False),
        ("onnxruntime int8", "model.int8.onnx", True),
    ):
        out = export_model(args.checkpoint, work / file, int8=int8)
        paths[name] = out.path
        print(
            f"exported {out.path} ({out.bytes / 1e6:.1f} MB) in {out.seconds:.0f} s: "
            f"max |log-prob diff| {out.max_abs_diff:.2g} on the check batch",
            file=sys.stderr,
        )
    arms = {name: load_model(p) for name, p in paths.items()}
    rate = arms["pytorch"].sample_rate
    utts = read_manifest(args.manifest)[: args.utterances]
    waves = [load_audio(u.audio_filepath, rate, u.offset, u.duration) for u in utts]
    audio = sum(len(w) for w in waves) / rate
    refs = [u.text for u in utts]

    def groups_of(indices: list[int], n: int, batch_seconds: float) -> list[list]:
        out = []
        for g in range(n):
            part = indices[g::n]  # every n-th: each group spans all lengths
            batches = make_batches([waves[i] for i in part], batch_seconds, rate)
            out.append([([part[j] for j in idx], w, ln) for idx, w, ln in batches])
        return out

    # warm-up: one group, every arm (allocators, onnxruntime's first run)
    everything = list(range(len(utts)))
    warm = groups_of(everything[: max(1, len(utts) // 20)], 1, args.batch_seconds)
    alternate(arms, warm, 1.0)
    hyps: dict[str, dict[int, str]] = {n: {} for n in arms}
    result = alternate(
        arms, groups_of(everything, args.chunks, args.batch_seconds), audio, hyps
    )
    print(
        f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end; "
        f"torch {torch.__version__}, onnxruntime {_ort_version()}; {args.threads} "
        f"threads; {len(utts)} utterances, {audio:.0f} s of audio; batches of at "
        f"most {args.batch_seconds:g} s of padded audio; {args.chunks} groups\n"
    )
    print(
        "| arm | RTF (features + model) | speed-up vs PyTorch, median | RTF (model) "
        "| model speed-up, median | peak RSS MiB | WER % | CER % |"
    )
    print("|---|---|---|---|---|---|---|---|")
    subset = [u.audio_filepath for u in utts[: args.rss_utterances]]
    for name, r in result.items():
        rss = peak_rss(paths[name], subset, args.threads, args.batch_seconds)
        words, chars = error_rates(refs, [hyps[name][i] for i in everything])
        print(
            f"| {name} | {r['rtf']:.4f} | {r['speedup']:.2f} | {r['rtf_model']:.4f} "
            f"| {r['speedup_model']:.2f} | {rss:.0f} | {100 * words.rate:.2f} "
            f"| {100 * chars.rate:.2f} |",
            flush=True,
        )
    if args.levers:
        levers(args, paths, waves, groups_of, rate)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def levers(args, paths, waves, groups_of, rate) -> None:
    """onnxruntime's settings and the batch size, each against PyTorch."""
    first = list(range(min(args.lever_utterances, len(waves))))
    audio = sum(len(waves[i]) for i in first) / rate
    fp32 = paths["onnxruntime fp32"]
    print(
        f"\nlevers: first {len(first)} utterances, {audio:.0f} s; median per-group "
        "speed-up of each onnxruntime setting against PyTorch on the same groups\n"
    )
    print("| lever | setting | PyTorch RTF | onnxruntime RTF | speed-up, median |")
    print("|---|---|---|---|---|")

    def row(lever: str, setting: str, threads: int, batch: float, **options) -> None:
        torch.set_num_threads(threads)
        torch_rec = load_model(paths["pytorch"])
        ort_rec = with_session(load_model(fp32), fp32, threads=threads, **options)
        arms = {"pytorch": torch_rec, "ort": ort_rec}
        alternate(arms, groups_of(first[:20], 1, batch), 1.0)  # warm-up
        r = alternate(arms, groups_of(first, 5, batch), audio)
        print(
            f"| {lever} | {setting} | {r['pytorch']['rtf']:.4f} "
            f"| {r['ort']['rtf']:.4f} | {r['ort']['speedup']:.2f} |",
            flush=True,
        )

    t, b = args.threads, args.batch_seconds
    for level in ("disable", "basic", "extended", "all"):
        row("graph optimization", level, t, b, optimization=level)
    for threads in (1, 2):
        row("threads (intra-op, and torch's)", str(threads), threads, b)
    row("thread spinning", "off", t, b, spinning=False)
    for batch in (5.0, 30.0, 100.0, 300.0):
        row("batch (seconds of padded audio)", f"{batch:g}", t, batch)
    torch.set_num_threads(t)
    recurrent_form(load_model(paths["pytorch"]), t, args.workdir)


def recurrent_form(rec: Recognizer, threads: int, work: Path) -> None:
    """onnxruntime's GRU operator against an ONNX Loop of the same equations (the
    input projections of all steps as one MatMul, then per step one MatMul and the
    gates), on one direction of the model's first recurrent layer, 150 frames (4.5
    s) of a batch of 32."""
    import warnings

    import numpy as np

    rnn = rec.model.rnns[0]
    if not isinstance(rnn, torch.nn.GRU):
        return
    W_ih, b_ih = rnn.weight_ih_l0.detach(), rnn.bias_ih_l0.detach()
    w_hh_t, b_hh = rnn.weight_hh_l0.detach().t().contiguous(), rnn.bias_hh_l0.detach()
    one = torch.nn.GRU(rnn.input_size, rnn.hidden_size).eval()
    one.load_state_dict(
        {k: v for k, v in rnn.state_dict().items() if "reverse" not in k}
    )

    class OpForm(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = one  # a submodule: its weights are the graph's initializers

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.gru(x)[0]

    class LoopForm(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return _recur(torch.nn.functional.linear(x, W_ih, b_ih), w_hh_t, b_hh)

    x = torch.randn(150, 32, rnn.input_size)
    sessions = {}
    for name, module in (("GRU operator", OpForm()), ("Loop", LoopForm())):
        path = (work or Path(tempfile.mkdtemp())) / f"rnn_{name[:4]}.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (x,), path, dynamo=False, opset_version=17,
                input_names=["x"], output_names=["y"],
                dynamic_axes={"x": {0: "T", 1: "B"}, "y": {0: "T", 1: "B"}},
            )  # fmt: skip
        sessions[name] = onnx_session(path, threads=threads)
    feed = {"x": x.numpy()}
    ref = sessions["GRU operator"].run(None, feed)[0]
    diff = float(np.abs(sessions["Loop"].run(None, feed)[0] - ref).max())
    times: dict[str, list[float]] = {n: [] for n in sessions}
    for _ in range(7):
        for name, session in sessions.items():
            t0 = time.perf_counter()
            session.run(None, feed)
            times[name].append(time.perf_counter() - t0)
    ratio = statistics.median(
        [a / b for a, b in zip(times["Loop"], times["GRU operator"], strict=True)]
    )
    print(
        f"\nrecurrent form, one direction of layer 1 ({rnn.input_size} -> "
        f"{rnn.hidden_size}), 150 frames x 32: GRU operator "
        f"{1000 * statistics.median(times['GRU operator']):.1f} ms, Loop "
        f"{1000 * statistics.median(times['Loop']):.1f} ms (median ratio Loop / "
        f"operator {ratio:.2f}; outputs within {diff:.1g})"
    )


@torch.jit.script
def _recur(gi: torch.Tensor, w_hh_t: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    """PyTorch's GRU recurrence as a TorchScript loop (exported as an ONNX Loop)."""
    H = w_hh_t.shape[0]
    h = torch.zeros(gi.shape[1], H, dtype=gi.dtype)
    outs = torch.zeros(gi.shape[0], gi.shape[1], H, dtype=gi.dtype)
    for t in range(gi.shape[0]):
        gh = torch.matmul(h, w_hh_t) + b_hh
        g = gi[t]
        r = torch.sigmoid(g[:, :H] + gh[:, :H])
        z = torch.sigmoid(g[:, H : 2 * H] + gh[:, H : 2 * H])
        n = torch.tanh(g[:, 2 * H :] + r * gh[:, 2 * H :])
        h = n + z * (h - n)
        outs[t] = h
    return outs


if __name__ == "__main__":
    main()
