"""asr.plots: the training curves put every point at the step it was computed."""

from __future__ import annotations

from asr.plots import plot_training_curves, training_series

# What CSVLogger writes for two epochs of 5 steps with validation at each end:
# training rows every 2 steps, then the validation row of the epoch.
METRICS = """\
epoch,step,train_loss,val_loss,val_wer,val_cer
0,1,3.0,,,
0,3,2.5,,,
0,4,,2.4,0.9,0.5
1,5,2.0,,,
1,7,1.8,,,
1,9,,1.7,0.7,0.3
"""


def test_validation_points_sit_at_the_end_of_their_epoch(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text(METRICS)
    series, epoch_ends = training_series(csv)
    assert series["train_loss"] == [(1, 3.0), (3, 2.5), (5, 2.0), (7, 1.8)]
    # the first validation is after the first epoch's training, not at step 0
    assert series["val_loss"] == [(4, 2.4), (9, 1.7)]
    assert series["val_wer"] == [(4, 0.9), (9, 0.7)]
    assert epoch_ends == [4, 9]
    png = plot_training_curves(csv, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
