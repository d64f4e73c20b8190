"""Our CTC loss against torch's, brute force, hand-worked examples and the edge cases
where CTC implementations have failed before."""

from __future__ import annotations

import itertools
import math

import op_counts
import pytest
import torch
import torch.nn.functional as F

import asr.ctc.loss as ctc_loss_module
import asr.ctc.recursion as recursion
from asr.ctc import CTCLoss, ctc_loss, resolve_ctc_loss

F64 = torch.float64


def random_batch(
    seed: int,
    T: int,
    B: int,
    C: int,
    L: int,
    dtype: torch.dtype = F64,
    spread: float = 1.0,
    blank: int = 0,
    repeats: bool = False,
):
    """Random log-probs ``(T, B, C)``, padded targets and lengths (feasible)."""
    g = torch.Generator().manual_seed(seed)
    log_probs = (torch.randn(T, B, C, generator=g, dtype=F64) * spread).log_softmax(-1)
    # At most T // 2 labels: even all-repeated targets then fit in T frames.
    target_lengths = torch.randint(0, L + 1, (B,), generator=g).clamp(max=T // 2)
    labels = [c for c in range(C) if c != blank]
    idx = torch.randint(0, len(labels), (B, max(L, 1)), generator=g)
    targets = torch.tensor(labels)[idx]
    if repeats:  # make neighbours equal often: the no-skip rule matters
        copy = torch.rand(B, max(L, 1), generator=g) < 0.5
        targets[:, 1:] = torch.where(copy[:, 1:], targets[:, :-1], targets[:, 1:])
    inside = torch.arange(1, targets.shape[1])[None, :] < target_lengths[:, None]
    need = target_lengths + ((targets[:, 1:] == targets[:, :-1]) & inside).sum(1)
    input_lengths = torch.maximum(torch.randint(0, T + 1, (B,), generator=g), need)
    input_lengths[0] = T
    return log_probs.to(dtype), targets, input_lengths, target_lengths


def loss_and_grad(fn, log_probs, *args, **kwargs):
    lp = log_probs.detach().clone().requires_grad_()
    loss = fn(lp, *args, **kwargs)
    (grad,) = torch.autograd.grad(loss.sum(), lp)
    return loss.detach(), grad


def assert_matches_torch(log_probs, targets, il, tl, rtol=1e-9, **kwargs):
    ours, g_ours = loss_and_grad(ctc_loss, log_probs, targets, il, tl, **kwargs)
    ref, g_ref = loss_and_grad(F.ctc_loss, log_probs, targets, il, tl, **kwargs)
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=rtol)
    scale = g_ref.abs().max().clamp(min=1.0)
    torch.testing.assert_close(g_ours / scale, g_ref / scale, rtol=rtol, atol=rtol)


# -------------------------------------------------------------------------------------
# Against torch's native implementation


