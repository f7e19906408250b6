"""write_report on fake run folders: the numbers come from the folder, and each note fires only when due."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clipwise.errors import ConfigError, RunError
from clipwise.evaluate.metrics import calibration, majority_baseline, per_class_report, top_confusions
from clipwise.evaluate.figures import plot_confusion, plot_curves
from clipwise.evaluate.report import write_report
from clipwise.run import RunFolder

LABELS = ["bird", "car", "dog", "rain", "siren", "wind"]
SUMMARY_SPLITS = {
    "test": {"accuracy": 0.62, "balanced_accuracy": 0.6123, "macro_f1": 0.5987, "top5_accuracy": 0.9512,
             "log_loss": 1.2345, "n": 40},
    "val": {"accuracy": 0.7, "balanced_accuracy": 0.6811, "macro_f1": 0.6642, "top5_accuracy": 0.97,
            "log_loss": 1.0123, "n": 20},
    "train_clean": {"accuracy": 0.8, "balanced_accuracy": 0.7954, "macro_f1": 0.7801, "top5_accuracy": 0.99,
                    "log_loss": 0.6789, "n": 30},
}
HEALTHY_DATA = {"n_train": 1000, "n_val": 200, "n_test": 400, "silent_clips": {"train": 0, "val": 0, "test": 0},
                "skipped_files": 0}


def make_run(root, *, best_epoch=2, epochs=5, val_at_best=0.7, clean_at_best=0.8, augment=None,
             nan_loss_epoch=None, test_accuracy=0.62, baseline=None, data=None, summary=True):
    """A run folder written through RunFolder, with seeded random predictions for the test split."""
    rng = np.random.default_rng(0)
    run = RunFolder(root)
    run.write_info(kind="deep", task="multiclass")
    run.save_config_yaml({
        "model": {"name": "cnn_small"},
        "data": {"sample_rate": 16000, "clip_seconds": 2.0},
        "augment": {"mixup_alpha": 0.0, "cutmix_alpha": 0.0, "specaugment": False, "label_smoothing": 0.0,
                    **(augment or {})},
        "train": {"monitor": "val_accuracy", "epochs": epochs},
    })
    run.save_labels(LABELS)
    for epoch in range(epochs):
        val = val_at_best if epoch == best_epoch else val_at_best - 0.1 - 0.01 * abs(epoch - best_epoch)
        clean = clean_at_best if epoch == best_epoch else val + 0.1
        row = {"epoch": epoch, "lr": 1e-3, "train_loss": 2.0 - 0.2 * epoch, "val_loss": 1.8 - 0.1 * epoch,
               "val_accuracy": val, "val_macro_f1": val - 0.05}
        if epoch != 1:  # clean-train metrics skipped one epoch: empty cells, which are not a divergence
            row.update(train_clean_loss=1.5 - 0.2 * epoch, train_clean_accuracy=clean,
                       train_clean_macro_f1=clean - 0.05)
        if epoch == nan_loss_epoch:
            row["val_loss"] = float("nan")
        run.append_metrics(row)
    y = rng.integers(0, len(LABELS), size=40)
    logits = rng.normal(size=(40, len(LABELS)))
    logits[np.arange(40), y] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    run.save_predictions("test", [f"clips/{i}.wav" for i in range(40)], y, probs)
    if summary:
        run.save_summary({
            **SUMMARY_SPLITS,
            "test": {**SUMMARY_SPLITS["test"], "accuracy": test_accuracy},
            "best_epoch": best_epoch,
            "epochs_run": epochs,
            "monitor": "val_accuracy",
            "baseline": baseline or {"accuracy": 0.3, "balanced_accuracy": 1 / 6},
            "data": data or HEALTHY_DATA,
            "model": {"name": "cnn_small", "params": 123456},
            "timing": {"train_seconds": 90.0},
        })
    return run


def png_size(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def notes_of(report: str) -> str:
    return report.split("## Notes", 1)[1].split("\n## ", 1)[0]


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("runs") / "healthy-run")
    path = write_report(run.root)
    return run, path, path.read_text()


def test_writes_report_and_figures(healthy):
    run, path, report = healthy
    assert path == run.report_path
    assert png_size(run.figures_dir / "curves.png")[0] > 500
    assert png_size(run.figures_dir / "confusion_matrix.png")[0] > 300
    assert "![Learning curves](figures/curves.png)" in report
    assert "![Confusion matrix (test)](figures/confusion_matrix.png)" in report
    assert report.startswith("# Run report: healthy-run\n")
    assert "Model: **cnn_small** (123,456 parameters)." in report


def test_summary_numbers_are_in_the_table(healthy):
    _, _, report = healthy
    assert "| split | accuracy | balanced accuracy | macro-F1 | top-5 | loss | n |" in report
    for split, name in (("test", "test"), ("val", "validation"), ("train_clean", "train (clean)")):
        m = SUMMARY_SPLITS[split]
        keys = ("accuracy", "balanced_accuracy", "macro_f1", "top5_accuracy", "log_loss")
        cells = [f"{m[k]:.4f}" for k in keys]
        assert f"| {name} | " + " | ".join(cells) + f" | {m['n']} |" in report
    assert "accuracy 0.3000, balanced accuracy 0.1667." in report
    assert "Best epoch: 2 (chosen by `val_accuracy`); epochs run: 5; training time: 1.5 min." in report
    for line in ("- classes: 6", "- clips: train 1000, val 200, test 400", "- sample rate: 16000 Hz",
                 "- clip length: 2.0 s", "- silent clips: train 0, val 0, test 0", "- skipped files: 0"):
        assert line in report


def test_per_class_and_confusions_match_the_predictions_file(healthy):
    run, _, report = healthy
    _, probs, y_true = run.load_predictions("test")
    for label, row in per_class_report(y_true, probs, labels=LABELS).iterrows():
        cells = f"{row.precision:.4f} | {row.recall:.4f} | {row.f1:.4f} | {int(row.support)}"
        assert f"| {label} | {cells} |" in report
    pairs = top_confusions(y_true, probs.argmax(axis=1), labels=LABELS)
    assert pairs, "the seeded predictions should contain mistakes"
    for true, pred, count in pairs:
        assert f"| {true} | {pred} | {count} |" in report


def test_confusions_name_example_files_of_that_confusion(healthy):
    run, _, report = healthy
    frame, probs, y_true = run.load_predictions("test")
    true, pred, _ = top_confusions(y_true, probs.argmax(axis=1), labels=LABELS)[0]
    wrong = frame[(frame["label"] == true) & (frame["pred"] == pred)]["path"].tolist()[:3]
    row = next(ln for ln in report.splitlines() if ln.startswith(f"| {true} | {pred} |"))
    assert row.endswith(" | " + ", ".join(f"`{Path(p).name}`" for p in wrong) + " |")


def test_reliability_section_and_a_self_contained_html_page(healthy):
    run, _, report = healthy
    _, probs, y_true = run.load_predictions("test")
    ece = calibration(y_true, probs)["ece"]
    assert f"**{ece:.4f}**" in report and png_size(run.figures_dir / "reliability.png")[0] > 300
    page = (run.root / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == 3  # curves, cm, reliability
    assert "<th>balanced accuracy</th>" in page and "figures/" not in page


def test_calibration_against_hand_computed_bins():
    # two bins of 0.5 width: confidences 0.9, 0.8 (one right) and 0.6 (right), 0.4 (wrong)
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]])
    y = np.array([0, 0, 0, 0])
    cal = calibration(y, probs, n_bins=2)
    # bin [0, 0.5]: empty (every top-1 confidence is above 0.5); bin (0.5, 1]: conf mean 0.7125, accuracy 2/4
    assert cal["bins"][0]["count"] == 0 and cal["bins"][1]["count"] == 4
    assert cal["ece"] == pytest.approx(abs(0.5 - (0.9 + 0.8 + 0.6 + 0.55) / 4))
    cal = calibration(y, probs, n_bins=4)  # bins (0.5, 0.75] and (0.75, 1]
    expected = 2 / 4 * abs(0.5 - (0.6 + 0.55) / 2) + 2 / 4 * abs(0.5 - (0.9 + 0.8) / 2)
    assert cal["ece"] == pytest.approx(expected)


def test_healthy_run_has_no_notes(healthy):
    assert notes_of(healthy[2]).strip() == "- Nothing unusual was found."


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (dict(val_at_best=0.85, clean_at_best=0.7, augment={"mixup_alpha": 0.4}),
         ["At the best epoch (2) the validation accuracy (0.8500) is better than the clean-training accuracy "
          "(0.7000).", "Augmentation was on (mixup alpha 0.4)"]),
        (dict(val_at_best=0.85, clean_at_best=0.7),
         ["validation accuracy (0.8500) is better", "No augmentation (mixup, cutmix, SpecAugment) was on"]),
        (dict(best_epoch=0),
         ["The best epoch is the first one (0): the model may not have learned — check the learning "
          "rate."]),
        (dict(best_epoch=4),
         ["The best epoch is the last one (4): still improving — more epochs may help."]),
        (dict(test_accuracy=0.25, baseline={"accuracy": 0.3, "balanced_accuracy": 0.1667}),
         ["The test accuracy (0.2500) is at or below the majority-class baseline (0.3000)"]),
        (dict(nan_loss_epoch=3), ["Non-finite losses in metrics.csv (val_loss at epoch 3)"]),
        (dict(data={**HEALTHY_DATA, "silent_clips": {"train": 2, "val": 1, "test": 0}, "skipped_files": 4}),
         ["3 clips are silent (train 2, val 1, test 0)", "4 files could not be read and were skipped"]),
        (dict(data={**HEALTHY_DATA, "groups_shared": {"train_val": 6, "train_test": 6}}),
         ["6 group(s) have clips in both train and test", "Validation mirrors that protocol"]),
        (dict(data={**HEALTHY_DATA, "n_test": 300, "groups_shared": {"train_val": 6, "train_test": 6,
                                                                     "test_rows": 300}}),
         ["6 group(s) have clips in both train and test (300 of 300 test clips), as the manifest's split says",
          "Validation mirrors that protocol"]),
        (dict(data={**HEALTHY_DATA, "n_test": 400, "groups_shared": {"train_val": 0, "train_test": 2,
                                                                     "test_rows": 3}}),
         ["2 group(s) have clips in both train and test (3 of 400 test clips): those clips are scored on "
          "sources seen in training. Few enough to be metadata slips"]),
    ],
    ids=["val-above-mixup", "val-above-no-aug", "best-first", "best-last", "below-baseline", "nan-loss",
         "data", "shared-groups", "seen-group-protocol", "a-few-shared-groups"],
)
def test_planted_problems_are_noted(tmp_path, kwargs, expected):
    notes = notes_of(write_report(make_run(tmp_path / "run", **kwargs).root).read_text())
    for text in expected:
        assert text in notes
    for line in notes.strip().splitlines():  # and nothing else fires
        assert any(text in line for text in expected), line


def test_baseline_computed_from_train_predictions_when_summary_lacks_it(tmp_path):
    run = make_run(tmp_path / "run", summary=False)
    y_train = np.array([2, 2, 2, 0, 1])
    run.save_predictions("train", [f"t{i}.wav" for i in range(5)], y_train, np.full((5, 6), 1 / 6))
    report = write_report(run.root).read_text()
    _, probs, y_test = run.load_predictions("test")
    base = majority_baseline(y_train, y_test)
    expected = f"on test: accuracy {base['accuracy']:.4f}, balanced accuracy {base['balanced_accuracy']:.4f}."
    assert expected in report
    assert "these are computed from predictions_test.csv" in report
    assert "predictions_train.csv" in report.split("\n\n")[2]  # named among the files read
    assert "Best epoch: 2 (chosen by `val_accuracy`); epochs run: 5." in report  # found from metrics.csv


def test_val_predictions_are_used_without_test(tmp_path):
    run = make_run(tmp_path / "run")
    run.predictions_path("test").rename(run.predictions_path("val"))
    report = write_report(run.root).read_text()
    assert "## Per-class results (validation, predictions_val.csv)" in report


def test_minimal_run_folder_and_missing_folder(tmp_path):
    run = RunFolder(tmp_path / "bare")
    run.write_info(kind="deep", task="multiclass")
    run.save_config_yaml({"model": {"name": "cnn"}})
    report = write_report(run.root).read_text()
    assert "No scores" in report and "Nothing unusual was found." in report
    assert not run.figures_dir.exists()
    with pytest.raises(RunError, match="is not a clipwise run folder"):
        write_report(tmp_path / "missing")


def test_plot_curves_handles_missing_columns_and_nan(tmp_path):
    metrics = pd.DataFrame({"epoch": [0, 1, 2], "train_loss": [1.0, np.nan, 0.5], "val_loss": [np.nan] * 3})
    path = plot_curves(metrics, tmp_path / "curves.png", monitor="val_accuracy")
    assert png_size(path)[0] > 500


def test_plot_confusion_scales_with_classes(tmp_path):
    small = plot_confusion(np.eye(2), ["yes", "no"], tmp_path / "small.png")
    labels = [f"class_{i:02d}_with_a_long_name" for i in range(60)]
    large = plot_confusion(np.eye(60), labels, tmp_path / "large.png")
    assert png_size(large)[0] > 2 * png_size(small)[0]
    with pytest.raises(ConfigError, match=r"shape \(3, 3\)"):
        plot_confusion(np.eye(2), ["a", "b", "c"], tmp_path / "bad.png")


def test_loss_monitor_picks_the_lowest_epoch(tmp_path):
    run = make_run(tmp_path / "run", summary=False)
    config = run.load_config_dict()
    config["train"]["monitor"] = "val_loss"  # falls 1.8 - 0.1 * epoch: lowest at the last epoch
    run.save_config_yaml(config)
    report = write_report(run.root).read_text()
    assert "Best epoch: 4 (chosen by `val_loss`)" in report
    assert "The best epoch is the last one (4)" in report


def test_html_page_renders_the_report_markdown_and_escapes_markup_in_names(tmp_path):
    from clipwise.evaluate.html import markdown_to_html

    md = ("# Run\n\n> **Warning** text\n\n- one\n- two\n\n| class | F1 |\n|---|---|\n| <script>x</script> | 0.5 |\n"
          "| a\\|b | 1 |\n\n![fig](figures/missing.png)\n")
    page = markdown_to_html(md, base=tmp_path, title="Run")
    assert "<blockquote>" in page and "<strong>Warning</strong>" in page and "<li>one</li>" in page
    assert "<td>&lt;script&gt;x&lt;/script&gt;</td>" in page and "<script>" not in page
    assert "<td>a|b</td>" in page and 'src="figures/missing.png"' in page  # a missing figure stays a link
