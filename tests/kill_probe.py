"""A callback for tests/test_train.py's crash tests: SIGKILL the training process at
a chosen moment, as a power cut or the OOM killer would.

Loaded by ``asr train`` in a subprocess by class path (``kill_probe.KillAt``, with
``tests/`` on ``PYTHONPATH``); it is not part of the package.
"""

from __future__ import annotations

import os
import signal

import lightning as L


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(L.Callback):
    """SIGKILL this process in epoch ``epoch``.

    Args:
        epoch: the epoch (from 0) to die in.
        moment: ``"step"``: right after training batch ``batch`` of that epoch (the
            optimizer has stepped; nothing of the epoch is saved yet);
            ``"writing"``: while the epoch's ``last.ckpt`` is being written (half
            of the temporary file is on the disk).
        batch: the batch index for ``"step"``.
    """

    def __init__(self, epoch: int = 1, moment: str = "step", batch: int = 1) -> None:
        self.epoch, self.moment, self.batch = epoch, moment, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.moment == "step" and trainer.current_epoch == self.epoch:
            if batch_idx == self.batch:
                _die()

    def setup(self, trainer, pl_module, stage):
        if self.moment != "writing":
            return
        import asr.atomic

        write_all = asr.atomic._write_all

        def half_then_die(fd, data):
            # last.ckpt's temporary file, in the chosen epoch: half of it, then die
            name = os.readlink(f"/proc/self/fd/{fd}")
            if trainer.current_epoch == self.epoch and ".last.ckpt." in name:
                write_all(fd, bytes(data[: len(data) // 2]))
                os.fsync(fd)
                _die()
            write_all(fd, data)

        asr.atomic._write_all = half_then_die
