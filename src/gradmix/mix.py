"""``gradmix mix``: the mixing model listens to a folder of stems, sets the console, renders the mix.

The model analyses every track whole (no truncation) after bringing it to -28 LUFS; its 0..1 controls become
physical parameters, and the loudness-normalisation gain is folded into each track's fader, so the console
file it writes is complete: ``gradmix render`` of it reproduces the mix (same renderer, same numbers). The file
reads as an engineer's: each compressor's makeup gain is its own gain reduction (the level is on the fader,
:func:`gradmix.console.makeup_to_gain_reduction`), and every value has four significant digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from gradmix.audio import Stem, check_mixable, check_output_path, load_stems, write_audio
from gradmix.console import ConsoleSetting, Controls, makeup_to_gain_reduction
from gradmix.dsp import integrated_loudness
from gradmix.defaults import DEVICE
from gradmix.errors import GradmixError
from gradmix.models import SILENT_LUFS, MixController, normalization_gain_db
from gradmix.models.checkpoint import load_model

SEND_FLOOR_DB = -55.0
"""Sends the model sets at or below this level are left out of the console file (inaudible)."""
EXCERPT_SECONDS = 20.0
"""The loud passage of each track on which its compressor's gain reduction is measured for the console file."""


@dataclass
class Analysis:
    """What the model heard: per track the loudness-normalisation gain (dB), the embedding ``(1, N, dim)``,
    whether the track is silent (integrated loudness at or below ``SILENT_LUFS``, -70 LUFS) and its loudest
    ``EXCERPT_SECONDS`` ``(channels, samples)`` (a copy, on the CPU)."""

    gains_db: list[float]
    embeddings: Tensor
    silent: list[bool]
    excerpts: list[Tensor]

    @property
    def mask(self) -> Tensor | None:
        """``(1, N)``: True for the tracks the model decides with; a silent track is left out of every decision,
        so that an empty stem changes nothing in the mix of the others (``None`` when no track is silent)."""
        if not any(self.silent):
            return None
        return torch.tensor([[not s for s in self.silent]], device=self.embeddings.device)


def analyse(model: MixController, tracks: list[Tensor], sample_rate: int) -> Analysis:
    """Run the track encoder over every track, whole, one track at a time (memory: one track's copy), on the
    model's device (the embeddings stay there).

    Args:
        tracks: per track ``(channels, samples)``, channels 1 or 2.
    """
    if not tracks:
        raise GradmixError("nothing to mix: no tracks")
    device = next(model.parameters()).device
    gains, emb, silent, excerpts = [], [], [], []
    with torch.no_grad():
        for t in tracks:
            excerpts.append(loudest_excerpt(t, sample_rate, EXCERPT_SECONDS))
            x = (t.expand(2, -1) if t.shape[0] == 1 else t)[None, None].to(device)
            lufs = integrated_loudness(x[0].double(), sample_rate=sample_rate)[0]
            g = float(normalization_gain_db(lufs).to(x.dtype))
            gains.append(g)
            silent.append(bool(lufs <= SILENT_LUFS))
            emb.append(model.encoder(x[0] * 10 ** (g / 20), sample_rate))
    return Analysis(gains, torch.cat(emb)[None], silent, excerpts)


def loudest_excerpt(audio: Tensor, sample_rate: int, seconds: float) -> Tensor:
    """A copy of the ``seconds`` of ``audio`` ``(channels, samples)`` with the most energy (whole 1-s blocks;
    all of it when shorter), on the CPU."""
    block = sample_rate
    width = max(1, round(seconds))
    blocks = audio.shape[-1] // block
    if blocks <= width:
        return audio.detach().cpu().clone()
    energy = audio[:, : blocks * block].detach().square().sum(0).reshape(blocks, block).sum(1)
    start = int(energy.unfold(0, width, 1).sum(1).argmax())
    return audio[:, start * block : (start + width) * block].detach().cpu().clone()


def console_for(
    model: MixController,
    analysis: Analysis,
    names: list[str],
    files: list[str | None],
    sample_rate: int,
    z: Tensor | None = None,
) -> ConsoleSetting:
    """The console setting the model chooses for analysed tracks, in mix style ``z`` ``(style_dim,)`` (default:
    the model's centre of human mixes)."""
    with torch.no_grad():
        controls = model.decide(analysis.embeddings, analysis.mask, None if z is None else z[None])
    return setting_from_controls(model, controls, analysis, names, files, sample_rate)


def setting_from_controls(
    model: MixController,
    controls: Controls,
    analysis: Analysis,
    names: list[str],
    files: list[str | None],
    sample_rate: int,
) -> ConsoleSetting:
    """The console file of 0..1 ``controls`` (batch of one) for loudness-normalised tracks: the
    normalisation gains of ``analysis`` are folded into the faders, so the file renders the raw stems. A silent
    track gets a neutral strip (every effect at its defaults, no sends): the model did not hear it. Each
    compressor's makeup becomes its gain reduction on the track's excerpt, the rest of the level moving to the
    fader (the sound unchanged), and every value is rounded to four significant digits."""
    with torch.no_grad():
        params = model.layout.denormalize(controls)
    setting = ConsoleSetting.from_params(
        model.layout, params, names=names, files=files, sample_rate=sample_rate, send_floor_db=SEND_FLOOR_DB
    )
    for i, silent in enumerate(analysis.silent):
        if silent:
            setting.tracks[i] = ConsoleSetting.neutral(
                [names[i]], [files[i]], sample_rate=sample_rate, layout=model.layout
            ).tracks[0]
    for track, g in zip(setting.tracks, analysis.gains_db):
        fader = next((e for e in track.chain if e.effect.type_name == "gain"), None)
        if fader is None:
            raise GradmixError("the model's layout has no gain on its strips to carry the track levels")
        fader.params["gain_db"] = float(fader.params["gain_db"]) + g
    makeup_to_gain_reduction(setting, [None if s else e for s, e in zip(analysis.silent, analysis.excerpts)])
    setting.round_values()
    return setting


