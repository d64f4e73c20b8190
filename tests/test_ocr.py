"""Text recognition in images (asr.ocr): the generated data sets are functions of
their seed, images that cannot be read are named and skipped, the CRNN's shapes,
the scores, the checkpoint round trip, and `asr ocr recognize` / `evaluate`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from asr.cli import main
from asr.inference import CheckpointError
from asr.ocr.images import (
    CAPTCHA_ALPHABET,
    LINE_ALPHABET,
    ImageError,
    captcha_sample,
    generate_set,
    line_sample,
    read_image,
    read_manifest,
)
from asr.ocr.model import CRNN, CRNNConfig
from asr.ocr.recognize import evaluate_ocr, load_ocr_model, recognize_images
from asr.ocr.task import OCRBatch, OCRTask, collate, score
from asr.ocr.train import save_ocr_model


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def test_a_captcha_is_a_function_of_seed_split_and_index():
    a, text_a = captcha_sample(0, "train", 7)
    b, text_b = captcha_sample(0, "train", 7)
    assert text_a == text_b and np.array_equal(pixels(a), pixels(b))
    assert a.size == (160, 60)
    others = [
        captcha_sample(s, sp, i) for s, sp, i in [(1, "train", 7), (0, "test", 7)]
    ]
    assert all(not np.array_equal(pixels(a), pixels(im)) for im, _ in others)
    texts = [captcha_sample(0, "train", i)[1] for i in range(40)]
    assert all(4 <= len(t) <= 6 and set(t) <= set(CAPTCHA_ALPHABET) for t in texts)
    assert {len(t) for t in texts} == {4, 5, 6}


def test_the_captcha_package_is_left_drawing_from_secrets():
    import secrets

    import captcha.image

    captcha_sample(0, "train", 0)
    assert captcha.image.secrets is secrets


def test_a_text_line_is_a_function_of_seed_split_and_index():
    a, text_a = line_sample(3, "dev", 2)
    b, text_b = line_sample(3, "dev", 2)
    assert text_a == text_b and np.array_equal(pixels(a), pixels(b))
    c, text_c = line_sample(3, "dev", 3)
    assert text_c != text_a
    texts = [line_sample(3, "dev", i)[1] for i in range(30)]
    assert all(set(t) <= set(LINE_ALPHABET) and t == t.strip() for t in texts)
    assert {len(t.split()) for t in texts} == {1, 2, 3, 4}
    # ink darker than paper: after inversion, the text is the bright part
    x = 255 - pixels(a.convert("L")).astype(int)
    assert x.max() > 100 and np.median(x) < x.max() / 2


def test_a_set_is_the_same_whatever_the_number_of_jobs(tmp_path):
    one = generate_set(tmp_path / "one", "lines", 6, seed=5, split="test", jobs=1)
    two = generate_set(tmp_path / "two", "lines", 6, seed=5, split="test", jobs=2)
    assert one.read_text() == two.read_text()
    for sample in read_manifest(one):
        twin = two.parent / sample.image_filepath.name
        assert sample.image_filepath.read_bytes() == twin.read_bytes()
    assert [s.text for s in read_manifest(one)] == [
        line_sample(5, "test", i)[1] for i in range(6)
    ]


def test_an_interrupted_set_is_completed_keeping_what_was_drawn(tmp_path):
    whole = generate_set(tmp_path / "whole", "captcha", 5, seed=1, split="dev")
    part = generate_set(tmp_path / "part", "captcha", 3, seed=1, split="dev")
    kept = (part.parent / "000001.png").stat().st_mtime_ns
    (part.parent / "000002.png").unlink()  # as if the run stopped here
    part = generate_set(tmp_path / "part", "captcha", 5, seed=1, split="dev")
    assert (part.parent / "000001.png").stat().st_mtime_ns == kept
    assert part.read_text() == whole.read_text()
    for i in range(5):
        name = f"{i:06d}.png"
        assert (part.parent / name).read_bytes() == (whole.parent / name).read_bytes()


def test_read_image_scales_to_the_height_and_inverts(tmp_path):
    image, _ = captcha_sample(0, "train", 1)
    image.save(tmp_path / "c.png")
    x = read_image(tmp_path / "c.png", 32, 96)
    assert x.shape == (32, 96) and x.dtype == np.uint8
    assert read_image(tmp_path / "c.png", 32).shape == (32, round(160 * 32 / 60))
    Image.new("L", (50, 10), 255).save(tmp_path / "white.jpg")
    assert read_image(tmp_path / "white.jpg", 32).max() < 5  # background -> 0


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: p.write_text("not a picture\n"), "not an image"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: Image.new("L", (8000, 6000)).save(p, format="png"), "limit"),
        (lambda p: Image.new("L", (9000, 20)).save(p, format="png"), "not one line"),
        (lambda p: p.write_bytes(_png(60, 40)[:80]), "damaged"),
        (lambda p: p.mkdir(), "not a file"),
        (lambda p: None, "cannot read"),
    ],
)
def test_a_bad_image_is_named_with_its_problem(tmp_path, make, problem):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(ImageError) as err:
        read_image(path, 32)
    message = str(err.value)
    assert str(path) in message and problem in message, message
    assert "\n" not in message


def _png(w: int, h: int) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w), np.uint8)).save(
        buffer, format="png"
    )
    return buffer.getvalue()


def test_a_manifest_line_that_is_not_a_sample_is_named(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"image_filepath": "a.png", "text": "AB"}\n{"text": 3}\n')
    with pytest.raises(ImageError, match=r"m\.jsonl:2: expected"):
        read_manifest(path)


def test_the_crnn_gives_a_frame_per_four_columns():
    model = CRNN(CRNNConfig(height=32, channels=(4, 8, 8, 8), hidden_size=8))
    model.eval()
    images = torch.rand(3, 1, 32, 96)
    log_probs, out_lens = model(images, torch.tensor([96, 61, 30]))
    assert log_probs.shape == (24, 3, 37)
    assert out_lens.tolist() == [24, 15, 7]
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(24, 3), atol=1e-5)
    # the backward LSTM starts at each image's last frame: columns beyond the
    # convolutions' reach (26 columns) from it change none of its valid frames
    images2 = images.clone()
    images2[1, :, :, 88:] = torch.rand(1, 32, 8)
    again, _ = model(images2, torch.tensor([96, 61, 30]))
    assert torch.allclose(again[:15, 1], log_probs[:15, 1], atol=1e-6)
    with pytest.raises(ValueError, match="32 pixels high"):
        model(torch.rand(1, 1, 48, 96), torch.tensor([96]))


def test_score_counts_sequences_and_characters():
    result = score(["AB12", "XYZ9", "QQ"], ["AB12", "XY9", "QQQ"])
    assert result["correct"] == 1 and result["images"] == 3
    assert result["sequence_accuracy"] == pytest.approx(1 / 3)
    assert (result["deletions"], result["insertions"]) == (1, 1)
    assert result["cer"] == pytest.approx(2 / 10)


def captcha_task(impl: str) -> OCRTask:
    """The CAPTCHA configuration's model (conf/ocr/captcha.yaml), seeded."""
    torch.manual_seed(0)
    model = {"channels": [16, 32, 64, 64], "hidden_size": 96, "dropout": 0.0}
    return OCRTask(CAPTCHA_ALPHABET, 32, 96, model, ctc_impl=impl)


