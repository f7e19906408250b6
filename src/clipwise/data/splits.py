"""Train / val / test assignment that respects a manifest's own split, its folds and its groups.

Rows that share a ``group`` (a recording, a speaker, a source file) always land on the same side, so a
score never rests on audio the model heard in training.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    KFold,
    ShuffleSplit,
    StratifiedGroupKFold,
    StratifiedKFold,
    StratifiedShuffleSplit,
)

from clipwise.config import VAL_GROUPS
from clipwise.data.manifest import normalise_split, parse_labels
from clipwise.errors import ConfigError, ManifestError

__all__ = ["assign_splits", "make_folds"]


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ConfigError(f"{name} must be a number between 0 and 1 (exclusive), got {value!r}")
    return float(value)


def _strata(df: pd.DataFrame) -> np.ndarray:
    """One stratification label per row: a multi-label cell's rarest label in ``df`` (ties: the first named), so
    that rare tags, which tend to come with common ones, are spread over the folds rather than drawn by chance."""
    cells = [parse_labels(v) or [""] for v in df["label"]]
    counts = pd.Series([lab for c in cells for lab in c]).value_counts()
    return np.array([min(c, key=lambda lab: counts[lab]) for c in cells], dtype=object)


#: shuffles of StratifiedGroupKFold tried when holding out groups (every fold of each is a candidate)
SPLIT_TRIES = 8
#: split warnings: a class mix this far (total variation) from training's, groups that hold one class this often
MIX_DISTANCE = 0.25
CONFOUNDED_SHARE = 0.8


def _imbalance(y: np.ndarray, chosen: np.ndarray, fraction: float) -> tuple[int, float]:
    """How badly held-out rows ``chosen`` represent the classes: classes missing from them first, then the total
    variation distance of their class mix from the whole's plus how far their size is from ``fraction``."""
    classes, whole = np.unique(y, return_counts=True)
    held = pd.Series(y[chosen]).value_counts().reindex(classes, fill_value=0).to_numpy()
    missing = int(((held == 0) & (whole >= 2)).sum())
    distance = 0.5 * np.abs(held / held.sum() - whole / whole.sum()).sum()
    return missing, float(distance + abs(len(chosen) / len(y) - fraction))


def split_warnings(df: pd.DataFrame) -> list[str]:
    """What makes a split's scores hard to read: a held-out split without a class training has, a class mix far
    from training's, or groups that each hold one class (group and class confounded)."""
    if "split" not in df or "label" not in df:
        return []
    strata = pd.Series(_strata(df), index=df.index)
    train = strata[df["split"] == "train"].value_counts(normalize=True)
    out = []
    for split in ("val", "test"):
        part = strata[df["split"] == split]
        if part.empty or train.empty:
            continue
        missing = sorted(set(train.index) - set(part))
        if missing:
            out.append(f"the {split} split has no clips of {len(missing)} class(es) training has "
                       f"({', '.join(map(str, missing[:5]))}): its scores say nothing about them")
        mix = part.value_counts(normalize=True).reindex(train.index.union(part.unique()), fill_value=0)
        distance = 0.5 * float(np.abs(mix - train.reindex(mix.index, fill_value=0)).sum())
        if distance > MIX_DISTANCE:
            top = mix.idxmax()
            out.append(f"the {split} split's class mix is far from training's (total variation {distance:.2f}; "
                       f"{mix[top]:.0%} of it is {top}): its accuracy mostly measures a few classes")
    if "group" in df:
        # the share of each group's clips in its most common class
        main = strata.groupby(df["group"].astype(str)).agg(lambda s: s.value_counts(normalize=True).iloc[0])
        mostly_one = int((main >= CONFOUNDED_SHARE).sum())
        if len(main) >= 5 and mostly_one >= CONFOUNDED_SHARE * len(main):
            out.append(f"{mostly_one} of {len(main)} groups hold a single class (or nearly, {CONFOUNDED_SHARE:.0%} "
                       "of their clips or more): group and class are confounded, so a held-out group may be missing "
                       "classes by chance; compare settings by a cross-validation over groups (`clipwise cv`) "
                       "rather than one split")
    return out


def _n_held(n: int, fraction: float) -> int:
    """How many of ``n`` items to hold out: about ``fraction``, but never none and never all."""
    return max(1, min(n - 1, int(round(fraction * n))))


