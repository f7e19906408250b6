"""SpecAugment and random gain: limits, train/eval behaviour and replayable randomness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipwise.augment import FilterAugment, FrequencyWarp, Overlay, SpecAugment, TimeStretch, random_gain


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


# --- spectrum warps and equalisation ------------------------------------------------------------------------------


def _centres(n_mels: int = 64, sample_rate: int = 16000) -> np.ndarray:
    from clipwise.frontends import LogMel

    return LogMel(sample_rate=sample_rate, n_mels=n_mels).centres_hz


def test_frequency_warp_moves_a_peak_to_the_band_of_the_scaled_frequency():
    centres = _centres()
    warp = FrequencyWarp(centres, max_warp=0.2)
    x = torch.zeros(3, 64, 5)
    peak = 40
    x[:, peak] = 1.0
    out = warp.apply(x, np.array([1.0, 1.15, 0.85]))
    assert torch.equal(out[0], x[0])  # factor 1 is the identity
    for row, factor in ((1, 1.15), (2, 0.85)):
        expected = int(np.argmin(np.abs(centres - centres[peak] * factor)))
        assert abs(int(out[row, :, 0].argmax()) - expected) <= 1
        assert float(out[row].sum()) == pytest.approx(5 * float(out[row, :, 0].sum()))  # same shift every frame


def test_frequency_warp_is_the_identity_in_eval_mode_and_random_in_training():
    warp = FrequencyWarp(_centres(), max_warp=0.1)
    x = torch.randn(4, 64, 10)
    assert torch.equal(warp.eval()(x), x)
    np.random.seed(0)
    assert not torch.allclose(warp.train()(x), x)


def test_time_stretch_resamples_time_and_fills_the_freed_end_with_the_quietest_level():
    x = torch.arange(10.0).view(1, 1, 10).repeat(2, 2, 1)
    faster = TimeStretch.apply(x, np.array([2.0, 1.0]))
    assert faster[0, 0].tolist() == [0, 2, 4, 6, 8, 0, 0, 0, 0, 0]
    assert torch.equal(faster[1], x[1])
    slower = TimeStretch.apply(x[:1], np.array([0.5]))
    assert slower[0, 0].tolist() == pytest.approx([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5])


def test_time_stretch_rates_stay_within_the_limit():
    stretch = TimeStretch(max_stretch=0.25).train()
    x = torch.arange(100.0).view(1, 1, 100).repeat(200, 1, 1)
    np.random.seed(1)
    out = stretch(x)
    rates = out[:, 0, 1]  # frame 1 reads source frame `rate`
    assert float(rates.min()) >= 1 / 1.25 - 1e-6 and float(rates.max()) <= 1.25 + 1e-6
    assert float(rates.max() - rates.min()) > 0.3  # drawn across the range


def test_filter_augment_adds_a_bounded_piecewise_linear_gain_curve():
    fa = FilterAugment(max_db=6.0, max_points=3)
    curves = fa.draw(500, 64, rng=np.random.default_rng(0))
    assert curves.shape == (500, 64)
    assert float(curves.abs().max()) <= 6.0 and float(curves.abs().max()) > 5.0
    # piecewise linear with at most 3 interior knots: at most 3 changes of slope
    slope_changes = (curves.diff(dim=1).diff(dim=1).abs() > 1e-9).sum(dim=1)
    assert int(slope_changes.max()) <= 2 * 3
    x = torch.randn(4, 64, 7)
    assert torch.equal(fa.eval()(x), x)
    diff = fa.train()(x) - x
    assert torch.allclose(diff, diff[:, :, :1].expand_as(diff))  # one curve for every frame of an example


def test_mfcc_training_path_through_the_log_mel_matches_its_forward():
    from clipwise.frontends import MFCC

    fe = MFCC(sample_rate=16000, n_mfcc=20, n_mels=40)
    wave = torch.randn(2, 8000)
    assert torch.allclose(fe.from_log_mel(fe.log_mel(wave)), fe(wave))
    assert len(fe.centres_hz) == 40


def test_time_reverse_flips_some_examples_and_only_in_training():
    from clipwise.augment import TimeReverse

    x = torch.arange(10.0).view(1, 1, 10).repeat(400, 2, 1)
    np.random.seed(0)
    out = TimeReverse(0.5).train()(x)
    flipped = (out[:, 0, 0] == 9).float().mean()
    assert 0.4 < float(flipped) < 0.6 and torch.equal(out[out[:, 0, 0] == 9][0, 0], torch.arange(9.0, -1, -1))
    assert torch.equal(TimeReverse(1.0).eval()(x), x)


def test_logmel_mfcc_frontend_stacks_both():
    from clipwise.frontends import MFCC, LogMel, build_frontend

    wave = torch.randn(2, 8000)
    both = build_frontend(name="logmel_mfcc", sample_rate=16000, n_mels=40, n_mfcc=13)
    out = both(wave)
    assert out.shape[1] == 53 and both.n_bins == 53
    torch.testing.assert_close(out[:, :40], LogMel(sample_rate=16000, n_mels=40)(wave))
    torch.testing.assert_close(out[:, 40:], MFCC(sample_rate=16000, n_mels=40, n_mfcc=13)(wave))


# --- overlay (multi-label) ---------------------------------------------------------------------------------


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(-1).sqrt()


def test_overlay_adds_the_levelled_partner_and_takes_the_union_of_labels():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.standard_normal((3, 8000)).astype(np.float32))
    wave = a * torch.tensor([[1.0], [10.0], [0.1]])  # three levels: the partner is brought to each clip's own
    target = torch.tensor([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.float32)
    picked, partner, gain = np.array([True, True, False]), np.array([1, 2, 0]), np.array([0.0, 6.0, 0.0])
    out, y = Overlay.apply(wave, target, picked, partner, gain)
    # clip 0 + clip 1 levelled to clip 0's RMS at 0 dB; clip 1 + clip 2 at +6 dB; clip 2 untouched
    expect0 = (wave[0] + wave[1] * (_rms(wave[0]) / _rms(wave[1]))) / np.sqrt(2)
    rel = 10 ** (6 / 20)
    expect1 = (wave[1] + wave[2] * (_rms(wave[1]) / _rms(wave[2]) * rel)) / np.sqrt(1 + rel**2)
    torch.testing.assert_close(out[0], expect0)
    torch.testing.assert_close(out[1], expect1)
    assert torch.equal(out[2], wave[2])
    # independent noises: the sum keeps the clip's level within a few per cent
    torch.testing.assert_close(_rms(out[:2]), _rms(wave[:2]), rtol=0.05, atol=0)
    assert y.tolist() == [[1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 0, 1]]


@pytest.mark.parametrize("n", [2, 3, 32])
def test_overlay_draws_a_partner_other_than_the_clip_itself_and_gains_in_range(n):
    aug = Overlay(p=0.5, gain_db=6.0)
    np.random.seed(0)
    for _ in range(50):
        picked, partner, gain = aug.draw(n)
        assert (partner != np.arange(n)).all() and sorted(partner) == list(range(n))
        assert np.abs(gain).max() <= 6.0
    np.random.seed(1)
    share = np.mean([aug.draw(n)[0].mean() for _ in range(400)])
    assert share == pytest.approx(0.5, abs=0.05)


def test_overlay_is_the_identity_in_eval_mode_and_for_a_single_clip():
    wave, target = torch.randn(4, 100), torch.eye(4)
    aug = Overlay(p=1.0).eval()
    assert aug(wave, target)[0] is wave
    aug.train()
    out, y = aug(wave[:1], target[:1])
    assert out is not None and torch.equal(out, wave[:1]) and torch.equal(y, target[:1])
    out, y = aug(wave, target)
    assert (y.sum(1) == 2).all() and not torch.equal(out, wave)
