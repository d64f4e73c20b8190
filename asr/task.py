"""The training task: frontend + SpecAugment + DeepSpeech2 + CTC, as a LightningModule.

Features are computed here, on the model's device, from raw waveforms, so training and
inference share one definition of them; the checkpoint carries the frontend, the
vocabulary, the sample rate and the model's hyper-parameters (``checkpoint["asr"]``),
so a checkpoint alone is enough to transcribe.

Numerical faults never reach the weights: a step whose gradients are not all finite
(a NaN or infinite loss, an overflow) is skipped -- its gradients are dropped before
the optimizer sees them and the batch-norm statistics its forward pass changed are
put back -- with a warning naming the batch's utterances, and counted in the logged
metric ``skipped_steps``. An utterance whose transcript cannot be aligned to its
output frames (CTC has no path; ``zero_infinity`` makes its loss 0) is named in a
warning, once.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import lightning as L
import torch
from torch import Tensor

from asr.augment import SpecAugment
from asr.ctc import resolve_ctc_loss
from asr.data import Batch, SpeechDataset, collate
from asr.decoding import greedy_decode
from asr.features import build_frontend
from asr.inference import CHECKPOINT_FORMAT
from asr.metrics import error_rates
from asr.model import PRESETS, DeepSpeech2, ModelConfig, count_parameters
from asr.text import PHONES, CharTokenizer

__all__ = ["ASRTask"]

log = logging.getLogger(__name__)


def frame_phone_labels(
    phones: Tensor, phone_lens: Tensor, lens: Tensor, frame_seconds: float
) -> Tensor:
    """Time-aligned phones -> the phone of every output frame.

    Output frame ``t`` is centred on ``t * frame_seconds`` (a centred STFT and
    half-kernel convolutions keep frame centres at multiples of the stride).

    Args:
        phones: ``(B, S, 3)`` ``(PHONES index, start, end)`` in seconds.
        phone_lens: ``(B,)`` phones per utterance, -1 for none.
        lens: ``(B,)`` valid output frames.
        frame_seconds: seconds per output frame.

    Returns:
        ``(B, T)`` int64 (``T = max(lens)``): the index of the phone covering each
        frame, ``PHONES.index("sil")`` (0) between phones, and -100 (ignored) past
        ``lens`` and for utterances without phones.
    """
    B, S, _ = phones.shape
    T = int(lens.max()) if B else 0
    t = torch.arange(T, device=phones.device, dtype=phones.dtype) * frame_seconds
    start, end = phones[:, None, :, 1], phones[:, None, :, 2]  # (B, 1, S)
    valid = torch.arange(S, device=phones.device)[None, :] < phone_lens[:, None]
    inside = (t[None, :, None] >= start) & (t[None, :, None] < end) & valid[:, None]
    covered = inside.any(-1)  # (B, T)
    which = inside.to(torch.int8).argmax(-1)  # (B, T): the first covering phone
    labels = phones[..., 0].long().gather(1, which)  # (B, T)
    labels = torch.where(covered, labels, torch.zeros_like(labels))
    frames = torch.arange(T, device=phones.device)[None, :] < lens[:, None].to(
        phones.device
    )
    keep = frames & (phone_lens[:, None] >= 0)
    return torch.where(keep, labels, torch.full_like(labels, -100))


class ASRTask(L.LightningModule):
    """Train a DeepSpeech2 model with CTC.

    Args:
        model_preset: a name in :data:`asr.model.PRESETS` (``paper``,
            ``librispeech``, ``small``, ``tiny``).
        model: overrides of the preset (keys of :class:`asr.model.ModelConfig`).
        frontend: the feature extractor (keys of :func:`asr.features.build_frontend`;
            ``kind`` is ``spectrogram``, ``mel`` or ``mfcc``).
        spec_augment: SpecAugment settings, or None for none.
        sample_rate: of the audio the model takes.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW's decoupled weight decay.
        warmup: linear warm-up, in optimizer steps (>= 1) or as a fraction of all
            steps (< 1); then cosine decay to ``lr * final_lr_ratio``.
        final_lr_ratio: the learning rate at the last step, relative to ``lr``.
        ctc_impl: ``"asr"`` (ours) or ``"torch"``: the CTC loss implementation.
        phone_loss_weight: weight of an auxiliary frame-level phone classification
            loss (cross-entropy over :data:`asr.text.PHONES`) added to CTC in
            training, for utterances whose manifest line has time-aligned phones
            (``phones_filepath``; the synthetic corpus's engines say what they spoke
            and when). 0 turns it off. The dense per-frame targets teach the lower
            layers acoustics directly instead of through CTC's alignment search
            (measured on the synthetic recipe: about 1 point of test CER;
            recipes/synthetic/RESULTS.md).
            The phone head is not part of the exported model.
        phone_layer: the recurrent layer (index, negative from the end) whose
            output the phone head reads; a middle layer leaves the layers above it
            free for spelling.
        seed: every training step's randomness (SpecAugment, dropout) is drawn from
            a generator seeded with ``(seed, step)``, so a resumed run takes exactly
            the steps an uninterrupted one would have.
        global_stats_seconds: with ``frontend.normalize: global``, the feature
            mean and variance are accumulated before the first training step over
            this many seconds of training audio, utterances taken evenly across
            the training manifest (None: all of it); they are saved in every
            checkpoint (a resumed run keeps them). Log-mel statistics settle
            within minutes of speech: the default hour leaves them stable to a
            fraction of a percent at a fraction of an epoch's reading.
    """

    def __init__(
        self,
        model_preset: str = "small",
        model: dict[str, Any] | None = None,
        frontend: dict[str, Any] | None = None,
        spec_augment: dict[str, Any] | None = None,
        sample_rate: int = 16000,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        warmup: float = 0.05,
        final_lr_ratio: float = 0.02,
        ctc_impl: str = "asr",
        phone_loss_weight: float = 0.0,
        phone_layer: int = -1,
        seed: int = 0,
        global_stats_seconds: float | None = 3600.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if model_preset not in PRESETS:
            known = ", ".join(PRESETS)
            raise ValueError(f"unknown model_preset {model_preset!r}; choose: {known}")
        self.tokenizer = CharTokenizer()
        # The audio's rate is set once (data.sample_rate, linked to this argument);
        # a frontend setting that says otherwise would build features for audio
        # the data module never delivers.
        given_rate = (frontend or {}).get("sample_rate", sample_rate)
        if given_rate != sample_rate:
            raise ValueError(
                f"frontend.sample_rate {given_rate!r} differs from the model's "
                f"sample_rate {sample_rate!r} (set data.sample_rate alone)"
            )
        self.frontend = build_frontend(
            {"kind": "spectrogram", "sample_rate": sample_rate, **(frontend or {})}
        )
        config = ModelConfig.from_dict(
            {
                **ModelConfig().to_dict(),
                **PRESETS[model_preset],
                **(model or {}),
                "n_features": self.frontend.n_features,
                "vocab_size": len(self.tokenizer),
            }
        )
        self.model = DeepSpeech2(config)
        if not -config.rnn_layers <= phone_layer < config.rnn_layers:
            raise ValueError(
                f"phone_layer {phone_layer} is outside the {config.rnn_layers} "
                "recurrent layers"
            )
        if phone_loss_weight < 0:
            raise ValueError(f"phone_loss_weight must be >= 0, got {phone_loss_weight}")
        self._warned_no_phones = False
        # Frame-level phone classification, for training only (not in the exported
        # model): see phone_loss_weight.
        self.phone_head = (
            torch.nn.Linear(config.hidden_size, len(PHONES))
            if phone_loss_weight > 0
            else None
        )
        self.spec_augment = SpecAugment(**spec_augment) if spec_augment else None
        self.ctc_loss = resolve_ctc_loss(ctc_impl)
        # per validation set (dataloader index): references and hypotheses
        self._refs: dict[int, list[str]] = {}
        self._hyps: dict[int, list[str]] = {}
        # Numerical faults (see the module docstring).
        self.skipped_steps = 0
        self._infeasible_reported: set[str] = set()
        self._buffers_before: list[Tensor] = []
        self._batch_ids: list[str] = []

    # -- the computation ------------------------------------------------------------

    def forward(self, waves: Tensor, wave_lens: Tensor) -> tuple[Tensor, Tensor]:
        """``(waves (B, N), wave_lens (B,))`` -> ``(log_probs (T, B, V), out_lens)``."""
        return self.model(*self._features(waves, wave_lens))

    def _features(self, waves: Tensor, wave_lens: Tensor) -> tuple[Tensor, Tensor]:
        """``(feats (B, F, T), feat_lens (B,))``, SpecAugmented in training."""
        with torch.no_grad():
            feats, feat_lens = self.frontend(waves, wave_lens)
        if self.spec_augment is not None and self.training:
            feats, feat_lens = self.spec_augment(feats, feat_lens)
        return feats, feat_lens

    def output_frames(self, duration: float) -> int:
        """Model output frames for ``duration`` seconds of audio (for validation)."""
        samples = torch.tensor([round(duration * self.hparams.sample_rate)])
        frames = torch.as_tensor(self.frontend.frames(samples)).reshape(1)
        return int(self.model.output_lengths(frames)[0])

    def _loss(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        feats, feat_lens = self._features(batch.waves, batch.wave_lens)
        use_phones = self.training and self.phone_head is not None
        if use_phones and batch.phones is None:
            use_phones = False
            if not self._warned_no_phones:
                self._warned_no_phones = True
                log.warning(
                    "phone_loss_weight is %g but a training batch has no time-aligned "
                    "phones (manifest key phones_filepath): such batches train with "
                    "CTC alone",
                    self.hparams.phone_loss_weight,
                )
        log_probs, out_lens, hidden = self.model.forward_with_hidden(
            feats, feat_lens, self.hparams.phone_layer if use_phones else None
        )
        self._report_infeasible(batch, out_lens)
        loss = self.ctc_loss(
            log_probs,
            batch.targets,
            out_lens,
            batch.target_lens,
            blank=self.tokenizer.blank,
            reduction="mean",
            zero_infinity=True,
        )
        if use_phones:
            assert hidden is not None and self.phone_head is not None
            frame_seconds = (
                self.frontend.hop_length
                * self.model.frame_stride()
                / self.hparams.sample_rate
            )
            labels = frame_phone_labels(
                batch.phones, batch.phone_lens, out_lens, frame_seconds
            )
            logits = self.phone_head(hidden.transpose(1, 2))  # (B, T, H)->(B, T, P)
            if bool((labels >= 0).any()):
                phone_loss = torch.nn.functional.cross_entropy(
                    logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100
                )
                self.log("train_phone_loss", phone_loss, batch_size=len(batch.ids))
                loss = loss + self.hparams.phone_loss_weight * phone_loss
            else:
                loss = loss + 0.0 * logits.sum()
        elif self.training and self.phone_head is not None:
            # A batch without phones still uses the head (with zero gradients):
            # under DDP a parameter left out of one rank's graph stops training.
            loss = loss + 0.0 * sum(p.sum() for p in self.phone_head.parameters())
        return loss, log_probs, out_lens

    def _report_infeasible(self, batch: Batch, out_lens: Tensor) -> None:
        """Warn (once per utterance) about transcripts that need more output frames
        than the audio gives: CTC has no alignment for them, and ``zero_infinity``
        makes their loss 0, so they teach nothing. Validation of the manifests
        catches most of them; speed perturbation can make a few more."""
        targets = batch.targets.detach()
        # Labels are never the blank (0), which pads the targets.
        repeats = ((targets[:, 1:] == targets[:, :-1]) & (targets[:, 1:] != 0)).sum(1)
        needed = (batch.target_lens + repeats.to(batch.target_lens)).cpu()
        frames = out_lens.detach().cpu()
        for i in torch.nonzero(needed > frames).flatten().tolist():
            uid = batch.ids[i]
            if uid in self._infeasible_reported:
                continue
            self._infeasible_reported.add(uid)
            log.warning(
                "utterance %s: %d output frames, its transcript needs %d; CTC has no "
                "alignment and its loss is zeroed (`asr validate` finds such "
                "utterances; speed perturbation can shorten borderline ones)",
                uid,
                int(frames[i]),
                int(needed[i]),
            )

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        # Lightning draws from the global generator at moments that differ between a
        # fresh and a resumed run (data-loader seeds); reseed from (seed, step), and
        # the rank: under DDP every rank would otherwise draw the same SpecAugment
        # masks and dropout patterns (rank 0 keeps the single-process stream).
        step_seed = self.hparams.seed * 1_000_003 + self.global_step
        torch.manual_seed((step_seed + self.global_rank * 7_919 * 2**32) % 2**63)
        # Batch-norm statistics change in the forward pass, before the loss is known:
        # keep them to put back if this step turns out to be skipped.
        self._buffers_before = [b.detach().clone() for b in self.model.buffers()]
        self._batch_ids = list(batch.ids)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        B = len(batch.ids)
        if B == 0:  # every file of the batch was unreadable (each one logged)
            return self._empty_batch_loss()
        loss, _, _ = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=B)
        self.log(
            "batch_seconds",
            batch.wave_lens.sum() / self.hparams.sample_rate,
            batch_size=B,
            reduce_fx="sum",
            on_step=False,
            on_epoch=True,
            sync_dist=True,  # seconds of audio per epoch, summed over the ranks
        )
        return loss

    def _empty_batch_loss(self) -> Tensor | None:
        """What a training step returns when none of its batch's files could be read.

        One process: ``None``, and Lightning skips the backward pass and the update.
        Under DDP that would put the ranks' collectives out of step (the others'
        backward passes wait for this rank's gradients in an all-reduce; a hang, or
        with gloo a dead peer): instead, a zero loss that touches every trainable
        parameter, so this rank contributes zero gradients (the step's average then
        weighs the other ranks' gradients by their share). The per-epoch audio
        total is logged too, as every rank must sync the same keys.
        """
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return None
        self.log(
            "batch_seconds",
            0.0,
            batch_size=1,
            reduce_fx="sum",
            on_step=False,
            on_epoch=True,
            sync_dist=True,
        )
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.stack([p.sum() for p in params]).sum() * 0.0

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Skip the step if any gradient is NaN or infinite.

        Lightning calls this after the backward pass (and, with 16-bit AMP, after
        unscaling) and before gradient clipping and ``optimizer.step``. Dropping the
        gradients (``None``) makes AdamW leave the weights and its moments as they
        were (setting them to zero would not: momentum and weight decay would still
        move the weights). Under DDP the gradients are already averaged over the
        ranks, so every rank takes the same decision. With 16-bit AMP the count
        includes the steps the gradient scaler skips anyway (an overflow while it
        calibrates its scale); bf16 has no scaler. With gradient accumulation the
        whole accumulated step is skipped (batch norm is restored to before its last
        micro-batch).
        """
        params = [p for p in self.parameters() if p.grad is not None]
        if params:
            finite = torch.stack([torch.isfinite(p.grad).all() for p in params]).all()
            if not bool(finite):
                self._skip_step(params)
        self.log(
            "skipped_steps",
            float(self.skipped_steps),
            on_step=True,
            on_epoch=False,
            reduce_fx="max",
        )

    def _skip_step(self, params: list[torch.nn.Parameter]) -> None:
        for p in params:
            p.grad = None
        buffers = list(self.model.buffers())
        if len(buffers) == len(self._buffers_before):  # saved at this batch's start
            with torch.no_grad():
                for buffer, before in zip(buffers, self._buffers_before, strict=True):
                    buffer.copy_(before)
        self.skipped_steps += 1
        shown = ", ".join(self._batch_ids[:5])
        more = len(self._batch_ids) - 5
        if more > 0:
            shown += f" and {more} more"
        log.warning(
            "step %d: non-finite gradients (batch: %s); the step is skipped and the "
            "weights are unchanged (%d skipped so far)",
            self.global_step,
            shown or "?",
            self.skipped_steps,
        )

    def _set_prefix(self, prefix: str, index: int) -> str:
        """``val`` for the first validation set, ``val/<name>`` for the others (the
        data module's names), so the first set's ``val_wer`` picks checkpoints."""
        if index == 0:
            return prefix
        names = getattr(getattr(self.trainer, "datamodule", None), "val_names", [])
        return names[index] if index < len(names) else f"{prefix}/{index}"

    def _metric(self, prefix: str, index: int, what: str) -> str:
        head, _, name = self._set_prefix(prefix, index).partition("/")
        return f"{head}_{what}" + (f"/{name}" if name else "")

    def _eval_step(self, batch: Batch, prefix: str, index: int = 0) -> None:
        if not batch.ids:  # every file of the batch was unreadable (each one logged)
            return
        loss, log_probs, out_lens = self._loss(batch)
        self.log(
            self._metric(prefix, index, "loss"),
            loss,
            prog_bar=index == 0,
            batch_size=len(batch.ids),
            sync_dist=True,
            add_dataloader_idx=False,
        )
        hyps = self._hyps.setdefault(index, [])
        for ids in greedy_decode(log_probs, out_lens, self.tokenizer.blank):
            hyps.append(self.tokenizer.decode(ids))
        self._refs.setdefault(index, []).extend(batch.texts)

    def _eval_epoch_end(self, prefix: str) -> None:
        indices = sorted(set(self._refs) | {0})
        for index in indices:
            self._eval_set_end(prefix, index)
        self._refs, self._hyps = {}, {}

    def _eval_set_end(self, prefix: str, index: int) -> None:
        words, chars = error_rates(self._refs.get(index, []), self._hyps.get(index, []))
        counts = torch.tensor(
            [
                words.errors,
                words.reference_length,
                chars.errors,
                chars.reference_length,
            ],
            dtype=torch.float64,
            device=self.device,
        )
        if self.trainer.world_size > 1:  # corpus-level rates over all ranks
            counts = self.all_gather(counts).sum(0)
        wer = float(counts[0] / counts[1].clamp(min=1))
        cer = float(counts[2] / counts[3].clamp(min=1))
        # Already corpus-level over all ranks (the gathered counts), so the same on
        # every rank: sync_dist averages equal values (and tells Lightning so).
        first = index == 0
        self.log(
            self._metric(prefix, index, "wer"), wer, prog_bar=first, sync_dist=True
        )
        self.log(
            self._metric(prefix, index, "cer"), cer, prog_bar=first, sync_dist=True
        )

    def validation_step(
        self, batch: Batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_step(batch, "val", dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "test", dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # -- optimisation ---------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            (no_decay if p.dim() < 2 or "norm" in name else decay).append(p)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": hp.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=hp.lr,
            betas=(0.9, 0.98),
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = hp.warmup if hp.warmup >= 1 else hp.warmup * total
        warmup = max(1, int(warmup))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            cosine = 0.5 * (1 + math.cos(math.pi * progress))
            return hp.final_lr_ratio + (1 - hp.final_lr_ratio) * cosine

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_train_epoch_start(self) -> None:
        # Lightning sets the epoch of `dataloader.sampler` and of
        # `batch_sampler.sampler`, not of a batch sampler itself: do it here, before
        # the epoch's iterator exists, so batch order follows (seed, epoch).
        loader = self.trainer.train_dataloader
        batch_sampler = getattr(loader, "batch_sampler", None)
        if callable(getattr(batch_sampler, "set_epoch", None)):
            batch_sampler.set_epoch(self.current_epoch)

    def on_train_start(self) -> None:
        # After the data module's setup and any checkpoint restore (whose statistics
        # are kept), before the first step.
        frontend = self.frontend
        if frontend.normalize != "global" or int(frontend.global_count) > 0:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        utterances = getattr(datamodule, "train_utterances", None)
        if not utterances:
            raise ValueError(
                "frontend.normalize is global, but the training utterances to fit "
                "its statistics on are unknown (asr.datamodule.ASRDataModule has "
                "them)"
            )
        self.fit_global_stats(utterances, self.hparams.global_stats_seconds)

    @torch.no_grad()
    def fit_global_stats(
        self, utterances: list[Any], seconds: float | None = None, batch: int = 32
    ) -> None:
        """Accumulate the frontend's global feature statistics over ``utterances``
        (:class:`asr.manifest.Utterance`), or an even selection of about
        ``seconds`` of them; unreadable files are logged and skipped."""
        total = sum(u.duration for u in utterances)
        every = 1 if seconds is None else max(1, math.ceil(total / max(seconds, 1e-9)))
        chosen = list(utterances)[::every]
        data = SpeechDataset(chosen, self.tokenizer, self.hparams.sample_rate)
        self.frontend.reset_global_stats()
        for i in range(0, len(chosen), batch):
            b = collate([data[j] for j in range(i, min(i + batch, len(chosen)))])
            if not b.ids:
                continue
            waves = b.waves.to(self.device)
            feats, lens = self.frontend.extract(waves, b.wave_lens.to(self.device))
            self.frontend.accumulate_global_stats(feats, lens)
        frames = int(self.frontend.global_count)
        if frames == 0:
            raise ValueError("no readable training audio to fit feature statistics on")
        log.info(
            "global feature statistics from %d of %d training utterances "
            "(%.0f s of audio, %d frames)",
            len(chosen),
            len(utterances),
            sum(u.duration for u in chosen),
            frames,
        )

    def on_fit_start(self) -> None:
        # trainer.sync_batchnorm converts every BatchNorm subclass, our length-masked
        # one included, into torch's SyncBatchNorm, which takes no lengths.
        if any(isinstance(m, torch.nn.SyncBatchNorm) for m in self.modules()):
            raise ValueError(
                "trainer.sync_batchnorm replaced DeepSpeech2's length-masked batch "
                "norm with torch's SyncBatchNorm, which ignores padding: set "
                "trainer.sync_batchnorm: false (statistics are per rank, as in DS2)"
            )
        n = count_parameters(self.model)
        self.print(f"DeepSpeech2 ({self.hparams.model_preset}): {n:,} parameters")
        # training_step returns None only for a batch none of whose files could be
        # read, and that is logged with the files' names: Lightning's generic "if this
        # was on purpose, ignore this warning" beside it only confuses.
        warnings.filterwarnings(
            "ignore", message=r"`training_step` returned `None`", category=UserWarning
        )

    # -- checkpoints ------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Everything needed to rebuild this model for inference, as plain data."""
        return {
            "format": CHECKPOINT_FORMAT,
            "sample_rate": self.hparams.sample_rate,
            "tokenizer": self.tokenizer.to_dict(),
            "frontend": self.frontend.config(),
            "model": self.model.config.to_dict(),
            "model_preset": self.hparams.model_preset,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["asr"] = self.describe()
        checkpoint["asr_skipped_steps"] = self.skipped_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_steps = int(checkpoint.get("asr_skipped_steps", 0))