@pytest.mark.parametrize("seed", range(24))
def test_matches_torch_float64_random_batches(seed):
    g = torch.Generator().manual_seed(1000 + seed)
    T = int(torch.randint(1, 60, (1,), generator=g))
    B = int(torch.randint(1, 7, (1,), generator=g))
    C = int(torch.randint(2, 12, (1,), generator=g))
    L = int(torch.randint(0, max(1, T // 2) + 1, (1,), generator=g))
    batch = random_batch(seed, T, B, C, L, repeats=seed % 2 == 1)
    assert_matches_torch(*batch, reduction="none")


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_reductions_match_torch(reduction):
    assert_matches_torch(*random_batch(1, 40, 5, 7, 12), reduction=reduction)


def test_concatenated_targets_match_padded():
    lp, targets, il, tl = random_batch(2, 30, 4, 6, 10)
    concat = torch.cat([targets[b, : tl[b]] for b in range(len(tl))])
    assert concat.dim() == 1
    padded, gp = loss_and_grad(ctc_loss, lp, targets, il, tl, reduction="none")
    flat, gf = loss_and_grad(ctc_loss, lp, concat, il, tl, reduction="none")
    assert torch.equal(padded, flat) and torch.equal(gp, gf)
    assert_matches_torch(lp, concat, il, tl, reduction="sum")


def test_lengths_as_lists_and_tensors():
    lp, targets, il, tl = random_batch(3, 20, 3, 5, 6)
    a = ctc_loss(lp, targets, il, tl, reduction="none")
    b = ctc_loss(lp, targets, il.tolist(), tuple(tl.tolist()), reduction="none")
    assert torch.equal(a, b)


def test_unbatched_input():
    lp, targets, il, tl = random_batch(4, 25, 1, 6, 8)
    tgt = targets[0, : tl[0]]
    ours = ctc_loss(lp[:, 0], tgt, il[:1], tl[:1], reduction="none")
    ref = F.ctc_loss(lp[:, 0], tgt, il[:1], tl[:1], reduction="none")
    assert ours.shape == ref.shape == ()
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("blank", [3, 6])
def test_blank_other_than_zero(blank):
    assert_matches_torch(*random_batch(5, 30, 4, 7, 9, blank=blank), blank=blank)


def test_module_and_switching_by_name():
    lp, targets, il, tl = random_batch(6, 30, 3, 6, 8)
    module = CTCLoss(blank=0, reduction="sum", zero_infinity=True)
    assert "reduction='sum'" in repr(module)
    expected = ctc_loss(lp, targets, il, tl, reduction="sum", zero_infinity=True)
    assert torch.equal(module(lp, targets, il, tl), expected)
    for name in ("asr", "torch"):
        fn = resolve_ctc_loss(name)
        torch.testing.assert_close(
            fn(lp, targets, il, tl), F.ctc_loss(lp, targets, il, tl), rtol=1e-9, atol=0
        )
    with pytest.raises(ValueError, match="unknown CTC implementation 'warp'"):
        resolve_ctc_loss("warp")


# -------------------------------------------------------------------------------------
# From first principles


def brute_force(log_probs: torch.Tensor, target: list[int], blank: int = 0):
    """-log P(target) and occupancies by enumerating every path (Graves 2006, Eq. 2-3).

    Args:
        log_probs: ``(T, C)`` float64.
    Returns:
        ``(nll, occupancy (T, C))``.
    """
    T, C = log_probs.shape
    probs = log_probs.exp()
    total = 0.0
    occ = torch.zeros(T, C, dtype=F64)
    for path in itertools.product(range(C), repeat=T):
        collapsed = [k for k, _ in itertools.groupby(path)]
        if [k for k in collapsed if k != blank] != target:
            continue
        p = math.prod(float(probs[t, k]) for t, k in enumerate(path))
        total += p
        for t, k in enumerate(path):
            occ[t, k] += p
    return -math.log(total), occ / total


@pytest.mark.parametrize(
    ("T", "target"),
    [
        (1, [1]),
        (2, [1]),
        (3, [1, 1]),
        (4, [1, 2]),
        (5, [2, 2, 1]),
        (5, []),
        (4, [1, 2, 1]),
    ],
)
def test_brute_force_enumeration(T, target):
    C = 3
    g = torch.Generator().manual_seed(T * 10 + len(target))
    log_probs = torch.randn(T, C, generator=g, dtype=F64).log_softmax(-1)
    nll, occ = brute_force(log_probs, target)
    lp = log_probs[:, None, :]
    tgt = torch.tensor([target + [1]])  # padded by one
    loss, grad = loss_and_grad(ctc_loss, lp, tgt, [T], [len(target)], reduction="sum")
    assert loss.item() == pytest.approx(nll, rel=1e-12)
    # torch's convention: d loss / d log_probs = exp(log_probs) - occupancy
    torch.testing.assert_close(
        grad[:, 0], log_probs.exp() - occ, rtol=1e-10, atol=1e-12
    )


def test_worked_examples_by_hand():
    """Small cases worked out on paper from the definition of CTC (Graves 2006, 3.1)."""
    # Two frames, target "a" (class 1): paths "aa", "a-", "-a".
    y = torch.tensor([[0.4, 0.6], [0.3, 0.7]], dtype=F64)
    p = 0.6 * 0.7 + 0.6 * 0.3 + 0.4 * 0.7  # = 0.88
    loss = ctc_loss(y.log()[:, None], torch.tensor([[1]]), [2], [1], reduction="sum")
    assert loss.item() == pytest.approx(-math.log(p), rel=1e-14)
    # Three frames, target "aa": the blank between the two a's is forced: "a-a" only.
    y = torch.tensor([[0.2, 0.8], [0.5, 0.5], [0.1, 0.9]], dtype=F64)
    loss = ctc_loss(y.log()[:, None], torch.tensor([[1, 1]]), [3], [2], reduction="sum")
    assert loss.item() == pytest.approx(-math.log(0.8 * 0.5 * 0.9), rel=1e-14)
    # Two frames cannot hold "aa": infeasible.
    loss = ctc_loss(
        y.log()[:2, None], torch.tensor([[1, 1]]), [2], [2], reduction="sum"
    )
    assert math.isinf(loss.item())


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_gradcheck_through_log_softmax(reduction):
    """Our gradient (torch's convention) is the exact one once it flows through
    log_softmax, the normalisation that defines CTC's inputs."""
    lp, targets, il, tl = random_batch(7, 12, 3, 5, 4, repeats=True)
    logits = lp.detach().clone().requires_grad_()

    def f(x):
        return ctc_loss(x.log_softmax(-1), targets, il, tl, reduction=reduction)

    assert torch.autograd.gradcheck(f, (logits,), eps=1e-6, atol=1e-7)


# -------------------------------------------------------------------------------------
# Properties


def test_bitwise_deterministic():
    batch = random_batch(8, 120, 8, 29, 40, dtype=torch.float32, repeats=True)
    first = loss_and_grad(ctc_loss, *batch, reduction="none")
    for _ in range(3):
        again = loss_and_grad(ctc_loss, *batch, reduction="none")
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_atomic_free_path_agrees(monkeypatch):
    """The fold used on CUDA (no floating-point atomics) gives the CPU fold's result
    bit for bit: the same additions in the same order."""
    batch = random_batch(9, 50, 6, 5, 20, repeats=True)  # many repeated classes
    expected = loss_and_grad(ctc_loss, *batch, reduction="none")
    monkeypatch.setattr(recursion, "_atomic_free", lambda device: True)
    got = loss_and_grad(ctc_loss, *batch, reduction="none")
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])


def test_log_space_path_agrees_with_rescaled_path():
    lp, targets, il, tl = random_batch(10, 60, 5, 8, 20, repeats=True)
    padded = targets
    args = (lp, padded, il, tl, 0)
    nll_r, grad_r, ok = recursion.forward_backward(*args, False, True)
    nll_l, grad_l, _ = recursion.forward_backward(*args, True, True)
    assert ok.all()
    torch.testing.assert_close(nll_r, nll_l, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad_r, grad_l, rtol=1e-10, atol=1e-12)


def test_no_grad_gives_same_loss():
    batch = random_batch(11, 40, 4, 6, 10)
    with torch.no_grad():
        plain = ctc_loss(*batch, reduction="none")
    assert torch.equal(plain, loss_and_grad(ctc_loss, *batch, reduction="none")[0])


def test_backward_twice_through_a_retained_graph():
    lp, targets, il, tl = random_batch(12, 20, 2, 5, 5)
    x = lp.clone().requires_grad_()
    loss = ctc_loss(x, targets, il, tl)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    assert torch.equal(x.grad, 2 * first)


def test_upstream_weights_scale_each_sample():
    lp, targets, il, tl = random_batch(13, 30, 3, 6, 8)
    w = torch.tensor([0.5, -2.0, 3.0], dtype=F64)
    x = lp.clone().requires_grad_()
    (ctc_loss(x, targets, il, tl, reduction="none") * w).sum().backward()
    y = lp.clone().requires_grad_()
    (F.ctc_loss(y, targets, il, tl, reduction="none") * w).sum().backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-9, atol=1e-12)