def automix(
    model: MixController,
    names: list[str],
    files: list[str | None],
    tracks: list[Tensor],
    sample_rate: int,
    z: Tensor | None = None,
) -> ConsoleSetting:
    """The console setting ``model`` chooses for one song (tracks: per track ``(channels, samples)``)."""
    return console_for(model, analyse(model, tracks, sample_rate), names, files, sample_rate, z)


@dataclass
class Song:
    """A folder of stems loaded for a model: names and files for the console file, audio at the model's rate."""

    model: MixController
    names: list[str]
    files: list[str]
    audio: list[Tensor]
    sample_rate: int
    inputs: list[Path]


def load_song(
    stems_dir: str | Path,
    model_path: str | Path | None = None,
    *,
    strict: bool = False,
    progress: bool = False,
    device: torch.device | str = DEVICE,
) -> Song:
    """Load the model (default: the shipped one) onto ``device`` and every stem of ``stems_dir`` (on the CPU)
    at the model's sample rate."""
    stems_dir = Path(stems_dir)
    model, meta = load_model(model_path)
    model.to(device)
    stems, sr = load_stems(stems_dir, sample_rate=meta["sample_rate"], strict=strict, progress=progress)
    check_mixable([s.audio for s in stems], sr, stems_dir)
    inputs = [s.path for s in stems] + [stems_dir] + ([Path(model_path)] if model_path else [])
    return Song(model, [s.name for s in stems], console_files(stems, stems_dir), [s.audio for s in stems], sr, inputs)


def console_files(stems: list[Stem], stems_dir: Path) -> list[str]:
    """What a console file names for each stem: its path relative to ``stems_dir`` (``song.stem.mp4#vocals`` for
    a stream of a MUSDB file)."""
    files = [str(s.path.relative_to(stems_dir)) if s.path.is_relative_to(stems_dir) else str(s.path) for s in stems]
    return [f + ("#" + s.name.partition("#")[2] if "#" in s.name else "") for f, s in zip(files, stems)]


@dataclass
class MixReport:
    output: Path
    console: Path
    report: Path | None
    peak_dbfs: float
    loudness_lufs: float
    before_lufs: float
    seconds: float
    tracks: int
    silent: list[str]


def mix_folder(
    stems_dir: str | Path,
    output: str | Path,
    *,
    model_path: str | Path | None = None,
    console_path: str | Path | None = None,
    report: bool = False,
    strict: bool = False,
    subtype: str = "float",
    progress: bool = False,
    device: torch.device | str = DEVICE,
) -> MixReport:
    """Mix every stem of ``stems_dir`` with the model into ``output``; write the console file beside it
    (``<output>.console.json`` unless ``console_path``) and, with ``report``, ``<output>.report.html``.

    Stems are resampled to the model's rate (``strict``: refused instead). The model and the console run on
    ``device``.
    """
    song = load_song(stems_dir, model_path, strict=strict, progress=progress, device=device)
    model, names, files, audio, sr = song.model, song.names, song.files, song.audio, song.sample_rate
    output = check_output_path(output, song.inputs, audio=True)
    console_path = check_output_path(console_path or Path(output).with_suffix(".console.json"), song.inputs)
    if console_path.resolve() == output.resolve():
        raise GradmixError(f"{console_path}: the console file and the mix would be the same file")
    report_path = check_output_path(output.with_suffix(".report.html"), song.inputs) if report else None
    analysis = analyse(model, audio, sr)
    setting = console_for(model, analysis, names, files, sr)
    del song
    with torch.no_grad():
        before = torch.stack([a.expand(2, -1) if a.shape[0] == 1 else a for a in audio]).sum(0) if report else None
        mix, strips = setting.render(audio, keep_strips=False, release=not report, device=device)
        mix = mix.cpu()
    peak = mix.abs().max().item()
    loud = integrated_loudness(mix[None], sample_rate=sr).item()
    before_lufs = integrated_loudness(before[None], sample_rate=sr).item() if before is not None else math.nan
    setting.save(console_path, stems_dir=stems_dir)
    write_audio(output, mix, sr, subtype)
    if report_path is not None:
        from gradmix.report import write_report

        write_report(report_path, setting, before=before, after=mix, mix_file=output)
    return MixReport(
        output,
        console_path,
        report_path,
        20 * math.log10(max(peak, 1e-12)),
        loud,
        before_lufs,
        mix.shape[-1] / sr,
        len(names),
        [n for n, silent in zip(names, analysis.silent) if silent],
    )
