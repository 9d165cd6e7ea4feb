"""Generative mixing on the console: several mixes of the same tracks, and mixing in the style of a reference
(reverse-engineering a given mix is :mod:`gradmix.fit`).

- :func:`sample_settings` (``gradmix sample``): each mix draws a window from the model's bank of human mix
  styles (:func:`build_style_bank`: its ``z`` and how the human mix differed in style from the model's own
  mix of those tracks), lets the controller set the console for that ``z``, then refines the mix section
  (pans, sends, bus and master effects) through the differentiable console until the mix's style features
  approach the automatic mix's own plus that offset (less the bank's mean offset: the model's bias); the
  spectral features approach those of the automatic mix heard through the window's tonal offset, an EQ curve.
- :func:`match_folder` (``gradmix match``): ``z`` = the mean of q(z | reference mix); ``refine_steps`` then
  optimises every control so that the mix's :func:`gradmix.metrics.style_distance` to the reference falls.

Refinement renders an excerpt that stands for the song: a few chunks spread evenly over it (each after a
second of pre-roll, so that envelopes and reverb tails are in place), joined; features such as the loudness
range then see the song's quiet and loud parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gradmix.audio import MIN_SECONDS, check_output_path, make_output_folder, read_audio, resample, write_audio
from gradmix.console import ConsoleSetting, Controls
from gradmix.defaults import DEVICE, MATCH_REFINE_STEPS, SAMPLE_COUNT, SAMPLE_REFINE_STEPS, SAMPLE_TEMPERATURE
from gradmix.console.render import mix_down, render_strips
from gradmix.dsp import integrated_loudness
from gradmix.errors import GradmixError
from gradmix.metrics import style_distance, style_features
from gradmix.metrics.distances import FLOORS, STYLE_FEATURES, TONE_CENTRES_HZ, tonal_balance
from gradmix.metrics.features import bin_frequencies, mid_magnitude, panning_features, spectral_frames, weighted_mean
from gradmix.mix import Analysis, Song, analyse, console_for, load_song, setting_from_controls
from gradmix.models import MixController
from gradmix.progress import progress as show_progress
from gradmix.report import comparison_page

SAMPLE_REFINE_LR = 0.1
"""Learning rate (Adam, on the logits of the 0..1 controls) of each sample's refinement; ``match`` refines at 0.05."""
SAMPLE_PAN_NUDGE = 0.03
"""Largest seeded move of each track's pan control (0..1) before a sample's refinement: a console of centred
tracks is a saddle of the width features, and each sample should widen its own way."""


