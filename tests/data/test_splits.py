from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from clipwise.data.splits import assign_splits, seen_group_protocol, shared_groups
from clipwise.errors import ConfigError, ManifestError


def grouped(n_groups: int = 40, seed: int = 0, n_labels: int = 4) -> pd.DataFrame:
    """Rows in groups of 1-4, each group one label."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        for k in range(int(rng.integers(1, 5))):
            rows.append({"path": f"/a/g{g}_{k}.wav", "label": f"c{g % n_labels}", "group": f"g{g}"})
    return pd.DataFrame(rows)


def assert_groups_whole(df: pd.DataFrame) -> None:
    sides = df.groupby("group")["split"].nunique()
    assert sides.max() == 1, f"groups on two sides: {list(sides[sides > 1].index)}"


def test_hold_out_by_group_keeps_groups_whole_and_fills_every_split():
    df = grouped()
    out = assign_splits(df, seed=3)
    assert set(out["split"]) == {"train", "val", "test"}
    assert_groups_whole(out)
    share = out["split"].value_counts(normalize=True)
    assert 0.05 < share["test"] < 0.3 and 0.05 < share["val"] < 0.3
    assert "split" not in df  # the input is not modified


def test_hold_out_is_stratified_by_label():
    df = grouped(n_groups=80)
    out = assign_splits(df)
    for split in ("val", "test"):
        assert set(out.loc[out["split"] == split, "label"]) == {"c0", "c1", "c2", "c3"}


def test_deterministic_for_a_seed():
    df = grouped()
    a, b, c = assign_splits(df, seed=1), assign_splits(df, seed=1), assign_splits(df, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert not a["split"].equals(c["split"])


def test_without_groups_rows_are_stratified():
    df = pd.DataFrame({"path": [f"/a/{i}.wav" for i in range(60)], "label": ["x", "y", "z"] * 20})
    out = assign_splits(df, val_fraction=0.2, test_fraction=0.2)
    counts = pd.crosstab(out["label"], out["split"])
    assert (counts["test"] == 4).all() and (counts["val"] == 4).all()


def test_singleton_classes_fall_back_to_plain_shuffling():
    df = pd.DataFrame({"path": [f"/a/{i}.wav" for i in range(10)], "label": list("aaaaaaaabc")})
    out = assign_splits(df)
    assert set(out["split"]) == {"train", "val", "test"}


def test_three_rows_give_one_per_split():
    df = pd.DataFrame({"path": ["/a", "/b", "/c"], "label": "x"})
    assert sorted(assign_splits(df)["split"]) == ["test", "train", "val"]


def test_multi_label_rows_are_accepted():
    df = grouped()
    df["label"] = df["label"] + ";extra"
    out = assign_splits(df)
    assert set(out["split"]) == {"train", "val", "test"}
    assert_groups_whole(out)


def test_test_fold_selects_the_test_set_and_val_is_held_out_by_group():
    df = grouped(n_groups=60)
    df["fold"] = df["group"].str[1:].astype(int) % 5 + 1
    out = assign_splits(df, test_fold=3)
    assert (out["split"] == "test").equals(out["fold"] == 3)
    assert set(out.loc[out["fold"] != 3, "split"]) == {"train", "val"}
    assert_groups_whole(out)


def test_missing_test_fold_uses_the_lowest_with_a_warning():
    df = grouped()
    df["fold"] = df["group"].str[1:].astype(int) % 3 + 2  # folds 2, 3, 4
    with pytest.warns(UserWarning, match=r"lowest fold \(2\)"):
        out = assign_splits(df)
    assert (out["split"] == "test").equals(out["fold"] == 2)


def test_unknown_test_fold_names_the_folds():
    df = grouped()
    df["fold"] = df["group"].str[1:].astype(int) % 2 + 1
    with pytest.raises(ConfigError, match="available folds: 1, 2"):
        assign_splits(df, test_fold=7)


def test_a_single_fold_leaves_nothing_to_train_on():
    df = grouped()
    df["fold"] = 1
    with pytest.raises(ManifestError, match="no training rows"):
        assign_splits(df, test_fold=1)


def test_an_existing_split_is_kept_and_val_is_held_out_of_train():
    df = grouped()
    df["split"] = np.where(df["group"].str[1:].astype(int) < 8, "test", "train")
    out = assign_splits(df)
    assert (out["split"] == "test").equals(df["split"] == "test")
    assert set(out.loc[df["split"] == "train", "split"]) == {"train", "val"}
    assert_groups_whole(out)


def _split_within_groups(df: pd.DataFrame) -> pd.DataFrame:
    """A manifest split that puts every group on both sides (as FSDD's official split does with speakers)."""
    df = pd.concat([df.assign(path=df["path"] + f"#{k}") for k in range(3)], ignore_index=True)
    df["split"] = np.where(df["path"].str.endswith("#0"), "test", "train")
    return df


def test_val_mirrors_a_test_split_that_shares_groups():
    df = _split_within_groups(grouped())
    out = assign_splits(df, seed=1)
    sides = out[out["split"] != "test"].groupby("group")["split"].nunique()
    assert (sides > 1).any(), "val was held out by group although test shares every group with train"
    val = (out["split"] == "val").mean() / (out["split"] != "test").mean()
    assert 0.1 < val < 0.2
    # every class keeps training rows and appears in val (stratified by row)
    assert set(out.loc[out["split"] == "val", "label"]) == set(df["label"])


def test_a_few_groups_spanning_folds_do_not_make_validation_ungrouped():
    """ESC-50 files a handful of recordings under two folds (with different labels): a metadata slip, not a
    seen-group protocol. Validation keeps groups whole; only when most test rows are in seen groups does it
    mirror them."""
    df = grouped(n_groups=60)
    df["fold"] = df["group"].str[1:].astype(int) % 5 + 1
    sizes = df[df["fold"] == 1].groupby("group").size()
    slip = sizes[sizes > 1].index[0]
    rows = df.index[df["group"] == slip]
    df.loc[rows[1:], "fold"] = 2  # its first row stays in the test fold, the others go to training
    out = assign_splits(df, test_fold=1, seed=1)
    assert shared_groups(out, out["split"], "train", "test") == {slip}
    assert not seen_group_protocol(df, np.where(df["fold"] == 1, "test", "train"))
    assert_groups_whole(out[out["split"] != "test"])
    # most test rows in groups with training rows: the protocol is seen groups, and validation mirrors it
    split = _split_within_groups(grouped())["split"]
    assert seen_group_protocol(_split_within_groups(grouped()), split)


def test_val_groups_group_keeps_groups_whole_even_when_test_shares_them():
    out = assign_splits(_split_within_groups(grouped()), seed=1, val_groups="group")
    assert_groups_whole(out[out["split"] != "test"])


def test_val_groups_ignore_holds_out_rows_even_with_a_grouped_test():
    df = grouped(n_groups=60)
    df["split"] = np.where(df["group"].str[1:].astype(int) < 10, "test", "train")
    assert_groups_whole(assign_splits(df, seed=1))  # auto: test is group-disjoint, so val is too
    out = assign_splits(df, seed=1, val_groups="ignore")
    sides = out[out["split"] != "test"].groupby("group")["split"].nunique()
    assert (sides > 1).any()


def test_unknown_val_groups_is_a_config_error():
    with pytest.raises(ConfigError, match="val_groups must be one of auto, group, ignore, got 'speaker'"):
        assign_splits(grouped(), val_groups="speaker")


def test_an_existing_val_split_is_kept_unchanged():
    df = grouped()
    df["split"] = np.resize(["train", "train", "val", "test"], len(df))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = assign_splits(df)
    assert out["split"].equals(df["split"])


def test_a_split_without_test_rows_warns():
    df = grouped()
    df["split"] = "train"
    with pytest.warns(UserWarning, match="test set is empty"):
        out = assign_splits(df)
    assert set(out["split"]) == {"train", "val"}


def test_split_and_test_fold_together_is_an_error():
    df = grouped()
    df["split"] = "train"
    df["fold"] = 1
    with pytest.raises(ConfigError, match="drop one of them"):
        assign_splits(df, test_fold=1)


def test_test_fold_without_folds_is_an_error():
    with pytest.raises(ConfigError, match="no 'fold' column"):
        assign_splits(grouped(), test_fold=1)


def test_a_single_group_cannot_be_held_out():
    df = grouped()
    df["group"] = "same"
    with pytest.raises(ManifestError, match="share the group 'same'"):
        assign_splits(df)


@pytest.mark.parametrize("kwargs", [{"val_fraction": 0}, {"test_fraction": 1.2}, {"val_fraction": 0.5,
                                                                                    "test_fraction": 0.5}])
def test_bad_fractions(kwargs):
    with pytest.raises(ConfigError, match="fraction"):
        assign_splits(grouped(), **kwargs)


def test_multilabel_folds_spread_a_rare_tag_that_comes_second():
    """A rare tag that always comes with a common one used to be stratified as the common one (the cell's first
    label), so where its clips landed was chance; stratified by each clip's rarest label, every fold gets its
    share."""
    from clipwise.data.splits import make_folds

    cells = ["common;rare"] * 8 + ["common"] * 16 + ["other"] * 16
    df = pd.DataFrame({"path": [f"c{i}.wav" for i in range(40)], "label": cells,
                       "group": [f"g{i}" for i in range(40)]})
    for seed in range(5):
        folds = make_folds(df, 4, seed=seed)
        rare = folds[[("rare" in c) for c in cells]]
        assert sorted(np.bincount(rare, minlength=5)[1:]) == [2, 2, 2, 2], (seed, rare)


def test_held_out_groups_represent_every_class_when_groups_each_hold_one_class():
    """29 speakers, most heard in one emotion only (as in a real emotional-speech set): a single random draw of
    test speakers left a class out; the best-balanced of several keeps every class in test and validation."""
    from clipwise.data.splits import split_warnings

    rng = np.random.default_rng(0)
    rows = []
    emotions = ["neutral", "angry", "happy", "sad"]
    for s in range(29):
        main = emotions[0] if s < 18 else emotions[1 + s % 3]
        for i in range(14):
            label = main if rng.random() < 0.9 else emotions[rng.integers(4)]
            rows.append({"path": f"s{s}_{i}.wav", "label": label, "group": f"speaker{s}"})
    df = pd.DataFrame(rows)
    out = assign_splits(df, val_fraction=0.15, test_fraction=0.15, seed=0)
    for split in ("val", "test"):
        assert set(out.loc[out["split"] == split, "label"]) == set(emotions), split
    assert not set(out.loc[out["split"] == "test", "group"]) & set(out.loc[out["split"] == "train", "group"])
    warnings = split_warnings(out)
    assert any("groups hold a single class" in w and "clipwise cv" in w for w in warnings)


def test_split_warnings_name_a_missing_class_and_a_skewed_mix():
    from clipwise.data.splits import split_warnings

    df = pd.DataFrame({"path": [f"{i}.wav" for i in range(40)],
                       "label": ["a"] * 20 + ["b"] * 20,
                       "split": ["train"] * 10 + ["test"] * 10 + ["train"] * 20})
    text = " ".join(split_warnings(df))
    assert "the test split has no clips of 1 class(es) training has (b)" in text
    assert "class mix is far from training's" in text and "100% of it is a" in text