def check_ocr_steps(device: str, steps: int = 3) -> None:
    """``steps`` AdamW steps of the CAPTCHA model with our CTC loss on ``device``
    against torch's ctc_loss on the CPU, the same weights and batches: the losses
    within 1e-3 at every step and the first step's gradients alike (cosine >
    0.999)."""
    rng = np.random.default_rng(0)
    batches = [
        collate(
            [
                (
                    rng.integers(0, 255, (32, 96), np.uint8),
                    list(rng.integers(1, 37, n)),
                    "",
                )
                for n in (4, 5, 6, 6, 5, 4, 4, 6)
            ]
        )
        for _ in range(steps)
    ]
    runs = {}
    for impl, dev in (("torch", "cpu"), ("asr", device)):
        task = captcha_task(impl).to(dev).train()
        opt = torch.optim.AdamW(task.parameters(), lr=3e-3)
        losses, first = [], None
        for b in batches:
            b = OCRBatch(*(x.to(dev) if torch.is_tensor(x) else x for x in b))
            loss, _, _ = task._loss(b)
            opt.zero_grad()
            loss.backward()
            if first is None:
                first = torch.cat([p.grad.flatten().cpu() for p in task.parameters()])
            opt.step()
            losses.append(float(loss.detach()))
        runs[impl] = (losses, first)
    (ref, g_ref), (ours, g_ours) = runs["torch"], runs["asr"]
    assert ours == pytest.approx(ref, rel=1e-3), (ours, ref)
    assert ours[-1] < ours[0]
    cosine = torch.nn.functional.cosine_similarity(g_ours, g_ref, dim=0)
    assert cosine > 0.999, float(cosine)


