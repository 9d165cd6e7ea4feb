"""Generative mixing on the console: several mixes of the same tracks, mixing in the style of a reference,
and reverse-engineering a mix by gradient descent.

- :func:`sample_folder` (``gradmix sample``): mix styles ``z ~ N(0, T^2 I)`` from the model's prior, one console
  setting each, with a page to compare them.
- :func:`match_folder` (``gradmix match``): ``z`` = the mean of q(z | reference mix); ``refine_steps`` then
  optimises the console's controls through the differentiable console so that the mix's song-level features
  (:func:`gradmix.metrics.style_distance`) approach the reference's.
- :func:`fit_folder` (``gradmix fit``): gradient descent on every control of the console so that the render
  equals a given mix of the same stems; reports the residual in dB.
"""

from __future__ import annotations

import html
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gradmix.audio import check_output_path, read_audio, resample, write_audio
from gradmix.console import ConsoleSetting, Controls
from gradmix.dsp import integrated_loudness, soft_integrated_loudness
from gradmix.errors import GradmixError
from gradmix.metrics import frame_features
from gradmix.metrics.distances import _floor
from gradmix.mix import Analysis, Song, analyse, console_for, load_song, setting_from_controls
from gradmix.models import MixController
from gradmix.progress import progress as show_progress


def prior_styles(model: MixController, n: int, *, seed: int = 0, temperature: float = 1.0) -> Tensor:
    """``(n, style_dim)`` mix styles drawn from the prior N(0, T^2 I) with a seeded generator."""
    if not model.cfg.style_dim:
        raise GradmixError("this model has no mix style (style_dim 0): sampling needs a style model")
    if n < 1:
        raise GradmixError(f"-n: need at least 1 mix, got {n}")
    if not temperature >= 0:
        raise GradmixError(f"--temperature: must be >= 0, got {temperature}")
    g = torch.Generator().manual_seed(seed)
    return temperature * torch.randn(n, model.cfg.style_dim, generator=g)


def _render(setting: ConsoleSetting, audio: list[Tensor]) -> Tensor:
    with torch.no_grad():
        return setting.render(list(audio), keep_strips=False)[0]


@dataclass
class Rendered:
    mix: Path
    console: Path
    loudness_lufs: float
    peak_dbfs: float


def _write(setting: ConsoleSetting, mix: Tensor, path: Path, inputs: list[Path]) -> Rendered:
    path = check_output_path(path, inputs)
    console = check_output_path(path.with_suffix(".console.json"), inputs)
    setting.save(console)
    write_audio(path, mix, setting.sample_rate)
    lufs = integrated_loudness(mix[None], sample_rate=setting.sample_rate).item()
    return Rendered(path, console, lufs, 20 * math.log10(max(mix.abs().max().item(), 1e-12)))


