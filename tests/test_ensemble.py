"""Ensembles: weights learned on validation, a task built so that members complement each other, and the
ensemble used like any run (evaluate, predict)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import check_grad

from clipwise.kinds.ensemble import build_ensemble, fit_temperature, learn_weights, temper
from clipwise.run import RunFolder

LABELS = ["a", "b", "c", "d"]


def _member(root, y: np.ndarray, knows: np.ndarray, seed: int) -> RunFolder:
    """A run whose saved predictions are confident and right where ``knows``, and vague elsewhere."""
    rng = np.random.default_rng(seed)
    run = RunFolder(root)
    run.write_info(kind="deep", task="multiclass")
    run.save_labels(LABELS)
    run.save_config_yaml({"train": {"monitor": "val_accuracy"}})
    for split in ("val", "test"):
        probs = rng.dirichlet(np.full(4, 5.0), len(y))  # vague: close to uniform, argmax at random
        probs[knows] = 0.02
        probs[knows, y[knows]] = 0.94
        run.save_predictions(split, [f"clip{i}.wav" for i in range(len(y))], y, probs)
    acc = float(np.mean(probs.argmax(1) == y))
    run.save_summary({"test": {"accuracy": acc}, "baseline": {"accuracy": 0.25, "balanced_accuracy": 0.25}})
    return run


def test_complementary_members_make_an_ensemble_better_than_either(tmp_path):
    y = np.arange(80) % 4
    first_half = np.arange(80) < 40
    a = _member(tmp_path / "a", y, first_half, 0)
    b = _member(tmp_path / "b", y, ~first_half, 1)
    out = build_ensemble([a.root, b.root], tmp_path / "ens", weights="mean")
    s = json.loads((out / "summary.json").read_text())
    members = [m["test_accuracy"] for m in s["members"].values()]
    assert max(members) < 0.75 and s["test"]["accuracy"] == 1.0
    assert (out / "report.md").is_file() and (out / "predictions_test.csv").is_file()


def test_learned_weights_find_the_better_member_and_follow_their_gradient():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    good = np.full((200, 4), 0.05)
    good[np.arange(200), y] = 0.85
    noise = rng.dirichlet(np.ones(4), 200)
    w = learn_weights(y, [noise, good])
    assert w.sum() == pytest.approx(1.0) and w[1] > 0.9
    picked = np.stack([p[np.arange(200), y] for p in (noise, good)])

    def f(z):
        v = np.exp(z) / np.exp(z).sum()
        return -np.mean(np.log(v @ picked))

    def g(z):
        v = np.exp(z) / np.exp(z).sum()
        gw = -np.mean(picked / (v @ picked)[None, :], axis=1)
        return v * (gw - v @ gw)

    assert check_grad(f, g, np.array([0.3, -0.2])) < 1e-6


def test_temperature_scaling_recovers_how_far_scores_are_from_calibrated():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (3000, 5))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(5, p=row) for row in p])  # labels drawn from the true probabilities
    soft = temper(p, 2.0)  # an under-confident member: its scores are the truth at temperature 2
    t = fit_temperature(y, soft)
    assert 0.4 < t < 0.6  # 1/2 undoes it
    assert np.array_equal(temper(soft, t).argmax(1), p.argmax(1))  # a temperature never changes a ranking
    # multi-label: sigmoid scores per class, over-confident by a factor 2 in their logits
    zm = rng.normal(0, 2, (3000, 4))
    ym = (rng.random(zm.shape) < 1 / (1 + np.exp(-zm))).astype(int)
    t = fit_temperature(ym, 1 / (1 + np.exp(-2 * zm)))
    assert 1.6 < t < 2.5


def _scored_member(root, y: np.ndarray, probs: np.ndarray) -> RunFolder:
    run = RunFolder(root)
    run.write_info(kind="deep", task="multiclass")
    run.save_labels(LABELS)
    run.save_config_yaml({"train": {"monitor": "val_accuracy"}})
    for split in ("val", "test"):
        run.save_predictions(split, [f"clip{i}.wav" for i in range(len(y))], y, probs)
    run.save_summary({"test": {"accuracy": float(np.mean(probs.argmax(1) == y))},
                      "baseline": {"accuracy": 0.25, "balanced_accuracy": 0.25}})
    return run


def test_calibrated_weights_keep_an_under_confident_member_that_raw_log_loss_drops(tmp_path):
    """Member a is right and sure on 60 % of the clips; b is right on another 60 %, but only 0.4 sure (as mixup
    and label smoothing leave a network); elsewhere both guess. Log-loss weights on the raw scores give b
    nothing; calibrated first, both count and the mix is right everywhere."""
    n = 400
    y, idx = np.arange(n) % 4, np.arange(n)

    def scores(knows, hit, seed):
        p = np.random.default_rng(seed).dirichlet(np.full(4, 50.0), n)  # a guess: near-uniform, argmax at random
        p[knows] = (1 - hit) / 3
        p[knows, y[knows]] = hit
        return p

    a = _scored_member(tmp_path / "a", y, scores(idx % 10 < 6, 0.94, 1))
    b = _scored_member(tmp_path / "b", y, scores(idx % 10 >= 4, 0.40, 2))
    raw = build_ensemble([a.root, b.root], tmp_path / "raw", calibrate=False)
    cal = build_ensemble([a.root, b.root], tmp_path / "cal")  # auto: calibrated, since weights are learned
    raw_spec, cal_spec = (json.loads((d / "ensemble.json").read_text()) for d in (raw, cal))
    raw_s, cal_s = (json.loads((d / "summary.json").read_text()) for d in (raw, cal))
    assert raw_spec["weights"][1] < 0.01 and raw_spec["temperatures"] == [1.0, 1.0]
    assert raw_spec["calibrated_on"] is None and cal_spec["calibrated_on"] == "val"
    assert min(cal_spec["weights"]) > 0.3 and cal_spec["temperatures"][1] < cal_spec["temperatures"][0] < 1
    members = [m["test_accuracy"] for m in cal_s["members"].values()]
    assert max(members) < 0.75 and raw_s["test"]["accuracy"] < 0.75 and cal_s["test"]["accuracy"] == 1.0
    # the mean of calibrated scores is what the ensemble saved
    _, saved, _ = RunFolder(cal).load_predictions("test")
    mix = sum(w * temper(RunFolder(m.root).load_predictions("test")[1], t)
              for m, w, t in zip((a, b), cal_spec["weights"], cal_spec["temperatures"]))
    np.testing.assert_allclose(saved, mix, atol=1e-5)
    # calibrating and learning weights need labelled validation predictions: missing, or without labels
    from clipwise.errors import ConfigError

    for m in (a, b):
        frame, probs, _ = m.load_predictions("val")
        m.save_predictions("val", list(frame["path"]), None, probs)
    with pytest.raises(ConfigError, match="learning weights needs .* labelled predictions_val.csv.*--weights mean"):
        build_ensemble([a.root, b.root], tmp_path / "unlabelled", calibrate=False)
    for m in (a, b):
        m.predictions_path("val").unlink()
    with pytest.raises(ConfigError, match="calibrat.*predictions_val.csv.*--calibrate off"):
        build_ensemble([a.root, b.root], tmp_path / "none", weights="mean", calibrate=True)


def test_members_of_one_folder_name_stay_apart_and_the_report_lists_them(tmp_path):
    """Two runs both called fold1 (from two cross-validations): each keeps its own scores, and report.md
    names every member with its weight and temperature."""
    y = np.arange(80) % 4
    a = _member(tmp_path / "cv_a" / "fold1", y, np.arange(80) < 40, 0)
    b = _member(tmp_path / "cv_b" / "fold1", y, np.arange(80) >= 40, 1)
    out = build_ensemble([a.root, b.root], tmp_path / "ens", calibrate=True, weights="mean")
    spec = json.loads((out / "ensemble.json").read_text())
    s = json.loads((out / "summary.json").read_text())
    assert spec["names"] == ["0-fold1", "1-fold1"] and sorted(s["members"]) == ["0-fold1", "1-fold1"]
    assert s["model"]["name"] == "ensemble of 0-fold1, 1-fold1"
    report = (out / "report.md").read_text()
    assert "## Ensemble members" in report and "Weights equal; each member temperature-scaled on validation" in report
    for name, t in zip(spec["names"], spec["temperatures"]):
        assert f"| {name} | 0.500 | {t:.3f} | " in report


def test_members_must_share_labels_and_clips(tmp_path):
    y = np.arange(8) % 4
    a = _member(tmp_path / "a", y, y >= 0, 0)
    b = RunFolder(tmp_path / "b")
    b.save_labels(["a", "b", "c", "x"])
    b.save_summary({})
    from clipwise.errors import ConfigError

    with pytest.raises(ConfigError, match="same labels"):
        build_ensemble([a.root, b.root], tmp_path / "e")
    with pytest.raises(ConfigError, match="at least two runs"):
        build_ensemble([a.root], tmp_path / "e")


@pytest.mark.slow
def test_an_ensemble_of_trained_runs_evaluates_and_predicts(synth_manifest, tmp_path, cli, tiny):
    for name, extra in (("low", "frontend.f_max=2000"), ("high", "frontend.f_min=2000")):
        r = cli("train", "--data", synth_manifest, "--out", tmp_path / name, "--epochs", "3", *tiny, extra)
        assert r.rc == 0, r.err
    r = cli("ensemble", tmp_path / "low", tmp_path / "high", "--out", tmp_path / "ens")
    assert r.rc == 0, r.err
    spec = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    weights, temps = spec["weights"], spec["temperatures"]
    assert spec["calibrated_on"] == "val" and all(0.05 <= t <= 20 for t in temps)
    summary = json.loads((tmp_path / "ens" / "summary.json").read_text())
    r = cli("evaluate", tmp_path / "ens", "--format", "json")
    assert r.rc == 0, r.err
    # re-scoring the audio through both members reproduces the ensemble's saved test scores
    assert json.loads(r.out)["metrics"]["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    from clipwise.kinds import load_run

    ens = load_run(tmp_path / "ens")
    files = sorted((synth_manifest.parent / "audio" / "tone").glob("*.wav"))[:3]
    mixed = ens.predict_files(files)
    parts = [load_run(tmp_path / n).predict_files(files) for n in ("low", "high")]
    np.testing.assert_allclose(mixed, weights[0] * temper(parts[0], temps[0]) + weights[1] * temper(parts[1], temps[1]),
                               atol=1e-6)
    r = cli("predict", tmp_path / "ens", *files, "--format", "csv")
    assert r.rc == 0 and r.out.count("\n") == 4
    # self-contained: the members' weights were copied in (without optimiser state), so the ensemble folder
    # moved alone, with its members' run folders gone, predicts and evaluates the same
    spec = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert spec["members"] == ["members/0-low", "members/1-high"]
    assert spec["sources"] == [str((tmp_path / n).resolve()) for n in ("low", "high")]
    for i, n in enumerate(("low", "high")):
        copied = tmp_path / "ens" / "members" / f"{i}-{n}" / "model.pt"
        assert copied.stat().st_size < (tmp_path / n / "checkpoints" / "best.ckpt").stat().st_size
    import shutil

    (tmp_path / "moved").mkdir()
    shutil.move(tmp_path / "ens", tmp_path / "moved" / "ens")
    for n in ("low", "high"):
        shutil.rmtree(tmp_path / n)
    np.testing.assert_allclose(load_run(tmp_path / "moved" / "ens").predict_files(files), mixed, atol=1e-6)
    r = cli("evaluate", tmp_path / "moved" / "ens", "--format", "json")
    assert r.rc == 0, r.err
    assert json.loads(r.out)["metrics"]["accuracy"] == pytest.approx(summary["test"]["accuracy"])


def test_an_ensemble_whose_members_hold_no_model_points_at_them(tmp_path):
    """Members with saved predictions only (nothing to copy) are referenced by path, and predicting says
    which member is missing and how to fix it once they are gone."""
    y = np.arange(8) % 4
    a, b = _member(tmp_path / "a", y, y >= 0, 0), _member(tmp_path / "b", y, y >= 0, 1)
    out = build_ensemble([a.root, b.root], tmp_path / "ens", weights="mean")
    spec = json.loads((out / "ensemble.json").read_text())
    assert spec["members"] == [str(a.root.resolve()), str(b.root.resolve())]
    import shutil

    shutil.rmtree(a.root)
    from clipwise.errors import RunError
    from clipwise.kinds import load_run

    with pytest.raises(RunError, match="are gone.*rebuild it with `clipwise ensemble`"):
        load_run(out)


def _ml_member(root, y: np.ndarray, knows: list[int], seed: int) -> RunFolder:
    """A multi-label run that scores the classes in ``knows`` right (0.9 present, 0.05 absent) and the others
    at random."""
    rng = np.random.default_rng(seed)
    run = RunFolder(root)
    run.write_info(kind="deep", task="multilabel")
    run.save_labels(LABELS)
    run.save_config_yaml({"data": {"task": "multilabel"}, "train": {"monitor": "val_lwlrap"}})
    for split in ("val", "test"):
        probs = rng.uniform(0.05, 0.95, y.shape)
        probs[:, knows] = np.where(y[:, knows] == 1, 0.9, 0.05)
        run.save_predictions(split, [f"clip{i}.wav" for i in range(len(y))], y, probs, thresholds=0.5)
    run.save_summary({"test": {"lwlrap": 0.5}, "baseline": {"lwlrap": 0.3, "mAP": 0.3}})
    return run


def test_multilabel_members_make_a_multilabel_ensemble_better_than_either(tmp_path):
    from clipwise.evaluate.multilabel import lwlrap

    rng = np.random.default_rng(3)
    y = (rng.random((120, 4)) < 0.4).astype(int)
    y[y.sum(1) == 0, 0] = 1  # every clip carries a label
    a = _ml_member(tmp_path / "a", y, [0, 1], 0)
    b = _ml_member(tmp_path / "b", y, [2, 3], 1)
    out = build_ensemble([a.root, b.root], tmp_path / "ens", weights="mean")
    s = json.loads((out / "summary.json").read_text())
    members = [m["test_lwlrap"] for m in s["members"].values()]
    assert max(members) < 0.96 and s["test"]["lwlrap"] == pytest.approx(1.0) and "accuracy" not in s["test"]
    ens = RunFolder(out)
    assert ens.task.multi_label
    thresholds = json.loads(ens.thresholds_path.read_text())
    assert thresholds["tuned_on"] == "val" and set(thresholds["thresholds"]) == set(LABELS)
    _, probs, truth = ens.load_predictions("test")
    assert np.array_equal(truth, y) and lwlrap(truth, probs) == pytest.approx(s["test"]["lwlrap"], abs=1e-6)
    # learned weights, by binary cross-entropy: a member that knows every class beats one that knows none
    c = _ml_member(tmp_path / "c", y, [0, 1, 2, 3], 2)
    d = _ml_member(tmp_path / "d", y, [], 3)
    w = learn_weights(y, [RunFolder(d.root).load_predictions("val")[1], RunFolder(c.root).load_predictions("val")[1]])
    assert w[1] > 0.9
    # a single-label member is refused
    single = _member(tmp_path / "single", np.arange(120) % 4, np.arange(120) < 60, 0)
    from clipwise.errors import ConfigError

    with pytest.raises(ConfigError, match="same task"):
        build_ensemble([a.root, single.root], tmp_path / "mixed")


def test_out_never_overwrites_a_member_or_another_run(tmp_path):
    y = np.arange(8) % 4
    a, b = _member(tmp_path / "a", y, y >= 0, 0), _member(tmp_path / "b", y, y >= 0, 1)
    before = {p.name: p.read_bytes() for p in a.root.iterdir()}
    from clipwise.errors import ConfigError

    for out in (a.root, a.root / "ens", tmp_path):
        with pytest.raises(ConfigError, match="overwrite what the member saved"):
            build_ensemble([a.root, b.root], out)
    other = tmp_path / "other_run"
    other.mkdir()
    (other / "summary.json").write_text("{}")
    with pytest.raises(ConfigError, match="not an ensemble folder"):
        build_ensemble([a.root, b.root], other)
    assert {p.name: p.read_bytes() for p in a.root.iterdir()} == before
    assert (other / "summary.json").read_text() == "{}" and len(list(other.iterdir())) == 1
    # an ensemble folder is rebuilt in place
    ens = build_ensemble([a.root, b.root], tmp_path / "ens", weights="mean")
    assert build_ensemble([b.root, a.root], ens, weights="mean") == ens


def test_an_ensemble_can_be_a_member_and_travels_with_its_copies(tmp_path):
    """A nested ensemble is copied with its own members/ folder, so the outer folder holds everything."""
    y = np.arange(80) % 4
    a = _member(tmp_path / "a", y, np.arange(80) < 40, 0)
    b = _member(tmp_path / "b", y, np.arange(80) >= 40, 1)
    c = _member(tmp_path / "c", y, np.arange(80) % 2 == 0, 2)
    inner = build_ensemble([a.root, b.root], tmp_path / "inner", weights="mean")
    (inner / "members" / "0-a").mkdir(parents=True)  # stands for a copied member model
    (inner / "members" / "0-a" / "model.pt").write_bytes(b"weights")
    outer = build_ensemble([inner, c.root], tmp_path / "outer", weights="mean")
    spec = json.loads((outer / "ensemble.json").read_text())
    assert spec["members"][0] == "members/0-inner"
    copied = outer / "members" / "0-inner"
    assert json.loads((copied / "ensemble.json").read_text()) == json.loads((inner / "ensemble.json").read_text())
    assert (copied / "members" / "0-a" / "model.pt").read_bytes() == b"weights"
    s = json.loads((outer / "summary.json").read_text())
    assert set(s["members"]) == {"inner", "c"} and (outer / "report.md").is_file()