def _hold_out(df: pd.DataFrame, fraction: float, seed: int, what: str, *, by_group: bool = True) -> np.ndarray:
    """Boolean mask of rows to hold out (about ``fraction`` of them), keeping groups whole unless
    ``by_group`` is false.

    Raises:
        ManifestError: fewer than two rows, or every row shares one group.
    """
    n = len(df)
    y = _strata(df)
    index = np.arange(n)
    held = np.zeros(n, dtype=bool)
    if by_group and "group" in df:
        groups = df["group"].astype(str).to_numpy()
        n_groups = len(np.unique(groups))
        if n_groups < 2:
            raise ManifestError(
                f"cannot hold out a {what} set: all {n} rows share the group {groups[0]!r}, and a group may not "
                "be split; give the rows distinct groups or add a 'split' column"
            )
        n_splits = min(n_groups, max(2, int(round(1.0 / fraction))))
        # every fold of several shuffles is a candidate; the one whose classes best match the whole is held out
        # (a single draw can leave a class out, or hold out mostly one class, when groups hold one class each)
        candidates = []
        with warnings.catch_warnings():  # sklearn warns about classes smaller than n_splits; that is fine
            warnings.simplefilter("ignore", UserWarning)
            for attempt in range(SPLIT_TRIES):
                try:
                    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed + attempt)
                    candidates += [c for _, c in folds.split(index, y, groups) if 0 < len(c) < n]
                except ValueError:
                    break
        chosen = min(candidates, key=lambda c: _imbalance(y, c, fraction)) if candidates else np.array([], int)
        if len(chosen) == 0 or len(chosen) == n:
            splitter = GroupShuffleSplit(n_splits=1, test_size=_n_held(n_groups, fraction), random_state=seed)
            _, chosen = next(splitter.split(index, y, groups))
    else:
        if n < 2:
            raise ManifestError(f"cannot hold out a {what} set from a single row; add more rows or a 'split' column")
        n_test = _n_held(n, fraction)
        try:
            splitter = StratifiedShuffleSplit(n_splits=1, test_size=n_test, random_state=seed)
            _, chosen = next(splitter.split(index, y))
        except ValueError:  # a class with one member, or fewer held-out rows than classes
            _, chosen = next(ShuffleSplit(n_splits=1, test_size=n_test, random_state=seed).split(index))
    held[chosen] = True
    return held


def _split_from_column(df: pd.DataFrame) -> np.ndarray:
    split = df["split"].map(normalise_split)
    bad = split.isna()
    if bad.any():
        values = ", ".join(repr(v) for v in df.loc[bad, "split"].unique()[:5])
        raise ManifestError(f"column 'split' holds {values}; use train, val or test")
    return split.to_numpy(dtype=object)


def _split_from_folds(df: pd.DataFrame, test_fold: int | None) -> np.ndarray:
    folds = sorted(int(f) for f in pd.unique(df["fold"]))
    if test_fold is None:
        test_fold = folds[0]
        warnings.warn(
            f"no test_fold given: using the lowest fold ({test_fold}) as the test set (folds: "
            f"{', '.join(map(str, folds))}); set test_fold to choose another",
            UserWarning,
            stacklevel=3,
        )
    elif test_fold not in folds:
        raise ConfigError(f"test_fold={test_fold!r} is not a fold of this manifest; available folds: "
                          f"{', '.join(map(str, folds))}")
    return np.where(df["fold"].to_numpy() == test_fold, "test", "train").astype(object)




def shared_groups(df: pd.DataFrame, split: np.ndarray | pd.Series, a: str, b: str) -> set[str]:
    """The ``group`` values that have rows on both side ``a`` and side ``b`` of ``split`` (none without groups)."""
    if "group" not in df:
        return set()
    groups = df["group"].astype(str).to_numpy()
    split = np.asarray(split)
    return set(groups[split == a]) & set(groups[split == b])


def rows_in_shared_groups(df: pd.DataFrame, split: np.ndarray | pd.Series, side: str = "test") -> int:
    """How many rows of ``side`` belong to groups that also have training rows."""
    shared = shared_groups(df, split, "train", side)
    if not shared:
        return 0
    split = np.asarray(split)
    return int(df["group"].astype(str)[split == side].isin(shared).sum())


def mostly_seen_groups(rows_in_shared: int, n_test: int) -> bool:
    """The rule behind :func:`seen_group_protocol`, from the counts alone (the report applies it to a run's
    summary): over half of the test rows are in groups that also have training rows."""
    return n_test > 0 and rows_in_shared > n_test / 2


def seen_group_protocol(df: pd.DataFrame, split: np.ndarray | pd.Series) -> bool:
    """True when the test set is, by design, about groups seen in training: over half of its rows belong to
    groups that also have training rows (FSDD's official split: all of them). A few groups that span train and
    test (ESC-50: a handful of recordings filed under two folds, with different labels) are metadata slips for
    the leakage check to report, not a protocol to mirror."""
    return mostly_seen_groups(rows_in_shared_groups(df, split), int((np.asarray(split) == "test").sum()))