# -------------------------------------------------------------------------------------
# Edge cases


def test_repeated_labels_need_a_blank_between():
    lp = torch.randn(6, 2, 4, dtype=F64).log_softmax(-1)
    targets = torch.tensor([[2, 2, 2], [1, 2, 1]])
    # "222" needs 5 frames, "121" needs 3
    for frames in range(0, 7):
        assert_matches_torch(
            lp, targets, [frames, frames], [3, 3], reduction="none", zero_infinity=True
        )
    loss = ctc_loss(lp, targets, [4, 4], [3, 3], reduction="none")
    assert math.isinf(loss[0].item()) and math.isfinite(loss[1].item())


def test_padded_frames_are_never_read():
    lp, targets, il, tl = random_batch(14, 40, 5, 7, 10)
    il = torch.tensor([40, 33, 17, 25, 8])
    tl = tl.clamp(max=il // 2)
    dirty = lp.clone()
    for b, n in enumerate(il.tolist()):
        dirty[n:, b] = float("nan")
    clean_loss, clean_grad = loss_and_grad(
        ctc_loss, lp, targets, il, tl, reduction="none"
    )
    loss, grad = loss_and_grad(ctc_loss, dirty, targets, il, tl, reduction="none")
    assert torch.equal(loss, clean_loss)
    assert torch.equal(grad, clean_grad)
    assert torch.isfinite(grad).all()
    for b, n in enumerate(il.tolist()):
        assert (grad[n:, b] == 0).all()
    assert_matches_torch(lp, targets, il, tl, reduction="none")


def test_empty_targets():
    lp = torch.randn(10, 3, 5, dtype=F64).log_softmax(-1)
    targets = torch.zeros(3, 0, dtype=torch.long)
    assert_matches_torch(lp, targets, [10, 4, 1], [0, 0, 0], reduction="none")
    loss = ctc_loss(lp, targets, [10, 4, 1], [0, 0, 0], reduction="none")
    torch.testing.assert_close(loss[1], -lp[:4, 1, 0].sum(), rtol=1e-14, atol=0)


def test_zero_length_inputs():
    lp = torch.randn(5, 3, 4, dtype=F64).log_softmax(-1)
    targets = torch.tensor([[1, 2], [1, 2], [3, 1]])
    loss, grad = loss_and_grad(
        ctc_loss,
        lp,
        targets,
        [0, 0, 5],
        [0, 2, 2],
        reduction="none",
        zero_infinity=True,
    )
    assert loss[0].item() == 0.0 and loss[1].item() == 0.0  # P(empty | nothing) = 1
    assert (grad[:, :2] == 0).all()
    plain = ctc_loss(lp, targets, [0, 0, 5], [0, 2, 2], reduction="none")
    assert plain[0].item() == 0.0 and math.isinf(plain[1].item())
    # A batch whose longest input is empty.
    none = ctc_loss(lp[:0], targets, [0, 0, 0], [0, 1, 0], reduction="none")
    assert none.tolist() == [0.0, math.inf, 0.0]


def test_infeasible_pairs_alone_are_infinite_or_zeroed():
    lp, targets, il, tl = random_batch(15, 12, 4, 6, 5)
    targets[1, :5] = torch.tensor([1, 2, 3, 4, 5])
    il, tl = torch.tensor([12, 3, 12, 12]), torch.tensor([4, 5, 3, 2])
    feasible = [0, 2, 3]
    loss, grad = loss_and_grad(ctc_loss, lp, targets, il, tl, reduction="none")
    ref, ref_grad = loss_and_grad(F.ctc_loss, lp, targets, il, tl, reduction="none")
    assert math.isinf(loss[1].item())
    assert torch.isnan(grad[:, 1]).all() == torch.isnan(ref_grad[:, 1]).all()
    torch.testing.assert_close(loss[feasible], ref[feasible], rtol=1e-12, atol=0)
    torch.testing.assert_close(
        grad[:, feasible], ref_grad[:, feasible], rtol=1e-9, atol=0
    )
    loss, grad = loss_and_grad(
        ctc_loss, lp, targets, il, tl, reduction="none", zero_infinity=True
    )
    assert loss[1].item() == 0.0 and (grad[:, 1] == 0).all()
    torch.testing.assert_close(
        grad[:, feasible], ref_grad[:, feasible], rtol=1e-9, atol=0
    )
    assert_matches_torch(lp, targets, il, tl, reduction="mean", zero_infinity=True)


def test_very_peaked_inputs_fall_back_to_log_space(monkeypatch):
    """Logits spread x200: the rescaled recursion underflows, the check sees it and the
    sample is redone in log space; loss and gradient stay finite and exact."""
    batch = random_batch(16, 80, 4, 10, 20, spread=200.0)
    calls = []
    original = ctc_loss_module.forward_backward

    def spy(*args):
        calls.append(args[5])  # log_space
        return original(*args)

    monkeypatch.setattr(ctc_loss_module, "forward_backward", spy)
    loss, grad = loss_and_grad(ctc_loss, *batch, reduction="none")
    assert True in calls, "the log-space fallback was not used"
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert_matches_torch(*batch, reduction="none")
    lp32 = batch[0].float()
    loss32, grad32 = loss_and_grad(ctc_loss, lp32, *batch[1:], reduction="none")
    assert torch.isfinite(loss32).all() and torch.isfinite(grad32).all()
    torch.testing.assert_close(loss32.double(), loss, rtol=1e-6, atol=0)


def test_large_alphabet():
    assert_matches_torch(*random_batch(17, 30, 3, 5000, 12), reduction="none")


def test_long_inputs():
    # T = 2000 frames, targets up to 500 labels.
    assert_matches_torch(*random_batch(18, 2000, 2, 12, 500), reduction="none")


def test_float32_is_as_accurate_as_float64_allows():
    lp, targets, il, tl = random_batch(19, 300, 4, 29, 80)
    ref, ref_grad = loss_and_grad(F.ctc_loss, lp, targets, il, tl, reduction="none")
    loss, grad = loss_and_grad(ctc_loss, lp.float(), targets, il, tl, reduction="none")
    assert loss.dtype == grad.dtype == torch.float32
    torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    lp, targets, il, tl = random_batch(20, 50, 3, 8, 12)
    half = lp.to(dtype)
    loss, grad = loss_and_grad(ctc_loss, half, targets, il, tl, reduction="none")
    assert loss.dtype == grad.dtype == dtype
    ref, ref_grad = loss_and_grad(
        ctc_loss, half.float(), targets, il, tl, reduction="none"
    )
    assert torch.equal(loss, ref.to(dtype)) and torch.equal(grad, ref_grad.to(dtype))


@pytest.mark.parametrize(
    ("targets", "il", "tl", "message"),
    [
        ([[1, 0, 2]], [5], [3], "sample 0: target label 0 at position 1 is the blank"),
        ([[1, 2], [1, -1]], [5, 5], [2, 2], "sample 1: target label -1 at position 1"),
        (
            [[1, 2], [7, 1]],
            [5, 5],
            [2, 2],
            r"sample 1: target label 7 .* outside \[0, 5\)",
        ),
        ([[1, 2], [1, 1]], [5, 6], [2, 2], "sample 1: input_length 6 is out of range"),
        ([[1, 2], [1, 1]], [5, -1], [2, 2], "sample 1: input_length -1"),
        ([[1, 2], [1, 1]], [5, 5], [2, 3], "sample 1: target_length 3 exceeds"),
        ([[1, 2], [1, 1]], [5, 5], [2, -1], "sample 1: target_length -1"),
        ([1, 2, 3], [5, 5], [2, 2], "concatenated targets hold 3 labels but"),
        ([[1, 2]], [5, 5], [2, 2], "targets has 1 rows for a batch of 2"),
    ],
)
def test_invalid_arguments_raise_naming_the_sample(targets, il, tl, message):
    B = len(il)
    lp = torch.randn(5, B, 5, dtype=F64).log_softmax(-1)
    with pytest.raises(ValueError, match=message):
        ctc_loss(lp, torch.tensor(targets), il, tl)


def test_padding_past_target_length_is_ignored():
    """Labels past a sample's target length may be anything (torch ignores them too)."""
    lp, targets, il, tl = random_batch(21, 20, 2, 5, 4)
    tl = torch.tensor([2, 3])
    junk = targets.clone()
    junk[0, 2:] = -7
    junk[1, 3:] = 99
    assert torch.equal(
        ctc_loss(lp, junk, il, tl, reduction="none"),
        ctc_loss(lp, targets, il, tl, reduction="none"),
    )


# -------------------------------------------------------------------------------------
# What a call costs on a GPU, counted on the CPU (tests/op_counts.py): host
# synchronisations and operations per frame, with the fold used on CUDA forced.


def speech_like_batch(T: int, B: int = 8, C: int = 29, seed: int = 0):
    """float32 log-probs, about T/4 labels per target, input lengths 0.9T..T: the
    shapes of tools/bench_ctc.py (characters at a 40 ms output rate)."""
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(T, B, C, generator=g).log_softmax(-1)
    input_lengths = torch.randint(int(0.9 * T), T + 1, (B,), generator=g)
    input_lengths[0] = T
    target_lengths = torch.randint(int(0.8 * T / 4), T // 4 + 1, (B,), generator=g)
    targets = torch.randint(1, C, (B, T // 4), generator=g)
    return log_probs, targets, input_lengths, target_lengths


def count_forward_backward(batch, cuda: bool, monkeypatch):
    lp, targets, il, tl = batch
    lp = lp.clone().requires_grad_()

    def forward_backward():
        return op_counts.grad(ctc_loss(lp, targets, il, tl, reduction="none"), (lp,))

    with monkeypatch.context() as patch:
        # The CUDA path: the atomic-free fold, and chunks sized for launches.
        patch.setattr(recursion, "_atomic_free", lambda device: cuda)
        patch.setattr(recursion, "_launch_bound", lambda device: cuda)
        _, counts = op_counts.count(forward_backward, [lp])
    return counts


@pytest.mark.parametrize("cuda", [False, True], ids=["cpu_path", "cuda_path"])
def test_host_syncs_are_constant_and_operations_per_frame_bounded(cuda, monkeypatch):
    """One read-back per call (which samples to redo in log space), whatever the
    length; at most 12 operations per frame (kernel launches on a GPU)."""
    short, long = (
        count_forward_backward(speech_like_batch(T), cuda, monkeypatch)
        for T in (50, 800)
    )
    assert short.syncs == long.syncs <= 1, (short.sync_sites, long.sync_sites)
    per_frame = (long.ops - short.ops) / (800 - 50)
    assert per_frame <= 12, (per_frame, long.op_names - short.op_names)


def test_the_log_space_redo_adds_no_synchronisation(monkeypatch):
    """Peaked outputs send samples to the log-space redo: still one read-back."""
    lp, targets, il, tl = random_batch(16, 80, 4, 10, 20, spread=200.0)
    counts = count_forward_backward((lp, targets, il, tl), True, monkeypatch)
    assert counts.syncs == 1, counts.sync_sites


def test_the_counter_sees_synchronisations():
    """The counting helper itself: which operations count as host synchronisations."""
    x = torch.randn(4)
    host = torch.tensor([1, 0, 1, 1])

    def work():
        x.sum().item()  # read-back
        (x > 0).nonzero()  # value-dependent shape
        x[x > 0]  # boolean device mask
        x[host]  # host index: copied to the device, blocking
        host.to(x.device)  # blocking copy from the host
        host.to(x.device, non_blocking=True)  # not counted (pinned on CUDA)
        host.tolist(), int(host.sum()), host.nonzero()  # host only
        y = torch.arange(3, device=x.device)  # made on the device
        y.cpu()  # read-back

    _, counts = op_counts.count(work, [x])
    assert counts.syncs == 6, counts.sync_sites
    assert counts.ops > 0


def test_host_tensors_travel_in_one_packed_buffer():
    """to_device's packing on CUDA (one pinned copy) keeps every tensor bit for bit."""
    tensors = [
        torch.randn(3, 4, dtype=F64),
        torch.randn(4, 3, dtype=F64).t(),  # not contiguous
        torch.arange(5),
        torch.tensor([True, False]),
        torch.tensor(3, dtype=torch.int32),
        torch.zeros(0, 2, dtype=torch.int64),
    ]
    back = recursion._unpack(recursion._pack(tensors), tensors)
    for a, b in zip(tensors, back, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


# -------------------------------------------------------------------------------------
# CUDA graphs: the graph path's bookkeeping, run on the CPU with a stand-in capture
# whose "replay" reruns the same loop on the same static buffers, which is what a
# replay does. The captured loop itself is tested on CUDA below.


@pytest.fixture
def cpu_graphs(monkeypatch):
    from asr.ctc import frames

    graphs = frames.LoopGraphs(capacity=2)
    captured = []

    def capture(fr, log_space):
        captured.append(fr)
        return lambda: frames.run_frames(fr, log_space)

    monkeypatch.setattr(recursion, "GRAPHS", graphs)
    monkeypatch.setattr(frames, "_graphable", lambda device: True)
    monkeypatch.setattr(frames, "_capture", capture)
    return graphs, captured


def graph_batches(n: int, T: int = 60, dtype=torch.float32):
    """``n`` batches of one padded shape (B = 4, targets padded to 20, C = 6)."""
    out = []
    for i in range(n):
        lp, targets, il, tl = random_batch(30 + i, T, 4, 6, 20, dtype=dtype)
        tl[0] = 20  # every target class present: the same compact table width
        targets[0] = torch.arange(20) % 5 + 1
        il[0] = T
        out.append((lp, targets, il, tl))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_graph_path_gives_the_eager_results_bitwise(cpu_graphs, dtype):
    graphs, captured = cpu_graphs
    batches = graph_batches(4, dtype=dtype)
    graphs.enabled = False
    eager = [loss_and_grad(ctc_loss, *b, reduction="none") for b in batches]
    graphs.enabled = True
    for b, (loss, grad) in zip(batches + batches[:1], eager + eager[:1], strict=True):
        got = loss_and_grad(ctc_loss, *b, reduction="none")
        assert torch.equal(got[0], loss) and torch.equal(got[1], grad)
    # Seen once (eager), captured the second time, replayed after.
    assert len(captured) == 1 and len(graphs) == 1 and graphs.nbytes > 0


def test_graphs_are_kept_per_shape_least_recently_used_first_out(cpu_graphs):
    graphs, captured = cpu_graphs  # capacity 2
    shapes = [graph_batches(2, T) for T in (40, 50, 60)]
    for batches in shapes + shapes[:1]:
        for b in batches:
            graphs.enabled = False
            expected = loss_and_grad(ctc_loss, *b, reduction="none")
            graphs.enabled = True
            got = loss_and_grad(ctc_loss, *b, reduction="none")
            assert torch.equal(got[0], expected[0])
            assert torch.equal(got[1], expected[1])
        assert len(graphs) <= 2
    assert len(captured) == 4  # T = 40 was evicted by T = 60, then captured again


def test_a_failed_capture_runs_eagerly_from_then_on(cpu_graphs, monkeypatch):
    from asr.ctc import frames

    graphs, _ = cpu_graphs
    attempts = []

    def refuse(fr, log_space):
        attempts.append(fr)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(frames, "_capture", refuse)
    batches = graph_batches(4)
    graphs.enabled = False
    eager = [loss_and_grad(ctc_loss, *b, reduction="none") for b in batches]
    graphs.enabled = True
    for i, (b, expected) in enumerate(zip(batches, eager, strict=True)):
        if i == 1:
            with pytest.warns(RuntimeWarning, match="runs eagerly"):
                got = loss_and_grad(ctc_loss, *b, reduction="none")
        else:
            got = loss_and_grad(ctc_loss, *b, reduction="none")
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert len(attempts) == 1 and len(graphs) == 0


def test_the_loop_reruns_on_used_buffers_as_on_fresh_ones():
    """What a replay relies on: a run depends on the loaded inputs alone, not on what
    the buffers held (the previous problem, or the caller's changes to the slots)."""
    from asr.ctc import frames

    results = []
    for b in graph_batches(2):
        lp, targets, il, tl = b
        table = recursion.sample_classes(targets, tl, 0, lp.shape[2])
        prob = recursion.build_problem(targets, tl, 0, table)
        E, _ = recursion._emission_table(
            lp, prob.classes, prob.blank_col, il, int(il.min()), False
        )
        results.append((E, prob))
    T, B, Kx = results[0][0].shape
    S = results[0][1].columns.shape[1]
    reused = frames.Frames.allocate(T, B, S, Kx, torch.float32, lp.device, False)
    for E, prob in results:
        fresh = frames.Frames.allocate(T, B, S, Kx, torch.float32, lp.device, False)
        for fr in (fresh, reused):
            fr.E.copy_(E)
            fr.load(prob.columns, prob.skip, prob.meet_index)
            frames.run_frames(fr, False)
        assert torch.equal(fresh.storage, reused.storage)
        assert torch.equal(fresh.c, reused.c)
        reused.storage.fill_(float("nan"))  # as the caller's in-place use leaves it
        reused.c.log_()


# -------------------------------------------------------------------------------------
# On a CUDA device (make test-cuda)


def cuda_batch(batch):
    return [batch[0].cuda(), batch[1].cuda(), batch[2], batch[3]]


@pytest.mark.cuda
def test_cuda_matches_cpu_and_is_deterministic():
    batch = random_batch(22, 200, 8, 29, 60, repeats=True)
    cpu = loss_and_grad(ctc_loss, *batch, reduction="none")
    dev = cuda_batch(batch)
    first = loss_and_grad(ctc_loss, *dev, reduction="none")
    again = loss_and_grad(ctc_loss, *dev, reduction="none")
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    torch.testing.assert_close(first[0].cpu(), cpu[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(first[1].cpu(), cpu[1], rtol=1e-10, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_cuda_graph_replays_give_the_eager_results_bitwise(dtype):
    from asr.ctc import frames

    batches = [cuda_batch(b) for b in graph_batches(4, T=120, dtype=dtype)]
    frames.GRAPHS.clear()
    frames.GRAPHS.enabled = False
    try:
        eager = [loss_and_grad(ctc_loss, *b, reduction="none") for b in batches]
        frames.GRAPHS.enabled = True
        for b, (loss, grad) in zip(
            batches + batches[:1], eager + eager[:1], strict=True
        ):
            got = loss_and_grad(ctc_loss, *b, reduction="none")
            assert torch.equal(got[0], loss) and torch.equal(got[1], grad)
        assert len(frames.GRAPHS) == 1
    finally:
        frames.GRAPHS.enabled = True
        frames.GRAPHS.clear()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_cuda_matches_torch_native_cuda_loss(dtype):
    batch = speech_like_batch(400, B=16)
    lp = batch[0].to(dtype)
    dev = cuda_batch((lp, *batch[1:]))
    # In float32 torch's own gradient is the less accurate (docs/benchmarks.md).
    loss_tol, grad_tol = (1e-5, 1e-3) if dtype == torch.float32 else (1e-10, 1e-9)
    ref = loss_and_grad(F.ctc_loss, *dev, reduction="none")
    for _ in range(3):  # eager, then captured and replayed
        ours = loss_and_grad(ctc_loss, *dev, reduction="none")
        torch.testing.assert_close(ours[0], ref[0], rtol=loss_tol, atol=0)
        torch.testing.assert_close(ours[1], ref[1], rtol=grad_tol, atol=grad_tol)


@pytest.mark.cuda
def test_cuda_synchronisations_do_not_grow_with_length():
    """CUDA's own count (sync debug mode warns at each synchronising call)."""
    import warnings

    from asr.ctc import frames

    def syncs(T):
        lp, targets, il, tl = speech_like_batch(T)
        dev = [lp.cuda(), targets, il, tl]  # targets on the device cost a read-back
        loss_and_grad(ctc_loss, *dev, reduction="none")  # warm: graphs captured
        loss_and_grad(ctc_loss, *dev, reduction="none")
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                loss_and_grad(ctc_loss, *dev, reduction="none")
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    for enabled in (False, True):
        frames.GRAPHS.enabled = enabled
        try:
            assert syncs(50) == syncs(800) <= 1
        finally:
            frames.GRAPHS.enabled = True


def test_the_package_loads_torch_only_when_the_loss_is_used():
    """`import asr` (and so `asr --help`) does not import torch; `asr.CTCLoss` and
    `asr.ctc_loss` still work, as the objects of asr.ctc."""
    import subprocess
    import sys

    code = (
        "import sys, asr, asr.cli\n"
        "assert 'torch' not in sys.modules, 'torch imported by import asr'\n"
        "import asr.ctc\n"
        "assert asr.CTCLoss is asr.ctc.CTCLoss and asr.ctc_loss is asr.ctc.ctc_loss\n"
        "try:\n"
        "    asr.nothing\n"
        "except AttributeError as e:\n"
        "    assert 'nothing' in str(e)\n"
        "else:\n"
        "    raise AssertionError('asr.nothing did not raise')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
