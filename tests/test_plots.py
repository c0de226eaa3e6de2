import pandas as pd

from masklab import plots


def test_figures_are_byte_identical_across_reruns(tmp_path):
    history = pd.DataFrame({"epoch": [1, 2, 3], "accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.5, 0.65, 0.6],
                            "loss": [1.0, 0.7, 0.5], "val_loss": [1.0, 0.8, 0.9], "is_best": [False, True, False]})
    plots.learning_curve(history, tmp_path / "a.png", title="t")
    plots.learning_curve(history, tmp_path / "b.png", title="t")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert b"Software" not in (tmp_path / "a.png").read_bytes()