def assign_splits(
    df: pd.DataFrame,
    *,
    test_fold: int | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    val_groups: str = "auto",
) -> pd.DataFrame:
    """Give every row a split: train, val or test.

    - A ``split`` column is kept as it is; when it has no val rows, val is held out of train.
    - Otherwise, with a ``fold`` column, the rows of ``test_fold`` (default: the lowest fold, with a
      warning) are the test set and val is held out of the rest.
    - Otherwise test and then val are held out of all rows.

    Held-out sets keep ``group``s whole and are stratified by label (a multi-label clip's rarest) where possible.
    The one exception is validation under ``val_groups="auto"`` when the manifest's own test set is about groups
    seen in training (over half of its rows are in groups with training rows; FSDD's official split puts every
    speaker on both sides): validation then mirrors that protocol and is held out by row, because a validation
    set of unseen groups would both remove whole groups from training and select checkpoints for a different
    task than the one the test set measures. A few shared groups do not make such a protocol (:func:`seen_group_protocol`).

    Args:
        df: a manifest.
        test_fold: the fold to test on (only with a ``fold`` column).
        val_fraction: share held out for validation: of the training rows when the test set comes from
            ``split`` or ``fold``, of all rows otherwise.
        test_fraction: share of all rows held out for test (only without ``split`` and ``fold``).
        seed: makes the assignment reproducible.
        val_groups: how validation is held out of the training rows: ``group`` keeps groups whole,
            ``ignore`` holds out rows, ``auto`` keeps groups whole unless most test rows are in groups that
            have training rows.

    Returns:
        A copy of ``df`` with a ``split`` column.

    Raises:
        ConfigError: bad fractions, ``test_fold`` together with a ``split`` column, or an unknown fold.
        ManifestError: the training set would be empty, or groups make a hold-out impossible.
    """
    val_fraction = _check_fraction("val_fraction", val_fraction)
    if val_groups not in VAL_GROUPS:
        raise ConfigError(f"val_groups must be one of {', '.join(VAL_GROUPS)}, got {val_groups!r}")
    test_fraction = _check_fraction("test_fraction", test_fraction)
    if len(df) == 0:
        raise ManifestError("cannot assign splits to an empty manifest")
    if "split" in df and test_fold is not None:
        raise ConfigError(
            f"test_fold={test_fold!r} was given but the manifest already has a 'split' column; drop one of them"
        )
    if test_fold is not None and "fold" not in df:
        raise ConfigError(f"test_fold={test_fold!r} was given but the manifest has no 'fold' column; leave it out")
    out = df.copy()
    if "split" in df:
        split = _split_from_column(df)
    elif "fold" in df:
        split = _split_from_folds(df, test_fold)
    else:
        if test_fraction + val_fraction >= 1.0:
            raise ConfigError(
                f"val_fraction + test_fraction must be below 1 to leave training data, got "
                f"{val_fraction} + {test_fraction}"
            )
        split = np.full(len(df), "train", dtype=object)
        split[_hold_out(df, test_fraction, seed, "test")] = "test"
        val_fraction = val_fraction / (1.0 - test_fraction)  # of what is left after the test set
    if not (split == "val").any():
        train = np.flatnonzero(split == "train")
        if len(train) == 0:
            raise ManifestError("the manifest has no training rows; mark some rows split=train")
        by_group = val_groups == "group" or (val_groups == "auto" and not seen_group_protocol(df, split))
        # a validation set smaller than the class count cannot show every class (a tiny one of a single class
        # scores "perfect" and ends training early): hold out at least one clip per class, at most half
        n_classes = len(set(_strata(df.iloc[train])))
        fraction = max(val_fraction, min(0.5, n_classes / len(train)))
        held = _hold_out(df.iloc[train], fraction, seed, "validation", by_group=by_group)
        split[train[held]] = "val"
    if not (split == "train").any():
        raise ManifestError("no rows are left for training; mark some rows split=train or use fewer folds for test")
    if not (split == "test").any():
        warnings.warn("the test set is empty: the manifest's 'split' column has no test rows", UserWarning,
                      stacklevel=2)
    out["split"] = split.astype(str)
    return out


def make_folds(df: pd.DataFrame, k: int, *, seed: int = 0) -> np.ndarray:
    """Fold numbers 1..k for cross-validation: stratified by label (a multi-label clip's rarest), groups kept
    whole.

    Stratification is dropped (with the reason in a warning) when a class has fewer rows than folds would need;
    groups are never split.

    Raises:
        ConfigError: ``k`` is below 2.
        ManifestError: fewer rows (or groups) than folds.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, got {k!r}")
    y = _strata(df)
    index = np.arange(len(df))
    groups = df["group"].astype(str).to_numpy() if "group" in df else None
    units = len(np.unique(groups)) if groups is not None else len(df)
    if units < k:
        what = "groups" if groups is not None else "rows"
        raise ManifestError(f"cannot make {k} folds from {units} {what}; use at most {units} folds")
    folds = np.zeros(len(df), dtype=int)
    smallest = int(pd.Series(y).value_counts().min())
    if smallest >= k:
        splitter = (StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed) if groups is not None
                    else StratifiedKFold(n_splits=k, shuffle=True, random_state=seed))
    else:
        warnings.warn(f"a class has only {smallest} row(s), fewer than the {k} folds: folds are not stratified",
                      UserWarning, stacklevel=2)
        splitter = GroupKFold(n_splits=k) if groups is not None else KFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # sklearn's note about classes smaller than n_splits is the one above
        warnings.simplefilter("ignore", UserWarning)
        for fold, (_, test) in enumerate(splitter.split(index, y, groups), start=1):
            folds[test] = fold
    return folds