def sample_folder(stems_dir: str | Path, out_dir: str | Path, *, n: int = 8, seed: int = 0, temperature: float = 1.0,
                  model_path: str | Path | None = None, progress: bool = False) -> list[Rendered]:
    """Write ``n`` mixes (``mix_01.wav`` ...), their console files and ``index.html`` comparing them."""
    song = load_song(stems_dir, model_path, progress=progress)
    zs = prior_styles(song.model, n, seed=seed, temperature=temperature)
    out = Path(out_dir)
    if out.resolve() == Path(stems_dir).resolve():
        raise GradmixError(f"{out}: the output folder is the stems folder (the mixes would become stems)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GradmixError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    analysis = analyse(song.model, song.audio, song.sample_rate)
    results, settings = [], []
    for k, z in enumerate(show_progress(list(zs), "sampling mixes", progress)):
        setting = console_for(song.model, analysis, song.names, song.files, song.sample_rate, z)
        results.append(_write(setting, _render(setting, song.audio), out / f"mix_{k + 1:02d}.wav", song.inputs))
        settings.append(setting)
    _comparison_page(out / "index.html", settings, results)
    return results


def _comparison_page(path: Path, settings: list[ConsoleSetting], results: list[Rendered]) -> None:
    """A page with one row per mix: gain/pan map, EQ curves, loudness, a player."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gradmix.report import _eq_response, _find

    rows = []
    for k, (setting, r) in enumerate(zip(settings, results)):
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3))
        for t in setting.tracks:
            g, p = _find(t.chain, "gain"), _find(t.chain, "pan")
            x, y = (float(p.params["pan"]) if p else 0.0), (float(g.params["gain_db"]) if g else 0.0)
            a.scatter([x], [y])
            a.annotate(t.name, (x, y), fontsize=7)
        a.set(xlim=(-1.1, 1.1), xlabel="pan", ylabel="fader dB", title="gain / pan map")
        a.grid(alpha=0.3)
        freqs = np.geomspace(20, min(20000, setting.sample_rate * 0.49), 200)
        for t in setting.tracks:
            eq = _find(t.chain, "eq")
            if eq is not None:
                b.semilogx(freqs, _eq_response(eq, freqs, setting.sample_rate), lw=0.8)
        master = _find(setting.master, "eq")
        if master is not None:
            b.semilogx(freqs, _eq_response(master, freqs, setting.sample_rate), "k", lw=2)
        b.set(ylim=(-15, 15), xlabel="Hz", ylabel="dB", title="EQ curves (black: master)")
        b.grid(alpha=0.3, which="both")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        png = base64.b64encode(buf.getvalue()).decode()
        rows.append(f"<h2>{html.escape(r.mix.name)}: {r.loudness_lufs:.1f} LUFS, peak {r.peak_dbfs:.1f} dBFS</h2>"
                    f'<audio controls src="{html.escape(r.mix.name)}"></audio> '
                    f'<a href="{html.escape(r.console.name)}">console file</a><br>'
                    f'<img alt="console of {html.escape(r.mix.name)}" src="data:image/png;base64,{png}">')
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>gradmix samples</title></head>"
            "<body style='font-family:sans-serif;max-width:1000px;margin:auto'><h1>gradmix: sampled mixes</h1>"
            "<p>Each mix is an editable console file: pick one, edit it, render it with <code>gradmix render</code>."
            "</p>" + "".join(rows) + "</body></html>")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page)
    os.replace(tmp, path)


# ---- style features ------------------------------------------------------------------------------------


def style_features(x: Tensor, sample_rate: float) -> dict[str, Tensor]:
    """Song-level, differentiable features of stereo mixes ``(batch, 2, samples)``: the time averages of the
    frame features of :func:`gradmix.metrics.frame_features`, and soft-gated integrated loudness."""
    feats = {k: v.mean(-1) for k, v in frame_features(x, sample_rate).items()}
    feats["loudness_lufs"] = soft_integrated_loudness(x, sample_rate=sample_rate)
    return feats


def style_loss(estimate: dict[str, Tensor], target: dict[str, Tensor]) -> Tensor:
    """Mean relative error of the features (denominators floored as in the evaluation)."""
    errs = [((estimate[k] - target[k]).abs() / target[k].abs().clamp_min(_floor(k))).mean() for k in target]
    return torch.stack(errs).mean()


def read_reference(path: str | Path, sample_rate: int) -> Tensor:
    """A reference or target mix as ``(2, samples)`` at ``sample_rate`` (mono is duplicated; soxr resampling)."""
    data, rate = read_audio(path)
    if data.shape[0] > 2:
        raise GradmixError(f"{path}: {data.shape[0]} channels; a reference mix must be mono or stereo")
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


def _as_batch(audio: list[Tensor], analysis: Analysis) -> tuple[Tensor, Tensor]:
    """``(1, N, 2, T)`` tracks at the analysis' normalisation gains and mono flags ``(1, N)``."""
    gains = torch.tensor(analysis.gains_db)[:, None, None]
    x = torch.stack([a.expand(2, -1) if a.shape[0] == 1 else a for a in audio]) * torch.pow(10.0, gains / 20)
    return x[None], torch.tensor([[a.shape[0] == 1 for a in audio]])


def _logits(c: Controls) -> list[Tensor]:
    return [torch.logit(u.detach().clamp(1e-4, 1 - 1e-4)).requires_grad_() for u in (c.strip, c.sends, c.buses, c.master)]


def _controls(logits: list[Tensor]) -> Controls:
    return Controls(*(torch.sigmoid(v) for v in logits))


def refine(song: Song, analysis, z: Tensor, reference: Tensor, *, steps: int, excerpt_s: float = 15.0,
           lr: float = 0.05, progress: bool = False) -> ConsoleSetting:
    """Optimise the console (from the model's choice for style ``z``) so that the mix's style features approach
    those of ``reference`` ``(2, samples)``; the loudest ``excerpt_s`` seconds of the stems stand for the song."""
    model, sr = song.model, song.sample_rate
    window = loudest_window(song.audio, sr, excerpt_s)
    x, mono = _as_batch([a[:, window] for a in song.audio], analysis)
    with torch.no_grad():
        target = style_features(reference[None], sr)
        start = model.decide(analysis.embeddings, None, z[None])
    logits = _logits(start)
    opt = torch.optim.Adam(logits, lr=lr)
    for _ in show_progress(range(steps), "refining", progress):
        est, _ = model.layout.render_normalized(x, _controls(logits), sample_rate=sr, mono=mono)
        loss = style_loss(style_features(est, sr), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return setting_from_controls(model, _controls(logits), analysis, song.names, song.files, sr)


def match_folder(stems_dir: str | Path, reference: str | Path, output: str | Path, *, refine_steps: int = 0,
                 excerpt_s: float = 15.0, model_path: str | Path | None = None,
                 progress: bool = False) -> tuple[Rendered, dict[str, float]]:
    """Mix ``stems_dir`` in the style of ``reference``; returns the written files and the style distances
    (``before_refine``, ``after``) of the mix to the reference."""
    from gradmix.metrics import style_distance

    song = load_song(stems_dir, model_path, progress=progress)
    model, sr = song.model, song.sample_rate
    ref = read_reference(reference, sr)
    output = check_output_path(output, [*song.inputs, Path(reference)])
    with torch.no_grad():
        z = model.encode_style(ref[None], sample_rate=sr)[0][0]
    analysis = analyse(model, song.audio, sr)
    setting = console_for(model, analysis, song.names, song.files, sr, z)
    mix = _render(setting, song.audio)
    distances = {"model": float(style_distance(mix[None], ref[None], sr))}
    if refine_steps > 0:
        setting = refine(song, analysis, z, ref, steps=refine_steps, excerpt_s=excerpt_s, progress=progress)
        mix = _render(setting, song.audio)
        distances["refined"] = float(style_distance(mix[None], ref[None], sr))
    return _write(setting, mix, output, [*song.inputs, Path(reference)]), distances


FIT_WINDOW_S, FIT_WARMUP_S, FIT_CHECK_EVERY = 2.5, 1.0, 10


def fit_folder(stems_dir: str | Path, target: str | Path, output: str | Path, *, max_steps: int = 2000,
               budget_s: float = 120.0, stop_db: float = -40.0, lr: float = 0.05, seed: int = 0,
               model_path: str | Path | None = None, progress: bool = False) -> tuple[Path, float, int]:
    """Find the console that turns the stems into ``target`` by gradient descent on every control.

    Starts from the model's guess for the target's style. Each step renders a random 2.5-s window (after 1 s
    of warm-up, so that envelopes and tails are in place) and minimises a multi-resolution spectral distance
    plus the log waveform error there; the learning rate decays over the expected number of steps (cosine).
    Every 10 steps the whole song is rendered and the best console so far kept. Stops at ``stop_db``
    residual, ``max_steps`` or ``budget_s`` seconds.

    Returns:
        ``(console file, residual in dB (error energy / target energy over the whole song), steps)``.
    """
    song = load_song(stems_dir, model_path, progress=progress)
    model, sr = song.model, song.sample_rate
    ref = read_reference(target, sr)
    output = check_output_path(output, [*song.inputs, Path(target)])
    n = song.audio[0].shape[-1]
    if abs(ref.shape[-1] - n) > sr * 0.05:
        raise GradmixError(f"{target}: {ref.shape[-1] / sr:.2f} s long, the stems {n / sr:.2f} s: fit needs a mix "
                           "of these stems")
    ref = torch.nn.functional.pad(ref, (0, max(0, n - ref.shape[-1])))[:, :n]
    energy = ref.square().sum()
    if energy <= 0:
        raise GradmixError(f"{target}: silent; nothing to fit")
    analysis = analyse(model, song.audio, sr)
    x, mono = _as_batch(song.audio, analysis)
    with torch.no_grad():
        z = model.encode_style(ref[None], sample_rate=sr)[0] if model.cfg.style_dim else None
        start = model.decide(analysis.embeddings, None, z)
    logits = _logits(start)
    opt = torch.optim.Adam(logits, lr=lr)
    mrstft = _spectral_loss()
    gen = torch.Generator().manual_seed(seed)
    seg, warm = min(n, int(FIT_WINDOW_S * sr)), int(FIT_WARMUP_S * sr)

    def residual_db() -> float:
        with torch.no_grad():
            est, _ = model.layout.render_normalized(x, _controls(logits), sample_rate=sr, mono=mono)
        return 10 * math.log10(max(float((est[0] - ref).square().sum() / energy), 1e-30))

    best, best_db, steps, planned = [v.detach().clone() for v in logits], math.inf, 0, max_steps
    t0 = time.perf_counter()
    bar = show_progress(range(max_steps + 1), "fitting", progress, total=max_steps)
    for steps in bar:
        if steps % FIT_CHECK_EVERY == 0 or steps == max_steps:
            r = residual_db()
            if r < best_db:
                best, best_db = [v.detach().clone() for v in logits], r
            elapsed = time.perf_counter() - t0
            if steps and elapsed > 0:  # the cosine spans the steps the budget allows
                planned = min(max_steps, max(steps + 1, int(budget_s / (elapsed / steps))))
            if best_db <= stop_db or elapsed > budget_s or steps == max_steps:
                break
        for group in opt.param_groups:
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, steps / planned))))
        s0 = int(torch.randint(0, max(1, n - seg + 1), (), generator=gen))
        a0 = max(0, s0 - warm)
        est, _ = model.layout.render_normalized(x[..., a0: s0 + seg], _controls(logits), sample_rate=sr, mono=mono)
        est, tgt = est[..., s0 - a0:], ref[None, :, s0: s0 + seg]
        err = (est - tgt).square().sum() / tgt.square().sum().clamp_min(1e-12)
        loss = mrstft(est, tgt) + torch.log10(err + 1e-12)
        opt.zero_grad()
        loss.backward()
        opt.step()
    setting = setting_from_controls(model, _controls(best), analysis, song.names, song.files, sr)
    setting.save(output)
    return output, best_db, steps


def _spectral_loss():
    import auraloss

    return auraloss.freq.MultiResolutionSTFTLoss(fft_sizes=[256, 1024, 4096], hop_sizes=[64, 256, 1024],
                                                 win_lengths=[256, 1024, 4096], w_sc=0.0, w_log_mag=1.0,
                                                 w_lin_mag=1.0)