def draw_styles(
    model: MixController, n: int, *, seed: int = 0, temperature: float = SAMPLE_TEMPERATURE
) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` mix styles from the model's style bank, seeded: ``(n, style_dim)`` z, moved from the model's centre
    towards a drawn window's ``z`` by ``temperature``; ``(n, features)`` that window's style offset and
    ``(n, bands)`` its tonal offset (dB), each less the bank's mean and times ``temperature`` (0: the automatic
    mix; 1: as far from it as that human mix was from the model's own mix of its stems, beyond the average
    difference over the bank, which is the model's bias on its training songs rather than a style). Windows
    are drawn without replacement while the bank lasts."""
    if not model.cfg.style_dim:
        raise GradmixError("this model has no mix style (style_dim 0): sampling needs a style model")
    if n < 1:
        raise GradmixError(f"-n: need at least 1 mix, got {n}")
    if not temperature >= 0:
        raise GradmixError(f"--temperature: must be >= 0, got {temperature}")
    bank = model.style_bank
    if not len(bank) or len(model.style_bank_tones) != len(bank):
        raise GradmixError(
            "this model has no style bank with tonal offsets (made before this gradmix): "
            "retrain it, or add one with gradmix.generate.build_style_bank"
        )
    g = torch.Generator().manual_seed(seed)
    picks = torch.cat([torch.randperm(len(bank), generator=g) for _ in range(-(-n // len(bank)))])[:n]
    z = model.style_center + temperature * (bank[picks] - model.style_center)
    offsets, tones = model.style_bank_offsets, model.style_bank_tones
    return z, temperature * (offsets[picks] - offsets.mean(0)), temperature * (tones[picks] - tones.mean(0))


def toned_spectral_features(mix: Tensor, gain_db: Tensor, sample_rate: float) -> dict[str, Tensor]:
    """Centroid, bandwidth, flatness and roll-off ``{name: (1,)}`` of the stereo mix ``(1, 2, samples)`` heard
    through the EQ curve ``gain_db`` ``(bands,)`` (dB at :data:`TONE_CENTRES_HZ`, linear in log frequency
    between them, flat beyond): where a tonal offset takes that mix, in the measured features."""
    mag = mid_magnitude(mix)
    freqs = bin_frequencies(sample_rate, mag).double().cpu().numpy()
    curve = np.interp(
        np.log2(np.maximum(freqs, TONE_CENTRES_HZ[0])), np.log2(TONE_CENTRES_HZ), gain_db.double().cpu().numpy()
    )
    mag = mag * torch.from_numpy(10 ** (curve / 20)).to(mag.device, mag.dtype)[:, None]
    weight = mag.square().sum(1)
    return {k: weighted_mean(v, weight) for k, v in spectral_frames(mag, sample_rate).items()}


LOG_FEATURES = ("centroid_hz", "bandwidth_hz", "flatness", "rolloff_hz")
"""Style features whose offsets are ratios (compared in log): the others are differences (dB, LU, panning)."""


def style_coordinates(f: dict[str, Tensor]) -> Tensor:
    """``(batch, features)``: :data:`STYLE_FEATURES` with the :data:`LOG_FEATURES` in natural log, where human
    styles are offsets that carry over between songs."""
    return torch.stack([torch.log(f[k].clamp_min(1e-6)) if k in LOG_FEATURES else f[k] for k in STYLE_FEATURES], -1)


def style_from_coordinates(c: Tensor) -> dict[str, Tensor]:
    """The inverse of :func:`style_coordinates` (levels below 0 LU, 0 dB crest or no panning become those)."""
    return {
        k: torch.exp(c[..., i]) if k in LOG_FEATURES else c[..., i] if k == "loudness_lufs" else c[..., i].clamp_min(0)
        for i, k in enumerate(STYLE_FEATURES)
    }


def build_style_bank(model: MixController, windows: list[tuple[list[Tensor], Tensor]], sample_rate: int) -> None:
    """Fill ``model.style_bank``, ``style_bank_offsets`` and ``style_bank_tones`` from windows of human-mixed
    songs ``[(tracks, mix)]`` (tracks: per track ``(channels, samples)``; mix ``(2, samples)``): per window
    q(z | mix)'s mean, and how the human mix differs from the model's own mix of those tracks in style
    (:func:`style_coordinates`) and in tonal balance (:func:`tonal_balance`, dB). Silent windows are left out."""
    zs, offsets, tones = [], [], []
    with torch.no_grad():
        for tracks, mix in windows:
            if not mix.abs().max() > 0 or not any(t.abs().max() > 0 for t in tracks):
                continue
            analysis = analyse(model, tracks, sample_rate)
            whole = song_excerpt(tracks, analysis, sample_rate, seconds=None, preroll_s=0.0)
            own = _excerpt_mix(model, whole, model.decide(analysis.embeddings, analysis.mask), sample_rate)
            human = mix[None].double()
            zs.append(model.encode_style(mix[None], sample_rate=sample_rate)[0][0])
            offsets.append((_coordinates(human, sample_rate) - _coordinates(own, sample_rate))[0])
            tones.append((tonal_balance(human, sample_rate) - tonal_balance(own.double(), sample_rate))[0].float())
    if not zs:
        raise GradmixError("no human-mixed window to build a style bank from (all silent)")
    model.style_bank = torch.stack(zs)
    model.style_bank_offsets = torch.stack(offsets)
    model.style_bank_tones = torch.stack(tones)


def _render(setting: ConsoleSetting, audio: list[Tensor], device: torch.device | str = DEVICE) -> Tensor:
    """The mix ``(2, samples)`` on the CPU, rendered on ``device``."""
    with torch.no_grad():
        return setting.render(list(audio), keep_strips=False, device=device)[0].cpu()


@dataclass
class Rendered:
    mix: Path
    console: Path
    loudness_lufs: float
    peak_dbfs: float


def _write(setting: ConsoleSetting, mix: Tensor, path: Path, inputs: list[Path], stems_dir: str | Path) -> Rendered:
    path = check_output_path(path, inputs)
    console = check_output_path(path.with_suffix(".console.json"), inputs)
    setting.save(console, stems_dir=stems_dir)
    write_audio(path, mix, setting.sample_rate)
    lufs = integrated_loudness(mix[None], sample_rate=setting.sample_rate).item()
    return Rendered(path, console, lufs, 20 * math.log10(max(mix.abs().max().item(), 1e-12)))


def sample_folder(
    stems_dir: str | Path,
    out_dir: str | Path,
    *,
    n: int = SAMPLE_COUNT,
    seed: int = 0,
    temperature: float = SAMPLE_TEMPERATURE,
    refine_steps: int = SAMPLE_REFINE_STEPS,
    model_path: str | Path | None = None,
    progress: bool = False,
    device: torch.device | str = DEVICE,
) -> list[Rendered]:
    """Write ``n`` mixes (``mix_01.wav`` ...), their console files and ``index.html`` comparing them; the
    model, the refinement and the renders run on ``device``."""
    _check_refine_steps(refine_steps)
    song = load_song(stems_dir, model_path, progress=progress, device=device)
    out = Path(out_dir)
    if out.resolve().is_relative_to(Path(stems_dir).resolve()):
        raise GradmixError(f"{out}: the output folder is in the stems folder (the mixes would become stems)")
    draw_styles(song.model, n, seed=seed, temperature=temperature)  # argument errors before any work
    make_output_folder(out)
    analysis = analyse(song.model, song.audio, song.sample_rate)
    settings = sample_settings(
        song, analysis, n, seed=seed, temperature=temperature, refine_steps=refine_steps, progress=progress
    )
    results = [
        _write(s, _render(s, song.audio, device), out / f"mix_{k + 1:02d}.wav", song.inputs, stems_dir)
        for k, s in enumerate(show_progress(settings, "rendering", progress))
    ]
    comparison_page(out / "index.html", settings, results)
    return results


def _check_refine_steps(steps: int) -> None:
    if steps < 0:
        raise GradmixError(f"--refine: {steps} steps; give 0 or more")


def read_reference(path: str | Path, sample_rate: int) -> Tensor:
    """A reference or target mix as ``(2, samples)`` at ``sample_rate`` (mono is duplicated; soxr resampling);
    a silent one raises :class:`GradmixError` (it has no style to follow)."""
    data, rate = read_audio(path)
    if data.shape[0] > 2:
        raise GradmixError(f"{path}: {data.shape[0]} channels; a reference mix must be mono or stereo")
    if not np.abs(data).max() > 0:
        raise GradmixError(f"{path}: silent; a reference or target mix needs sound")
    if data.shape[-1] < MIN_SECONDS * rate:
        raise GradmixError(
            f"{path}: {data.shape[-1] / rate:.2f} s long; a reference or target mix needs at least {MIN_SECONDS} s"
        )
    if rate != sample_rate:
        data = resample(data, rate, sample_rate)
    x = torch.from_numpy(np.ascontiguousarray(data))
    return x.expand(2, -1).contiguous() if x.shape[0] == 1 else x


def loudest_window(audio: list[Tensor], sample_rate: int, seconds: float) -> slice:
    """The ``seconds``-long window (whole seconds) where the plain sum of ``audio`` is loudest, in samples."""
    total = sum(a.mean(0) for a in audio)
    n = total.shape[-1]
    w = int(seconds * sample_rate)
    if n <= w:
        return slice(0, n)
    power = torch.nn.functional.avg_pool1d(total.square()[None, None], sample_rate, sample_rate)[0, 0]
    blocks = max(1, w // sample_rate)
    energy = torch.nn.functional.avg_pool1d(power[None, None], blocks, 1)[0, 0]
    start = int(energy.argmax()) * sample_rate
    return slice(start, min(n, start + w))


@dataclass
class Excerpt:
    """Chunks of a song that stand for it in refinement: loudness-normalised tracks ``x (chunks, N, 2, T)``
    whose first ``preroll`` samples only warm the effects up, and mono flags ``(chunks, N)``."""

    x: Tensor
    mono: Tensor
    preroll: int


def song_excerpt(
    audio: list[Tensor],
    analysis: Analysis,
    sample_rate: int,
    *,
    seconds: float | None = 12.0,
    chunk_s: float = 4.0,
    preroll_s: float = 1.0,
) -> Excerpt:
    """``seconds`` of the song in ``chunk_s`` chunks spread evenly over it (the whole song if it is shorter or
    ``seconds`` is None), on the device of the analysis."""
    device = analysis.embeddings.device
    n = audio[0].shape[-1]
    chunk, pre = int(chunk_s * sample_rate), int(preroll_s * sample_rate)
    count = max(1, round(seconds / chunk_s)) if seconds is not None else 1
    if seconds is None or n <= count * chunk:
        starts, chunk = [0], n
    else:
        starts = [round(i * (n - chunk) / max(count - 1, 1)) for i in range(count)]
    gains = torch.tensor(analysis.gains_db, device=device)[:, None, None]
    x = torch.stack([a.expand(2, -1) if a.shape[0] == 1 else a for a in audio]).to(device)
    x = x * torch.pow(10.0, gains / 20)
    parts = [torch.nn.functional.pad(x[..., max(0, s - pre) : s + chunk], (max(0, pre - s), 0)) for s in starts]
    mono = torch.tensor([[a.shape[0] == 1 for a in audio]], device=device).expand(len(parts), -1)
    return Excerpt(torch.stack(parts), mono, pre)


def _excerpt_mix(model: MixController, excerpt: Excerpt, controls: Controls, sample_rate: int) -> Tensor:
    """``(1, 2, samples)``: the excerpt mixed with ``controls`` (batch of one), its chunks joined."""
    with torch.no_grad():
        est, _ = model.layout.render_normalized(
            excerpt.x, controls.expand(excerpt.x.shape[0]), sample_rate=sample_rate, mono=excerpt.mono
        )
        return _joined(est, excerpt)


def _coordinates(mix: Tensor, sample_rate: int) -> Tensor:
    return style_coordinates(style_features(mix, sample_rate)).float()


def _joined(est: Tensor, excerpt: Excerpt) -> Tensor:
    """The chunks' mixes ``(chunks, 2, T)`` without their pre-roll, joined into one ``(1, 2, samples)``."""
    return est[..., excerpt.preroll :].transpose(0, 1).reshape(1, 2, -1)


def refine_controls(
    model: MixController,
    excerpt: Excerpt,
    start: Controls,
    target: dict[str, Tensor],
    sample_rate: int,
    *,
    steps: int,
    lr: float = 0.05,
    mix_section_only: bool = False,
    balanced: bool = False,
    progress: bool = False,
) -> Controls:
    """Adam on the controls' logits (from ``start``, batch of one) so that the excerpt's mix has the style
    features ``target`` (``{name: (1,)}``): minimises :func:`gradmix.metrics.style_distance`.

    ``mix_section_only`` keeps each track's gain, EQ and compressor as they are (rendered once) and moves only
    the pans, sends, bus and master effects: several times cheaper a step (used by sampling). ``balanced`` adds
    the mix's energy-weighted panning index (0 for a mix as heavy on the left as on the right), weighted as
    one of the style features, with target 0: the panning RMS features measure width, not side, and are
    largest when every track leans the same way."""
    layout, k = model.layout, excerpt.x.shape[0]
    logits = start.logits()
    opt = torch.optim.Adam(logits, lr=lr)
    if mix_section_only:
        if not layout.strip[-1].effect.mono_in:
            raise GradmixError("refining the mix section needs a layout whose strips end with a pan")
        with torch.no_grad():
            params = layout.denormalize(Controls.from_logits(logits, k))
            before_pan = render_strips(
                layout.strip[:-1], excerpt.x, params.strip[:-1], sample_rate=sample_rate, mono=excerpt.mono
            )
    for _ in show_progress(range(steps), "refining", progress):
        controls = Controls.from_logits(logits, k)
        if mix_section_only:
            params = layout.denormalize(controls)
            strips = render_strips(
                layout.strip[-1:], before_pan, params.strip[-1:], sample_rate=sample_rate, mono=excerpt.mono
            )
            est = mix_down(layout, strips, params, sample_rate=sample_rate)
        else:
            est, _ = layout.render_normalized(excerpt.x, controls, sample_rate=sample_rate, mono=excerpt.mono)
        joined = _joined(est, excerpt)
        loss = style_distance(joined, target, sample_rate).mean()
        if balanced:
            side = panning_features(joined, sample_rate)["panning_index"].abs() / FLOORS["panning_rms"]
            loss = loss + side.mean() / len(STYLE_FEATURES)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return Controls.from_logits([v.detach() for v in logits])


def refine(
    song: Song,
    analysis: Analysis,
    z: Tensor,
    reference: Tensor,
    *,
    steps: int,
    lr: float = 0.05,
    progress: bool = False,
) -> ConsoleSetting:
    """The model's console for style ``z``, then every control refined (:func:`refine_controls`) towards the
    style features of ``reference`` ``(2, samples)``."""
    model, sr = song.model, song.sample_rate
    with torch.no_grad():
        target = style_features(reference[None], sr)
        start = model.decide(analysis.embeddings, analysis.mask, z[None])
    controls = refine_controls(
        model, song_excerpt(song.audio, analysis, sr), start, target, sr, steps=steps, lr=lr, progress=progress
    )
    return setting_from_controls(model, controls, analysis, song.names, song.files, sr)


def sample_settings(
    song: Song,
    analysis: Analysis,
    n: int,
    *,
    seed: int = 0,
    temperature: float = SAMPLE_TEMPERATURE,
    refine_steps: int = SAMPLE_REFINE_STEPS,
    skip: int = 0,
    progress: bool = False,
) -> list[ConsoleSetting]:
    """``n`` console settings in styles drawn by :func:`draw_styles`: the controller's console for each ``z``,
    then ``refine_steps`` steps on the mix section towards the style's features (0: the controller alone).
    ``skip``: leave out the first draws (the studio's next sample continues the same sequence)."""
    model, sr = song.model, song.sample_rate
    zs, offsets, tones = (v[skip:] for v in draw_styles(model, n + skip, seed=seed, temperature=temperature))
    excerpt = song_excerpt(song.audio, analysis, sr) if refine_steps > 0 else None
    if excerpt is not None:  # each style is an offset from the automatic mix's own
        own_mix = _excerpt_mix(model, excerpt, model.decide(analysis.embeddings, analysis.mask), sr)
        own = _coordinates(own_mix, sr)[0]
    out = []
    for i, (z, offset, tone) in enumerate(
        zip(show_progress(list(zs), "sampling mixes", progress), offsets, tones), start=skip
    ):
        with torch.no_grad():
            controls = model.decide(analysis.embeddings, analysis.mask, z[None])
        if excerpt is not None:
            target = {k: v[None].to(excerpt.x.dtype) for k, v in style_from_coordinates(own + offset).items()}
            # spectral features move as the human's EQ difference would move this song's, not by a ratio: a
            # third brighter is a small boost on a bright song and a huge one on a dark song
            target.update({k: v.to(excerpt.x.dtype) for k, v in toned_spectral_features(own_mix, tone, sr).items()})
            controls = refine_controls(
                model,
                excerpt,
                _nudge_pans(model, controls, seed * 100003 + i),
                target,
                sr,
                steps=refine_steps,
                lr=SAMPLE_REFINE_LR,
                mix_section_only=True,
                balanced=True,
            )
        out.append(setting_from_controls(model, controls, analysis, song.names, song.files, sr))
    return out


def _nudge_pans(model: MixController, controls: Controls, seed: int) -> Controls:
    """``controls`` with each track's pan control moved by up to :data:`SAMPLE_PAN_NUDGE`, seeded."""
    j = model.layout.strip_control_index(len(model.layout.strip) - 1, "pan")
    g = torch.Generator().manual_seed(seed)
    strip = controls.strip.clone()
    move = (2 * torch.rand(strip.shape[:2], generator=g, dtype=strip.dtype) - 1).to(strip.device) * SAMPLE_PAN_NUDGE
    strip[..., j] = (strip[..., j] + move).clamp(0, 1)
    return Controls(strip, controls.sends, controls.buses, controls.master)


def match_folder(
    stems_dir: str | Path,
    reference: str | Path,
    output: str | Path,
    *,
    refine_steps: int = MATCH_REFINE_STEPS,
    model_path: str | Path | None = None,
    progress: bool = False,
    device: torch.device | str = DEVICE,
) -> tuple[Rendered, dict[str, float]]:
    """Mix ``stems_dir`` in the style of ``reference``; returns the written files and the style distances
    of the mix to the reference: ``model`` (the model's console) and, after refinement, ``refined``. The
    model, the refinement and the renders run on ``device``."""
    _check_refine_steps(refine_steps)
    song = load_song(stems_dir, model_path, progress=progress, device=device)
    model, sr = song.model, song.sample_rate
    ref = read_reference(reference, sr)
    output = check_output_path(output, [*song.inputs, Path(reference)], audio=True)
    with torch.no_grad():
        z = model.encode_style(ref[None].to(device), sample_rate=sr)[0][0]
    analysis = analyse(model, song.audio, sr)
    setting = console_for(model, analysis, song.names, song.files, sr, z)
    mix = _render(setting, song.audio, device)
    distances = {"model": float(style_distance(mix[None], ref[None], sr))}
    if refine_steps > 0:
        setting = refine(song, analysis, z, ref.to(device), steps=refine_steps, progress=progress)
        mix = _render(setting, song.audio, device)
        distances["refined"] = float(style_distance(mix[None], ref[None], sr))
    return _write(setting, mix, output, [*song.inputs, Path(reference)], stems_dir), distances
