"""SpecAugment and random gain: limits, train/eval behaviour and replayable randomness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipwise.augment import SpecAugment, random_gain


def _runs(row: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D boolean tensor."""
    runs, n = [], 0
    for v in row.tolist():
        if v:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs + ([n] if n else [])


# --- draw -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "fraction"), [(40, 0.15), (101, 0.1), (7, 0.5), (64, 1.0)])
def test_a_single_mask_is_one_band_no_wider_than_the_limit(length, fraction):
    g = torch.Generator().manual_seed(length)
    masks = SpecAugment.draw(256, length, masks=1, max_fraction=fraction, generator=g)
    assert masks.shape == (256, length) and masks.dtype == torch.bool
    max_width = int(fraction * length)
    widths = masks.sum(dim=1)
    assert int(widths.max()) <= max_width
    for row in masks:
        assert len(_runs(row)) <= 1  # one contiguous band, inside the axis
    # the widths are drawn over the whole allowed range, not stuck at one value
    assert int(widths.max()) == max_width and int(widths.min()) == 0


def test_several_masks_cover_at_most_their_summed_widths():
    g = torch.Generator().manual_seed(0)
    masks = SpecAugment.draw(128, 50, masks=3, max_fraction=0.1, generator=g)
    assert int(masks.sum(dim=1).max()) <= 3 * 5
    assert all(len(_runs(row)) <= 3 and max(_runs(row), default=0) <= 15 for row in masks)


def test_masks_reach_both_ends_of_the_axis():
    g = torch.Generator().manual_seed(1)
    masks = SpecAugment.draw(2000, 20, masks=1, max_fraction=0.25, generator=g)
    assert bool(masks[:, 0].any()) and bool(masks[:, -1].any())


@pytest.mark.parametrize(("masks", "fraction", "length"), [(0, 0.5, 10), (2, 0.0, 10), (2, 0.09, 10)])
def test_no_masks_when_the_count_or_the_width_is_zero(masks, fraction, length):
    assert not SpecAugment.draw(4, length, masks=masks, max_fraction=fraction).any()


def test_draw_is_reproducible_with_a_seeded_generator():
    a = SpecAugment.draw(8, 30, masks=2, max_fraction=0.2, generator=torch.Generator().manual_seed(5))
    b = SpecAugment.draw(8, 30, masks=2, max_fraction=0.2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


# --- forward and apply ----------------------------------------------------------------------------------


def test_forward_masks_within_limits_and_only_whole_rows_and_columns():
    torch.manual_seed(0)
    aug = SpecAugment(freq_masks=1, freq_mask_fraction=0.25, time_masks=1, time_mask_fraction=0.2, fill=-7.0).train()
    x = torch.randn(16, 1, 32, 50) + 100.0  # no cell is -7 by chance
    out = aug(x)
    masked = out == -7.0
    assert torch.equal(out[~masked], x[~masked])  # untouched cells keep their values
    for cells in masked[:, 0]:
        rows = cells.all(dim=1)  # bins masked over every frame
        cols = cells.all(dim=0)  # frames masked over every bin
        # every masked cell lies in a fully masked bin or frame: the masks are bands, not speckle
        assert torch.equal(cells, rows[:, None] | cols[None, :])
        assert int(rows.sum()) <= int(0.25 * 32) and len(_runs(rows)) <= 1
        assert int(cols.sum()) <= int(0.2 * 50) and len(_runs(cols)) <= 1
    assert masked.any()


def test_forward_is_identity_in_eval_mode():
    aug = SpecAugment(freq_masks=4, freq_mask_fraction=0.5, time_masks=4, time_mask_fraction=0.5).eval()
    x = torch.randn(3, 1, 16, 20)
    assert aug(x) is x


def test_each_example_gets_its_own_masks():
    torch.manual_seed(0)
    aug = SpecAugment(freq_masks=2, freq_mask_fraction=0.3, time_masks=2, time_mask_fraction=0.3, fill=0.0).train()
    x = torch.ones(8, 1, 32, 40)
    masked = aug(x) == 0.0
    patterns = {tuple(m.flatten().tolist()) for m in masked}
    assert len(patterns) > 1, "all examples of the batch got the same masks"


def test_masks_are_shared_across_channels():
    torch.manual_seed(2)
    aug = SpecAugment(freq_masks=2, freq_mask_fraction=0.3, time_masks=2, time_mask_fraction=0.3).train()
    out = aug(torch.ones(4, 3, 16, 20))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])


def test_apply_with_given_masks_is_deterministic():
    x = torch.arange(2 * 1 * 4 * 5, dtype=torch.float32).reshape(2, 1, 4, 5)
    freq = torch.tensor([[False, True, False, False], [False, False, False, False]])
    time = torch.tensor([[False, False, False, False, False], [True, True, False, False, False]])
    out = SpecAugment.apply(x, freq, time, fill=-1.0)
    expected = x.clone()
    expected[0, :, 1, :] = -1.0
    expected[1, :, :, :2] = -1.0
    assert torch.equal(out, expected)
    assert torch.equal(SpecAugment.apply(x, freq, time, fill=-1.0), out)
    assert torch.equal(x, torch.arange(40, dtype=torch.float32).reshape(2, 1, 4, 5))  # input untouched


def test_forward_replays_through_apply_under_the_same_seed():
    aug = SpecAugment(freq_masks=2, freq_mask_fraction=0.2, time_masks=2, time_mask_fraction=0.2, fill=3.0).train()
    x = torch.randn(4, 1, 20, 30, generator=torch.Generator().manual_seed(9))
    torch.manual_seed(42)
    out = aug(x)
    torch.manual_seed(42)
    freq = SpecAugment.draw(4, 20, masks=2, max_fraction=0.2)
    time = SpecAugment.draw(4, 30, masks=2, max_fraction=0.2)
    assert torch.equal(out, SpecAugment.apply(x, freq, time, fill=3.0))


# --- random_gain ----------------------------------------------------------------------------------------


def test_random_gain_stays_within_the_range_and_uses_it():
    x = np.full(16, 0.25, dtype=np.float32)
    rng = np.random.default_rng(0)
    gains_db = []
    for _ in range(400):
        y = random_gain(x, max_gain_db=6.0, rng=rng)
        assert y.dtype == np.float32 and y.shape == x.shape
        ratio = y / x
        assert np.allclose(ratio, ratio[0])  # one gain for the whole clip
        gains_db.append(20 * np.log10(float(ratio[0])))
    gains_db = np.array(gains_db)
    assert gains_db.min() >= -6.0 - 1e-4 and gains_db.max() <= 6.0 + 1e-4
    assert gains_db.min() < -5.0 and gains_db.max() > 5.0  # both signs, close to the limits


def test_random_gain_is_reproducible_for_a_seed():
    x = np.linspace(-1, 1, 8, dtype=np.float32)
    a = random_gain(x, max_gain_db=3.0, rng=np.random.default_rng(7))
    b = random_gain(x, max_gain_db=3.0, rng=np.random.default_rng(7))
    assert np.array_equal(a, b)


def test_zero_gain_range_returns_the_input_without_drawing():
    x = np.ones(4, dtype=np.float32)
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert random_gain(x, max_gain_db=0.0, rng=rng) is x
    assert rng.bit_generator.state == state
