"""Text recognition in images with a CRNN and our CTC loss.

CTC was made for two jobs: speech, and reading text in images without segmenting it
into characters. This package shows the loss on the second: CRNN (Shi, Bai & Yao,
2015), convolutions that collapse an image's height into a sequence of columns, a
bidirectional LSTM over the width and a linear layer to the characters and the
blank, trained with :func:`asr.ctc.ctc_loss` (or torch's, by name) and decoded
greedily (:func:`asr.decoding.greedy_decode`).

- :mod:`asr.ocr.images`: reading image files as the model sees them; generating
  CAPTCHAs (the ``captcha`` package, as in MXNet's CTC example) and rendered text
  lines (WordNet's words in DejaVu fonts), deterministically from a seed.
- :mod:`asr.ocr.model`: the CRNN.
- :mod:`asr.ocr.task`: the LightningModule and LightningDataModule, the scores.
- :mod:`asr.ocr.train`: ``asr ocr train`` (LightningCLI, the speech trainer's
  checkpointing and logging).
- :mod:`asr.ocr.recognize`: loading a model, reading images, evaluating.
"""

from asr.ocr.images import ImageError, generate_set, read_image
from asr.ocr.recognize import evaluate_ocr, load_ocr_model, recognize_images

__all__ = [
    "ImageError",
    "evaluate_ocr",
    "generate_set",
    "load_ocr_model",
    "read_image",
    "recognize_images",
]
