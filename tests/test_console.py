"""The console: neutral = plain sum, gain/pan/send laws, buses, masks, batches, console files."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from conftest import error_db
from gradmix import dsp
from gradmix.console import (
    SCHEMA_PATH,
    ConsoleSetting,
    Controls,
    Layout,
    Params,
    Slot,
    StripGroup,
    console_schema,
    render_chunked,
    track_outputs,
)
from gradmix.effects import create
from gradmix.errors import ConsoleFileError, ParameterError

SR = 44100


def tracks_mono(n=4, samples=8820, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, n, 1, samples, generator=gen, dtype=dtype) * 0.1


def neutral_params(layout: Layout, batch: int, n: int, dtype=torch.float64) -> Params:
    """Physical defaults of every slot, no sends (-inf dB)."""

    def slot_defaults(slot: Slot, lead: tuple[int, ...]):
        out = {}
        for k, v in {**slot.effect.defaults(), **slot.fixed}.items():
            t = torch.as_tensor(v, dtype=dtype)
            out[k] = t.expand(*lead, *t.shape).clone()
        return out

    return Params(
        [slot_defaults(s, (batch, n)) for s in layout.strip],
        torch.full((batch, n, len(layout.buses)), -math.inf, dtype=dtype),
        [[slot_defaults(s, (batch,)) for s in chain] for _, chain in layout.buses],
        [slot_defaults(s, (batch,)) for s in layout.master],
    )


def test_neutral_layout_equals_plain_panned_sum():
    layout = Layout.default()
    x = tracks_mono()
    mix, strips = layout.render(x, neutral_params(layout, 1, 4), sample_rate=SR)
    plain = dsp.pan(x[0], pan=0.0).sum(0)
    assert error_db(mix[0].numpy(), plain.numpy()) < -250
    assert strips.shape == (1, 4, 2, x.shape[-1])


def test_neutral_setting_with_mono_and_stereo_tracks_equals_plain_sum():
    gen = torch.Generator().manual_seed(1)
    audio = [
        torch.randn(1, 4410, generator=gen) * 0.1,
        torch.randn(2, 4410, generator=gen) * 0.1,
        torch.randn(1, 4410, generator=gen) * 0.1,
    ]
    setting = ConsoleSetting.neutral(["a", "b", "c"], sample_rate=SR)
    mix, strips = setting.render(audio)
    plain = audio[0].repeat(2, 1) * 0.5**0.5 + audio[1] + audio[2].repeat(2, 1) * 0.5**0.5
    assert error_db(mix.numpy(), plain.numpy()) < -130  # float32 rounding


def test_gain_pan_and_balance_laws():
    layout = Layout.build(["gain", "pan"])
    x = tracks_mono(3)
    p = neutral_params(layout, 1, 3)
    p.strip[0]["gain_db"] = torch.tensor([[-6.0, 0.0, 12.0]], dtype=torch.float64)
    p.strip[1]["pan"] = torch.tensor([[-1.0, 0.3, 1.0]], dtype=torch.float64)
    _, strips = layout.render(x, p, sample_rate=SR)
    g = torch.tensor([-6.0, 0.0, 12.0], dtype=torch.float64)
    theta = (torch.tensor([-1.0, 0.3, 1.0], dtype=torch.float64) + 1) * math.pi / 4
    expected_l = x[0, :, 0] * (10 ** (g / 20) * torch.cos(theta))[:, None]
    expected_r = x[0, :, 0] * (10 ** (g / 20) * torch.sin(theta))[:, None]
    assert error_db(strips[0, :, 0].numpy(), expected_l.numpy()) < -250
    assert error_db(strips[0, :, 1].numpy(), expected_r.numpy()) < -250
    stereo = x.repeat(1, 1, 2, 1)  # the same tracks as duplicated stereo, flagged mono: the same result
    mono = torch.ones(1, 3, dtype=torch.bool)
    _, strips2 = layout.render(stereo, p, sample_rate=SR, mono=mono)
    assert error_db(strips2.numpy(), strips.numpy()) < -250
    _, balanced = layout.render(stereo, p, sample_rate=SR)  # not flagged: balance law
    assert error_db(balanced[0, 1, 1].numpy(), (stereo[0, 1, 1] * 10 ** (g[1] / 20)).numpy()) < -250


def test_bus_is_the_sum_of_its_sends_through_its_chain():
    layout = Layout.build(
        ["gain", "pan"], {"verb": [Slot(create("reverb"), {"mix": 1.0})], "dly": [Slot(create("delay"), {"mix": 1.0})]}
    )
    x = tracks_mono(3)
    p = neutral_params(layout, 1, 3)
    p.strip[1]["pan"] = torch.tensor([[-0.5, 0.0, 0.7]], dtype=torch.float64)
    sends = torch.tensor([[[-6.0, -math.inf], [-12.0, -3.0], [-math.inf, -20.0]]], dtype=torch.float64)
    p.sends_db = sends
    p.buses[0][0]["decay_s"] = torch.tensor([[0.5, 0.4, 0.3, 0.2]], dtype=torch.float64)
    p.buses[1][0]["time_ms"] = torch.tensor([60.0], dtype=torch.float64)  # echoes inside the 0.2 s rendered
    mix, strips = layout.render(x, p, sample_rate=SR)
    expected = strips.sum(1)
    for k, (fn, kw) in enumerate(
        [
            (dsp.reverb, dict(decay_s=[0.5, 0.4, 0.3, 0.2], mix=1.0)),
            (dsp.delay, dict(time_ms=60.0, feedback=0.3, mix=1.0)),
        ]
    ):
        bus_in = (strips * torch.pow(10.0, sends[..., k] / 20)[..., None, None]).sum(1)
        expected = expected + fn(bus_in, sample_rate=SR, **kw)
    assert error_db(mix.numpy(), expected.numpy()) < -250


def test_track_outputs_are_each_strip_with_its_own_bus_returns_and_sum_to_the_pre_master_mix():
    """Each track's part = its strip + every bus chain applied to its send alone; with linear buses the parts
    add up to what the master receives (superposition), in float64 to rounding."""
    layout = Layout.build(
        ["gain", "pan"], {"verb": [Slot(create("reverb"), {"mix": 1.0})], "dly": [Slot(create("delay"), {"mix": 1.0})]}
    )
    x = torch.cat([tracks_mono(3, seed=1), tracks_mono(3, seed=2)])
    p = neutral_params(layout, 2, 3)
    p.strip[1]["pan"] = torch.tensor([[-0.5, 0.0, 0.7], [0.2, -0.9, 0.0]], dtype=torch.float64)
    p.sends_db = torch.tensor(
        [
            [[-6.0, -math.inf], [-12.0, -3.0], [-math.inf, -20.0]],
            [[-math.inf, -math.inf], [-3.0, -math.inf], [-10.0, -math.inf]],
        ],
        dtype=torch.float64,
    )
    p.buses[0][0]["decay_s"] = torch.tensor([[0.5, 0.4, 0.3, 0.2], [1.5, 1.0, 0.8, 0.6]], dtype=torch.float64)
    p.buses[1][0]["time_ms"] = torch.tensor([250.0, 120.0], dtype=torch.float64)
    _, strips = layout.render(x, p, sample_rate=SR)
    parts = track_outputs(layout, strips, p, sample_rate=SR)
    bus_in = torch.einsum("bnct,bnk->bkct", strips, torch.pow(10.0, p.sends_db / 20))
    pre_master = strips.sum(1)
    for k, fn in enumerate([dsp.reverb, dsp.delay]):
        for b in range(2):
            kw = (
                {"decay_s": p.buses[0][0]["decay_s"][b : b + 1]}
                if k == 0
                else {"time_ms": p.buses[1][0]["time_ms"][b : b + 1], "feedback": 0.3}
            )
            pre_master[b : b + 1] += fn(bus_in[b : b + 1, k], sample_rate=SR, mix=1.0, **kw)
    assert error_db(parts.sum(1).numpy(), pre_master.numpy()) < -250
    # the third track of song 0 sends to the delay only: its part is its strip plus its own echo
    alone = strips[0:1, 2] + dsp.delay(
        strips[0:1, 2] * 10 ** (-20 / 20), sample_rate=SR, time_ms=250.0, feedback=0.3, mix=1.0
    )
    assert error_db(parts[0, 2].numpy(), alone[0].numpy()) < -250
    assert torch.equal(parts[1, 0], strips[1, 0])  # no send: the strip alone
    nonlinear = Layout.build(["gain"], {"crush": ["compressor"]})
    with pytest.raises(ParameterError, match="bus 'crush': compressor is not linear"):
        track_outputs(nonlinear, strips, p, sample_rate=SR)


def test_padding_tracks_contribute_nothing_and_batch_equals_songs():
    layout = Layout.default()
    gen = torch.Generator().manual_seed(5)
    controls = layout.random_controls(2, 3, generator=gen, dtype=torch.float64)
    a = tracks_mono(3, seed=1)
    b = tracks_mono(3, seed=2)
    b[0, 2] = torch.randn(1, b.shape[-1], generator=gen, dtype=torch.float64)  # garbage in the padding slot
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    mix, params = layout.render_normalized(torch.cat([a, b]), controls, sample_rate=SR, mask=mask)
    alone_a, _ = layout.render_normalized(a, _item(controls, 0), sample_rate=SR)
    alone_b, _ = layout.render_normalized(b[:, :2], _item(controls, 1, tracks=2), sample_rate=SR)
    assert error_db(mix[0].numpy(), alone_a[0].numpy()) < -200
    assert error_db(mix[1].numpy(), alone_b[0].numpy()) < -200


def _item(c: Controls, i: int, tracks: int | None = None) -> Controls:
    t = slice(None, tracks)
    return Controls(c.strip[i : i + 1, t], c.sends[i : i + 1, t], c.buses[i : i + 1], c.master[i : i + 1])


def test_gradients_reach_every_control_group_and_are_finite_on_silence():
    layout = Layout.default()
    for silent in (False, True):
        x = tracks_mono(3, samples=22050, dtype=torch.float32)
        if silent:
            x = torch.zeros_like(x)
        c = layout.random_controls(1, 3, generator=torch.Generator().manual_seed(0))
        for t in (c.strip, c.sends, c.buses, c.master):
            t.requires_grad_()
        mix, _ = layout.render_normalized(x, c, sample_rate=SR)
        (mix.square().mean() + mix.mean()).backward()
        for t in (c.strip, c.sends, c.buses, c.master):
            assert torch.isfinite(t.grad).all()
            if not silent:
                assert t.grad.abs().sum() > 0


def test_controls_of_the_wrong_shape_raise():
    layout = Layout.default()
    c = layout.random_controls(1, 2)
    c.sends = torch.rand(1, 2, 5)
    with pytest.raises(ParameterError, match=r"controls.sends: expected shape \(1, 2, 2\)"):
        layout.denormalize(c)


def test_controls_logits_round_trip_and_repeat():
    layout = Layout.default()
    c = layout.random_controls(1, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    c.master[0, 0] = 1.0  # kept 1e-4 inside the range, so that its logit is finite
    logits = c.logits()
    assert all(v.requires_grad and v.is_leaf for v in logits)
    back = Controls.from_logits(logits, batch=2)
    for a, b in zip((c.strip, c.sends, c.buses, c.master), (back.strip, back.sends, back.buses, back.master)):
        assert b.shape == (2, *a.shape[1:])
        assert torch.allclose(b[1], a[0].clamp(1e-4, 1 - 1e-4), atol=1e-12)
    assert float(back.master[0, 0]) == pytest.approx(1 - 1e-4)
    assert logits.sends is logits[1] and logits.copy().buses.requires_grad is False
    assert (
        c.expand(3).strip.shape == (3, 3, layout.num_strip_params)
        and c.expand(3).strip.data_ptr() == c.strip.data_ptr()
    )


def test_chunks_of_tracks_render_the_batched_mix_with_its_gradients():
    """One chunk of every track, or one track a chunk: the same mix, strips and gradients, masks and sends
    included."""
    layout = Layout.default()
    x = tracks_mono(5, samples=4410).repeat(2, 1, 1, 1)
    x[1] *= 0.5
    c = layout.random_controls(2, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 0, 1, 1, 1]], dtype=torch.float64)
    results = []
    for chunk in (None, 2 * 4410, 4 * 4410):
        strip = c.strip.clone().requires_grad_()
        params = layout.denormalize(Controls(strip, c.sends, c.buses, c.master))
        group = StripGroup(layout.strip, range(5), params.strip)
        mix, strips = render_chunked(layout, [group], x, params, sample_rate=SR, mask=mask, chunk_samples=chunk)
        mix.square().sum().backward()
        results.append((mix.detach(), strips.detach(), strip.grad))
    assert results[0][1][0, 4].abs().max() == 0 and results[0][1][1, 1].abs().max() == 0
    for mix, strips, grad in results[1:]:
        assert error_db(mix.numpy(), results[0][0].numpy()) < -250
        assert error_db(strips.numpy(), results[0][1].numpy()) < -250
        assert error_db(grad.numpy(), results[0][2].numpy()) < -250
    assert results[0][2].abs().sum() > 0


def test_a_console_file_of_mixed_chains_renders_alike_in_any_chunks():
    """Tracks with different chains (one with an extra distortion, one stereo) and sends: a chunk of one
    track at a time gives the same mix and strips as one call per group, and the strips in track order."""
    layout = Layout.default()
    c = layout.random_controls(1, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    setting = ConsoleSetting.from_params(
        layout, layout.denormalize(c), names=list("abcd"), files=[None] * 4, sample_rate=SR
    )
    distortion = create("distortion")
    setting.tracks[2].chain.insert(1, type(setting.tracks[0].chain[0])(distortion, distortion.defaults()))
    audio = list(tracks_mono(4, samples=4410)[0])
    audio[1] = torch.cat([audio[1], -0.5 * audio[1]])
    whole, strips = setting.render(audio)
    seen = []
    one, strips_one = setting.render(audio, chunk_samples=1, on_strip=lambda i, s: seen.append(i))
    assert sorted(seen) == [0, 1, 2, 3]
    assert error_db(one.numpy(), whole.numpy()) < -250 and error_db(strips_one.numpy(), strips.numpy()) < -250
    alone = ConsoleSetting(SR, [setting.tracks[2]]).render([audio[2]])[1][0]
    assert error_db(strips[2].numpy(), alone.numpy()) < -250
    plain = ConsoleSetting(SR, setting.tracks[:2] + setting.tracks[3:]).render(audio[:2] + audio[3:])[1]
    assert error_db(strips[[0, 1, 3]].numpy(), plain.numpy()) < -250
    assert setting.tracks[0].sends and not torch.equal(whole, strips.sum(0))


def test_network_parameters_to_console_file_and_back_render_the_same(tmp_path):
    layout = Layout.default()
    x = tracks_mono(3, samples=22050, dtype=torch.float32)
    c = layout.random_controls(1, 3, generator=torch.Generator().manual_seed(3))
    mix, params = layout.render_normalized(x, c, sample_rate=SR)
    setting = ConsoleSetting.from_params(
        layout, params, names=["a", "b", "c"], files=["a.wav", "b.wav", "c.wav"], sample_rate=SR
    )
    path = setting.save(tmp_path / "console.json")
    loaded = ConsoleSetting.load(path)
    assert loaded.to_json() == setting.to_json()
    again, _ = loaded.render([x[0, i] for i in range(3)])
    assert error_db(again.numpy(), mix[0].numpy()) < -100


def test_round_trip_is_lossless_and_schema_file_is_current():
    setting = ConsoleSetting.neutral(["kick", "bass"], ["kick.wav", "bass.wav"], sample_rate=48000)
    setting.tracks[0].sends = {"reverb": -18.25}
    data = setting.to_json()
    assert ConsoleSetting.from_json(json.loads(json.dumps(data))).to_json() == data
    assert json.loads(SCHEMA_PATH.read_text()) == console_schema()


def _base() -> dict:
    s = ConsoleSetting.neutral(["a", "b", "c"], ["a.wav", "b.wav", "c.wav"], sample_rate=44100)
    s.tracks[2].sends = {"reverb": -12.0}
    return s.to_json()


def _set(path, value):
    def mutate(d):
        *head, last = path
        for k in head:
            d = d[k]
        if value is KeyError:
            del d[last]
        else:
            d[last] = value

    return mutate


BAD = [
    (_set(["tracks", 2, "chain", 1, "bands", 0, "q"], 0), "tracks[2].chain[1].bands[0].q: 0 is not > 0"),
    (
        _set(["tracks", 0, "chain", 1, "bands", 3, "freq_hz"], 30000),
        "tracks[0].chain[1].bands[3].freq_hz: 30000 is not < 22050",
    ),
    (_set(["master", "chain", 0, "bands", 5, "freq_hz"], 22050), "master.chain[0].bands[5].freq_hz: 22050 is not <"),
    (_set(["sample_rate"], 11025), "tracks[0].chain[1].bands[5].freq_hz: 6000 is not < 5512.5 (Nyquist)"),
    (
        lambda d: (_set(["buses", 1, "chain"], [{"type": "graphic_eq"}])(d), _set(["sample_rate"], 16000)(d)),
        "buses[1].chain[0]: a graphic EQ needs a sample rate of at least 22050 Hz, not 16000",
    ),
    (_set(["tracks", 1, "chain", 2, "ratio"], 0.5), "tracks[1].chain[2].ratio: 0.5 is not >= 1"),
    (_set(["tracks", 1, "chain", 2, "tresh_db"], -3), "tracks[1].chain[2]: unknown key(s) 'tresh_db'"),
    (_set(["tracks", 0, "chain", 0, "type"], "fuzz"), "tracks[0].chain[0].type: 'fuzz' is not one of"),
    (_set(["tracks", 0, "chain", 3, "pan"], 2), "tracks[0].chain[3].pan: 2 is not <= 1"),
    (_set(["tracks", 0, "chain", 0, "gain_db"], "loud"), "tracks[0].chain[0].gain_db: 'loud' is not of type number"),
    (_set(["tracks", 1, "name"], "a"), "tracks[1].name: 'a' is used by tracks[0] too"),
    (_set(["tracks", 2, "sends", 0, "bus"], "plate"), "tracks[2].sends[0].bus: 'plate' is not a bus"),
    (
        _set(["buses", 0, "chain", 0, "decay_s"], [1.0, 2.0]),
        "buses[0].chain[0].decay_s: has 2 items, expected at least 4",
    ),
    (_set(["version"], 2), "version: 2 is not 1"),
    (_set(["format"], "other"), "format: 'other' is not 'gradmix.console'"),
    (_set(["tracks", 0, "name"], KeyError), "tracks[0]: 'name' is missing"),
    (_set(["master", "chain", 2, "lookahead_ms"], 500), "master.chain[2].lookahead_ms: 500 is not <= 100"),
]


@pytest.mark.parametrize("mutate,message", BAD, ids=[m for _, m in BAD])
def test_schema_errors_name_the_exact_place(mutate, message):
    data = copy.deepcopy(_base())
    mutate(data)
    with pytest.raises(ConsoleFileError) as info:
        ConsoleSetting.from_json(data, "song.json")
    assert str(info.value).startswith(f"song.json: {message}"), str(info.value)


def test_load_reports_bad_json(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(ConsoleFileError, match="not valid JSON"):
        ConsoleSetting.load(p)
    with pytest.raises(ConsoleFileError, match="no such console file"):
        ConsoleSetting.load(tmp_path / "missing.json")
    data = _base()
    data["tracks"][0]["chain"][0]["gain_db"] = math.nan
    p.write_text(json.dumps(data))  # Python writes the NaN literal, which JSON readers take
    with pytest.raises(ConsoleFileError, match="c.json: NaN is not a value a console file may hold"):
        ConsoleSetting.load(p)
    data = _base()
    data["tracks"][2]["sends"][0]["level_db"] = math.inf
    p.write_text(json.dumps(data))
    with pytest.raises(ConsoleFileError, match="c.json: Infinity is not a value a console file may hold"):
        ConsoleSetting.load(p)
    data["tracks"][2]["sends"][0]["level_db"] = -math.inf  # an absent send
    p.write_text(json.dumps(data))
    assert ConsoleSetting.load(p).tracks[2].sends["reverb"] == -math.inf


def test_bus_control_index_points_at_the_parameter_denormalize_reads():
    layout = Layout.default()
    delay = layout.bus_names.index("delay")
    j = layout.bus_control_index(delay, 0, "time_ms")
    c = layout.random_controls(1, 1, torch.Generator().manual_seed(0))
    c.buses[0, j] = 0.0  # the bottom of the range, wherever the other controls are
    assert float(layout.denormalize(c).buses[delay][0]["time_ms"][0]) == pytest.approx(10.0)
    c.buses[0, j] = 1.0
    assert float(layout.denormalize(c).buses[delay][0]["time_ms"][0]) == pytest.approx(2000.0)
    with pytest.raises(ParameterError, match="mix"):
        layout.bus_control_index(delay, 0, "mix")  # fixed, not controlled


def test_strip_control_index_points_at_the_parameter_denormalize_reads():
    layout = Layout.default()
    comp = [s.effect.type_name for s in layout.strip].index("compressor")
    j = layout.strip_control_index(comp, "makeup_db")
    c = layout.random_controls(1, 3, torch.Generator().manual_seed(0))
    c.strip[0, 1, j] = 1.0  # track 1 only
    makeup = layout.denormalize(c).strip[comp]["makeup_db"][0]
    assert float(makeup[1]) == pytest.approx(24.0) and float(makeup.max()) == float(makeup[1])
    assert layout.strip_control_index(len(layout.strip) - 1, "pan") == layout.num_strip_params - 1
    with pytest.raises(ParameterError, match="knob"):
        layout.strip_control_index(comp, "knob")
    assert float(layout.strip[comp].spec("makeup_db").max) == 24.0  # the spec that column denormalises with
    with pytest.raises(ParameterError, match="knob"):
        layout.strip[comp].spec("knob")
