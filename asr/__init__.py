from asr.ctc import CTCLoss, ctc_loss

__all__ = ["CTCLoss", "ctc_loss"]