def test_the_captcha_model_steps_alike_with_our_ctc_and_torchs_on_the_cpu():
    check_ocr_steps("cpu")


@pytest.mark.cuda
def test_the_captcha_model_steps_on_cuda_with_our_ctc_as_on_the_cpu_with_torchs():
    check_ocr_steps("cuda")


@pytest.fixture
def untrained_model(tmp_path) -> Path:
    torch.manual_seed(0)
    task = OCRTask(
        CAPTCHA_ALPHABET, 32, 96, {"channels": [4, 8, 8, 8], "hidden_size": 8}
    )
    return save_ocr_model(task, tmp_path / "model.ckpt")


def test_a_saved_model_reads_the_same_as_the_task(untrained_model, tmp_path):
    model = load_ocr_model(untrained_model)
    paths = []
    for i in range(3):
        image, _ = captcha_sample(1, "test", i)
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    got = list(recognize_images(paths, model, batch_size=2))
    assert [p for p, _ in got] == paths
    assert all(isinstance(t, str) and set(t) <= set(CAPTCHA_ALPHABET) for _, t in got)
    alone = [t for _, t in recognize_images(paths[2:], model)]
    assert alone == [got[2][1]]


def test_a_file_that_is_not_an_ocr_model_is_refused(tmp_path):
    bad = tmp_path / "m.ckpt"
    bad.write_text("hello")
    with pytest.raises(CheckpointError, match=r"m\.ckpt: not a loadable"):
        load_ocr_model(bad)
    torch.save({"asr": {}, "model": {}}, bad)
    with pytest.raises(CheckpointError, match="asr transcribe"):
        load_ocr_model(bad)


def test_recognize_names_a_bad_image_and_reads_the_others(
    untrained_model, tmp_path, capsys
):
    good = []
    for i in range(2):
        good.append(tmp_path / f"g{i}.png")
        captcha_sample(2, "test", i)[0].save(good[-1])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    args = [str(good[0]), str(empty), str(good[1])]
    code = main(["ocr", "recognize", *args, "--checkpoint", str(untrained_model)])
    out, err = capsys.readouterr()
    assert code == 1
    lines = out.split("\n")[:-1]
    assert len(lines) == 3 and lines[1] == ""  # one line per image, in order
    model = load_ocr_model(untrained_model)
    assert [lines[0], lines[2]] == [t for _, t in recognize_images(good, model)]
    assert err.strip().splitlines() == [f"asr ocr recognize: {empty}: empty file"]


def test_evaluate_scores_a_manifest_and_counts_a_bad_image_as_unread(
    untrained_model, tmp_path, capsys
):
    manifest = generate_set(tmp_path / "set", "captcha", 4, seed=0, split="test")
    first = read_manifest(manifest)[0]
    first.image_filepath.write_text("garbage")
    code = main(
        [
            "ocr",
            "evaluate",
            str(manifest),
            "--checkpoint",
            str(untrained_model),
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0
    result = json.loads(out)
    assert result["images"] == 4 and len(result["failed"]) == 1
    assert str(first.image_filepath) in err and "not an image" in err
    direct = evaluate_ocr(manifest, load_ocr_model(untrained_model))
    assert direct["cer"] == result["cer"]
    # the unread image counts as all its characters deleted
    assert result["deletions"] >= len(first.text)
    code = main(
        [
            "ocr",
            "evaluate",
            str(manifest),
            "--checkpoint",
            str(untrained_model),
            "--strict",
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 3 and re.search(r"sequence accuracy [\d.]+%", out)
