"""Per-track supervision: the track loss's laws, the active-track mask, and the augmentation of dry inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradmix import dsp
from gradmix.data.augment import Augmentation, augment_tracks
from gradmix.models.losses import LossWeights, TrackLoss, active_tracks, pick_tracks, stereo_image

SR = 44100


def noise(*shape, seed=0, level=0.1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * level


def test_stereo_image_position_and_width_laws():
    mono = noise(1, 1, SR)
    left, centre = torch.cat([mono, 0 * mono], 1), torch.cat([mono, mono], 1)
    antiphase, decorrelated = torch.cat([mono, -mono], 1), torch.cat([mono, noise(1, 1, SR, seed=1)], 1)
    pos, width = stereo_image(torch.cat([left, centre, antiphase, decorrelated, torch.zeros(1, 2, SR)]))
    assert pos[:3].tolist() == pytest.approx([-1.0, 0.0, 0.0], abs=1e-6)
    assert width[:3].tolist() == pytest.approx([0.5, 0.0, 1.0], abs=1e-6)
    assert abs(width[3].item() - 0.5) < 0.01 and abs(pos[3].item()) < 0.01  # independent channels: half side
    assert pos[4].item() == 0.0 and width[4].item() == 0.0  # silence: no NaN
    panned = dsp.pan(mono, pan=0.6)  # constant-power law
    p = stereo_image(panned)[0].item()
    gl, gr = np.cos((0.6 + 1) * np.pi / 4), np.sin((0.6 + 1) * np.pi / 4)
    assert p == pytest.approx((gr**2 - gl**2) / (gr**2 + gl**2), abs=1e-5)


def test_track_loss_is_zero_on_the_wet_stems_and_each_term_sees_its_own_change():
    wet = noise(2, 3, 2, SR, seed=2) * torch.tensor([1.0, 0.3, 0.05])[:, None, None]
    has_wet = torch.tensor([[True, True, True], [True, True, False]])
    active = active_tracks(wet, wet, has_wet)
    assert active.tolist() == has_wet.tolist()
    loss = TrackLoss(SR)

    def mix(x):
        return (x * has_wet[..., None, None]).sum(1)

    total, terms = loss(wet, wet, active, mix(wet), mix(wet))
    assert total.item() == pytest.approx(0.0, abs=1e-6) and set(terms) == {"stft", "level", "position", "width"}
    louder = wet.clone()
    louder[0, 1] *= 10 ** (6 / 20)  # one track 6 dB up in its mix
    terms = loss(louder, wet, active, mix(louder), mix(wet))[1]
    assert terms["stft"] > 0.01 and terms["position"] < 1e-6 and terms["width"] < 1e-6
    # relative levels: track 1 rises by 6 dB minus what the mix rises; the other two fall by what the mix rises
    mix_before = dsp.soft_integrated_loudness(wet[0].sum(0, keepdim=True), sample_rate=SR)
    mix_after = dsp.soft_integrated_loudness(louder[0].sum(0, keepdim=True), sample_rate=SR)
    rise = (mix_after - mix_before).item()
    expected = ((6 - rise) + 2 * rise) / 10 / 5  # |dL| / 10, averaged over 5 active tracks
    assert terms["level"].item() == pytest.approx(expected, rel=0.02)
    moved = wet.clone()
    moved[1, 0, 1] = 0  # hard left: position error 1 on one of 5
    terms = loss(moved, wet, active, mix(moved), mix(wet))[1]
    assert terms["position"].item() == pytest.approx(abs(stereo_image(wet[1, :1])[0].item() + 1) / 5, rel=1e-4)
    assert terms["width"].item() == pytest.approx(abs(stereo_image(wet[1, :1])[1].item() - 0.5) / 5, rel=1e-3)


def test_track_loss_ignores_tracks_without_a_wet_stem_or_silent_and_has_gradients():
    wet = noise(1, 3, 2, SR, seed=3)
    parts = noise(1, 3, 2, SR, seed=4).requires_grad_()
    has_wet = torch.tensor([[True, False, True]])
    dry = wet.clone()
    dry[0, 2] = 0  # not playing in this segment
    active = active_tracks(dry, wet, has_wet)
    assert active.tolist() == [[True, False, False]]
    keep = has_wet[..., None, None]
    total, _ = TrackLoss(SR)(parts, wet, active, (parts * keep).sum(1), (wet * keep).sum(1))
    total.backward()
    grad = parts.grad.abs().sum((-2, -1))[0]
    assert grad[0] > 0 and grad[1] == 0 and torch.isfinite(parts.grad).all()
    none = torch.zeros_like(has_wet)
    total, terms = TrackLoss(SR)(parts, wet, none, parts.sum(1), wet.sum(1))
    assert total.item() == 0.0 and all(v.item() == 0.0 for v in terms.values())


def test_loudness_weighting_follows_each_tracks_share_of_its_song():
    wet = noise(1, 2, 2, SR, seed=5) * torch.tensor([1.0, 0.1])[:, None, None]  # 20 dB apart
    has_wet = torch.ones(1, 2, dtype=torch.bool)
    parts = wet.clone()
    parts[0, 1, 1] = 0  # the quiet track moved hard left
    args = (parts, wet, has_wet, parts.sum(1), wet.sum(1))
    equal = TrackLoss(SR, LossWeights(track_weighting="equal"))(*args)[1]["position"]
    loud = TrackLoss(SR, LossWeights(track_weighting="loudness"))(*args)[1]["position"]
    error = abs(stereo_image(wet[0, 1:])[0].item() + 1)
    assert equal.item() == pytest.approx(error / 2, rel=1e-4)
    assert loud.item() == pytest.approx(error * 0.01 / 1.01, rel=1e-2)
    with pytest.raises(ValueError, match="track_weighting"):
        TrackLoss(SR, LossWeights(track_weighting="biggest"))


def test_pick_tracks_draws_up_to_count_active_tracks_per_song_and_is_seeded():
    active = torch.tensor([[True, False, True, True, True], [False, True, False, False, False], [False] * 5])
    index, valid = pick_tracks(active, 2, torch.Generator().manual_seed(0))
    assert index.shape == valid.shape == (3, 2) and valid.tolist() == [[True, True], [True, False], [False, False]]
    assert set(index[0].tolist()) <= {0, 2, 3, 4} and len(set(index[0].tolist())) == 2 and index[1, 0] == 1
    again = pick_tracks(active, 2, torch.Generator().manual_seed(0))[0]
    assert torch.equal(index, again)
    seen = {i for s in range(20) for i in pick_tracks(active, 2, torch.Generator().manual_seed(s))[0][0].tolist()}
    assert seen == {0, 2, 3, 4}  # every active track is drawn in time
    index, valid = pick_tracks(active, 0, torch.Generator().manual_seed(0))
    assert valid.sum().item() == 5 and index.shape == (3, 4)
    assert pick_tracks(torch.zeros(2, 3, dtype=torch.bool), 4, torch.Generator())[0].shape == (2, 0)


def test_augmentation_is_seeded_and_changes_gain_tilt_and_dynamics_as_stated():
    x = noise(2, 3, 2, SR, seed=6)
    x[..., : SR // 2] *= 0.05  # a quiet half, then a loud half
    same = [
        augment_tracks(x, Augmentation(6.0, 6.0, 1.0), torch.Generator().manual_seed(7), sample_rate=SR)
        for _ in range(2)
    ]
    assert torch.equal(same[0], same[1]) and not torch.equal(same[0], x)
    assert augment_tracks(x, Augmentation(), torch.Generator(), sample_rate=SR) is x
    # gain only: every track scaled by one factor
    y = augment_tracks(x, Augmentation(gain_db=6.0), torch.Generator().manual_seed(1), sample_rate=SR)
    ratio = (y / x)[..., SR // 2 :]
    assert torch.allclose(ratio, ratio[..., :1], rtol=1e-5) and ratio.std() > 0
    # tilt only: low band and high band move in opposite directions by the drawn tilt
    y = augment_tracks(x, Augmentation(tilt_db=6.0), torch.Generator().manual_seed(2), sample_rate=SR)
    spec_x, spec_y = (torch.fft.rfft(v[..., SR // 2 :]).abs().square() for v in (x, y))
    freqs = torch.fft.rfftfreq(SR // 2, 1 / SR)
    low, high = freqs < 60, (freqs > 12000) & (freqs < 18000)
    d_low = 10 * torch.log10(spec_y[..., low].sum(-1) / spec_x[..., low].sum(-1))
    d_high = 10 * torch.log10(spec_y[..., high].sum(-1) / spec_x[..., high].sum(-1))
    assert (d_low * d_high <= 0).all() and (d_low - d_high).abs().max() <= 6.2 and (d_low - d_high).abs().max() > 1
    assert torch.allclose(d_low + d_high, torch.zeros_like(d_low), atol=0.3)  # +t/2 and -t/2 shelves
    # compression always on: the loud half is turned down against the quiet half
    y = augment_tracks(x, Augmentation(compress=1.0), torch.Generator().manual_seed(3), sample_rate=SR)

    def contrast(v):
        return 10 * torch.log10(v[..., SR // 2 :].square().mean(-1) / v[..., : SR // 4].square().mean(-1))

    assert (contrast(y) < contrast(x) - 1).all()
