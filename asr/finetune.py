"""Fine-tuning: a new training run that starts from a trained model's weights.

``asr train --model.init_from MODEL.ckpt`` (:class:`asr.task.ASRTask`'s
``init_from``) reads a slim ``model.ckpt`` or a Lightning checkpoint with
:func:`asr.inference.load_model` -- ``torch.load(weights_only=True)`` and every field
of its description checked, so a hostile file runs no code and a broken one is one
line naming it. What the checkpoint says wins where the model is defined by it:

- the frontend and sample rate come from the checkpoint; a configuration that says
  otherwise is refused, the differing keys named (features the weights were not
  trained on would make them useless, silently);
- the vocabulary comes from the checkpoint unless ``vocab`` names a new one: then
  the output rows of the characters both share are kept and the others start as a
  fresh model's do;
- the architecture comes from the checkpoint; ``model:`` keys override it, and a
  configuration whose parameters do not fit the checkpoint's is refused, listing
  the mismatched parameters with both shapes;
- only the weights: the optimizer, its schedule and the step count start anew (a
  new run); ``--ckpt_path`` resumes an interrupted fine-tuning run as any other;
- ``freeze`` names layers of :class:`asr.model.DeepSpeech2` (``convs``,
  ``conv_norms``, ``rnns``, ``rnns.0``, ``rnn_norms``, ``out_norm``, ``fc``...) held
  fixed: no gradient, and their batch-norm statistics frozen too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from asr.configs import ConfigError
from asr.inference import CheckpointError, Recognizer, load_model
from asr.model import DeepSpeech2
from asr.text import CharTokenizer

__all__ = [
    "checkpoint_frontend",
    "copy_weights",
    "freeze_layers",
    "read_init",
]

log = logging.getLogger(__name__)

# At most this many differences are spelled out in one error.
_MAX_LISTED = 8


def read_init(path: str | os.PathLike[str]) -> Recognizer:
    """The model at ``path`` (slim or Lightning checkpoint), loaded safely.

    Raises:
        CheckpointError: a missing file, one that is not ours, or a hostile one
            (pickled code is refused by the weights-only unpickler, never run);
            the message names the file.
    """
    try:
        return load_model(path)
    except CheckpointError as err:
        raise CheckpointError(f"model.init_from: {err}") from None


def _listing(items: Sequence[str]) -> str:
    shown = "; ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f"; and {more} more" if more > 0 else "")


def checkpoint_frontend(
    path: str | os.PathLike[str],
    init: Recognizer,
    given: Mapping[str, Any] | None,
    sample_rate: int,
) -> dict[str, Any]:
    """The frontend configuration of a fine-tuning run: the checkpoint's.

    Args:
        path: the checkpoint (for messages).
        init: what :func:`read_init` loaded from it.
        given: the configuration's ``frontend`` keys, if any.
        sample_rate: the run's (``data.sample_rate``).

    Raises:
        CheckpointError: keys of ``given`` (or the sample rate) that differ from
            the checkpoint's, each named with both values.
    """
    theirs = init.frontend.config()
    differ = []
    if sample_rate != init.sample_rate:
        differ.append(
            f"sample_rate: {init.sample_rate!r} in the checkpoint, {sample_rate!r} "
            "in the config"
        )
    for key, value in (given or {}).items():
        if key == "sample_rate" and value == sample_rate:
            continue  # reported above if it differs
        if key not in theirs or theirs[key] != value:
            what = repr(theirs[key]) if key in theirs else "not set"
            differ.append(
                f"frontend.{key}: {what} in the checkpoint, {value!r} in the config"
            )
    if differ:
        raise CheckpointError(
            f"{path}: the configuration contradicts the checkpoint's frontend "
            f"({_listing(differ)}); leave these keys out to take the checkpoint's"
        )
    return theirs


def _shape(t: torch.Tensor | None) -> str:
    return "absent" if t is None else str(tuple(t.shape))


def copy_weights(
    path: str | os.PathLike[str],
    init: Recognizer,
    frontend: nn.Module,
    model: DeepSpeech2,
    tokenizer: CharTokenizer,
) -> None:
    """Copy the checkpoint's weights into a new run's ``frontend`` and ``model``.

    Every tensor must exist with the same shape on both sides, except the output
    layer's rows: those of the characters ``tokenizer`` shares with the checkpoint's
    vocabulary (the blank included) are copied, the rows of new characters keep
    their fresh initialization (and the checkpoint's characters not in
    ``tokenizer`` are dropped).

    Raises:
        CheckpointError: another architecture: every mismatched parameter listed
            (``name: shape in the checkpoint, shape here``), and the model settings
            that differ.
    """
    theirs = init.model.state_dict()
    ours = model.state_dict()
    mismatched = []
    for name in sorted(set(theirs) | set(ours)):
        a, b = theirs.get(name), ours.get(name)
        if name == "fc.weight" and a is not None and b is not None:
            same = a.shape[1:] == b.shape[1:]  # the vocabulary may differ
        else:
            same = a is not None and b is not None and a.shape == b.shape
        if not same:
            mismatched.append(f"{name} {_shape(a)} -> {_shape(b)}")
    if mismatched:
        a_cfg, b_cfg = init.model.config.to_dict(), model.config.to_dict()
        keys = [
            f"model.{k}: {a_cfg[k]!r} -> {b_cfg.get(k)!r}"
            for k in sorted(a_cfg)
            if k != "vocab_size" and a_cfg[k] != b_cfg.get(k)
        ]
        settings = f" ({'; '.join(keys)})" if keys else ""
        # every parameter, on the one line: which layers differ is the diagnosis
        raise CheckpointError(
            f"{path}: a model of another architecture than this configuration's"
            f"{settings}; {len(mismatched)} parameters do not fit (the checkpoint's "
            f"shape -> this model's): {', '.join(mismatched)}"
        )
    old = init.tokenizer.vocab
    index = {c: i for i, c in enumerate(old)}
    rows = [(i, index[c]) for i, c in enumerate(tokenizer.vocab) if c in index]
    with torch.no_grad():
        fc = theirs.pop("fc.weight")
        new_fc = ours["fc.weight"].clone()
        for i, j in rows:
            new_fc[i] = fc[j]
        model.load_state_dict({**theirs, "fc.weight": new_fc})
        frontend.load_state_dict(init.frontend.state_dict())
    new = [c for c in tokenizer.vocab if c not in index]
    dropped = [c for c in old if c not in set(tokenizer.vocab)]
    log.info(
        "model.init_from %s: %d tensors copied; output rows: %d of %d from the "
        "checkpoint%s%s",
        path,
        len(theirs) + 1,
        len(rows),
        len(tokenizer),
        f", new: {''.join(new)!r}" if new else "",
        f", dropped: {''.join(dropped)!r}" if dropped else "",
    )


def freeze_layers(model: DeepSpeech2, names: Sequence[str]) -> list[nn.Module]:
    """Hold the layers ``names`` fixed: their parameters get no gradient (and so no
    update or weight decay), and the returned modules are to be kept in eval mode
    while training, so their batch-norm statistics and dropout stay as trained.

    Raises:
        ConfigError: a name that is no layer of the model (the layers are listed).
    """
    frozen = []
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            layers = ", ".join(n for n, _ in model.named_children())
            raise ConfigError(
                f"model.freeze: {name!r} is no layer of DeepSpeech2 (layers: {layers}; "
                "or one of a list, e.g. rnns.0)"
            ) from None
        params = list(module.parameters())
        if not params:
            raise ConfigError(f"model.freeze: {name!r} has no parameters to hold fixed")
        for p in params:
            p.requires_grad_(False)
        frozen.append(module)
    if names:
        fixed = sum(p.numel() for m in frozen for p in m.parameters())
        log.info("model.freeze: %s held fixed (%d parameters)", ", ".join(names), fixed)
    return frozen
