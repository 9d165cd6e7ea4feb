"""The state behind ``gradmix studio``: one song, several versions of its console, edits with undo/redo,
and fast re-rendering of a loop region.

A *version* is a named :class:`~gradmix.console.ConsoleSetting`: the automatic mix, the plain sum, sampled
mixes, a ``match`` result, and ``edited`` (the one the page changes). Every render goes through the same
console code as ``gradmix render``. For a quick answer after an edit, only the loop region (plus a second
of pre-roll, so that envelopes, delays and reverb tails from before it are in place) is rendered, and each
track's strip output is cached under the JSON of its chain: moving one fader re-renders one strip, then the
buses and the master. Every method takes the session lock, so concurrent requests see whole states.

Devices: the model (automatic mix, samples, ``match``), the loop region's audio and cached strips, every render
and the meters' compressors run on the session's ``device``; what goes back to the page (the region's mix as
WAV, meters, EQ curves, the waveform overview) is copied to or computed on the CPU.
"""

from __future__ import annotations

import copy
import io
import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gradmix.audio import check_mixable, check_output_path, load_stems, make_output_folder, safe_file_name, write_audio
from gradmix.console import ConsoleSetting, Mixdown
from gradmix.console.render import place_stereo
from gradmix.console.schema import place
from gradmix.defaults import DEVICE
from gradmix.dsp import integrated_loudness
from gradmix.dsp.eq import eq_coefficients
from gradmix.dsp.biquad import frequency_response_db
from gradmix.dsp.loudness import lufs_from_power, block_powers
from gradmix.errors import ConsoleFileError, GradmixError
from gradmix.mix import Song, console_files

PREROLL_S = 1.0
"""Audio rendered before the loop region and dropped, so that compressors, delays and reverbs are settled."""
MAX_REGION_S = 60.0
DEFAULT_REGION_S = 30.0
EQ_FREQS_HZ = np.geomspace(20.0, 20000.0, 160)
METER_STEP_S = 0.1
SHORT_TERM_S = 3.0
MAX_UNDO = 200
MAX_RENDERS = 16
EDITED, SUM = "edited", "plain sum"


@dataclass
class RegionAudio:
    """A version rendered on the loop region: ``mix (2, samples)`` and its loudness for A/B matching."""

    mix: Tensor
    loudness_lufs: float
    peak_dbfs: float


class Session:
    """One song in the studio.

    Args:
        stems_dir: the folder of stems (never written to).
        out_dir: where saves go (created on first save; must not be the stems folder or inside it).
        console: a console file to open on; default: the model's automatic mix.
        model_path: the mixing model (default: the shipped one).
        device: where the model and the console compute (``cpu``, ``cuda``, ``cuda:N``).
    """

    def __init__(
        self,
        stems_dir: str | Path,
        out_dir: str | Path,
        *,
        console: str | Path | None = None,
        model_path: str | Path | None = None,
        strict: bool = False,
        progress: bool = False,
        device: torch.device | str = DEVICE,
    ) -> None:
        from gradmix.models.checkpoint import load_model

        self.stems_dir = Path(stems_dir).resolve()
        self.out_dir = Path(out_dir).resolve()
        if self.out_dir == self.stems_dir or self.out_dir.is_relative_to(self.stems_dir):
            raise GradmixError(f"{out_dir}: the output folder must lie outside the stems folder {stems_dir}")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise GradmixError(f"{out_dir}: is a file; saves go into a folder")
        self.lock = threading.RLock()
        self.device = torch.device(device)
        self.model, meta = load_model(model_path)
        self.model.to(self.device)
        self.model_rate = int(meta["sample_rate"])
        opened = ConsoleSetting.load(console) if console is not None else None
        rate = opened.sample_rate if opened is not None else meta["sample_rate"]
        files = [t.file for t in opened.tracks] if opened is not None else None
        if opened is not None and any(f is None for f in files):
            raise GradmixError(f"{console}: every track must name its file")
        stems, self.sample_rate = load_stems(
            self.stems_dir, files=files, sample_rate=rate, strict=strict, progress=progress
        )
        self.names = [t.name for t in opened.tracks] if opened is not None else [s.name for s in stems]
        self.files = files or console_files(stems, self.stems_dir)
        self.audio = [s.audio for s in stems]
        check_mixable(self.audio, self.sample_rate, self.stems_dir)
        self.inputs = [s.path for s in stems] + [self.stems_dir]
        self.length = self.audio[0].shape[-1]
        self._analysis = None
        self.versions: OrderedDict[str, ConsoleSetting] = OrderedDict()
        self.versions["automatic mix" if opened is None else "opened console"] = opened or self._automix()
        plain = ConsoleSetting.neutral(self.names, self.files, sample_rate=self.sample_rate)
        self.versions[SUM] = ConsoleSetting(self.sample_rate, plain.tracks, plain.buses, [])  # no master limiter
        self.versions[EDITED] = copy.deepcopy(next(iter(self.versions.values())))
        self.undo_stack: list[str] = []
        self.redo_stack: list[str] = []
        self.muted: set[int] = set()
        self.soloed: set[int] = set()
        self.samples_drawn = 0
        self.revision = 0
        self._strips: dict[tuple[int, str], Tensor] = {}
        self._renders: dict[str, RegionAudio] = {}
        self._gr: dict[tuple[int, str], list[float]] = {}
        self._overview = self.overview()
        self.set_region(*self._default_region())

    # ---- the model ----------------------------------------------------------------------------------

    def _analyse(self):
        from gradmix.mix import analyse

        if self._analysis is None:
            if self.model_rate != self.sample_rate:
                raise GradmixError(f"the model works at {self.model_rate} Hz; this console is at {self.sample_rate} Hz")
            self._analysis = analyse(self.model, self.audio, self.sample_rate)
        return self._analysis

    def _song(self) -> Song:
        """The session's stems as the generative functions take them."""
        return Song(self.model, self.names, self.files, self.audio, self.sample_rate, self.inputs)

    def _automix(self) -> ConsoleSetting:
        from gradmix.mix import console_for

        return console_for(self.model, self._analyse(), self.names, self.files, self.sample_rate)

    def mix_again(self) -> None:
        """The model's automatic mix becomes the edited version (undoable)."""
        with self.lock:
            self._replace_edited(self._automix())

    def sample(self) -> str:
        """Add one more mix in a style drawn from the model's bank (``gradmix sample``'s sequence, seed 0);
        returns its version name."""
        from gradmix.generate import sample_settings

        with self.lock:
            song = self._song()
            setting = sample_settings(song, self._analyse(), 1, skip=self.samples_drawn)[0]
            self.samples_drawn += 1
            name = f"sample {self.samples_drawn}"
            self.versions[name] = setting
            self._move_edited_last()
            return name

    def match(self, reference: Path) -> str:
        """Add the mix in the style of the reference file (any length, mono or stereo, any rate)."""
        from gradmix.generate import MATCH_REFINE_STEPS, read_reference, refine

        ref = read_reference(reference, self.sample_rate).to(self.device)
        with self.lock:
            with torch.no_grad():
                z = self.model.encode_style(ref[None], sample_rate=self.sample_rate)[0][0]
            self.versions["match"] = refine(self._song(), self._analyse(), z, ref, steps=MATCH_REFINE_STEPS)
            self._move_edited_last()
            return "match"

    def _move_edited_last(self) -> None:
        self.versions.move_to_end(EDITED)

    # ---- editing ------------------------------------------------------------------------------------

    @property
    def edited(self) -> ConsoleSetting:
        return self.versions[EDITED]

    def edit(self, changes: list[dict[str, Any]]) -> None:
        """Apply ``[{"path": [...], "value": v}, ...]`` to the edited console's JSON (all or nothing).

        A path walks the console file, e.g. ``["tracks", 2, "chain", 1, "bands", 0, "gain_db"]``; sends are
        addressed by bus name, ``["tracks", 2, "sends", "reverb"]``, and a ``null`` value removes the send.
        The result is validated like a console file; an error names the exact place.
        """
        with self.lock:
            data = self.edited.to_json()
            for change in changes:
                _apply(data, change.get("path"), change.get("value"))
            self._replace_edited(ConsoleSetting.from_json(data, "edit"))

    def adopt(self, version: str) -> None:
        """Start editing from ``version`` (undoable)."""
        with self.lock:
            if version not in self.versions:
                raise GradmixError(f"no version named {version!r}")
            self._replace_edited(copy.deepcopy(self.versions[version]))

    def _replace_edited(self, setting: ConsoleSetting) -> None:
        self.undo_stack = (self.undo_stack + [json.dumps(self.edited.to_json())])[-MAX_UNDO:]
        self.redo_stack.clear()
        self.versions[EDITED] = setting
        self.revision += 1

    def undo(self) -> bool:
        return self._step(self.undo_stack, self.redo_stack)

    def redo(self) -> bool:
        return self._step(self.redo_stack, self.undo_stack)

    def _step(self, source: list[str], target: list[str]) -> bool:
        with self.lock:
            if not source:
                return False
            target.append(json.dumps(self.edited.to_json()))
            self.versions[EDITED] = ConsoleSetting.from_json(json.loads(source.pop()), "undo")
            self.revision += 1
            return True

    def monitor(self, muted: list[int], soloed: list[int]) -> None:
        """Mute and solo are monitoring states: they change what plays, not the console file."""
        with self.lock:
            bad = [i for i in [*muted, *soloed] if not 0 <= int(i) < len(self.names)]
            if bad:
                raise GradmixError(f"no track {bad[0]}")
            self.muted, self.soloed = {int(i) for i in muted}, {int(i) for i in soloed}
            self.revision += 1

    def audible(self) -> list[bool]:
        return [(i in self.soloed if self.soloed else True) and i not in self.muted for i in range(len(self.names))]

    # ---- the loop region ----------------------------------------------------------------------------

    def _default_region(self) -> tuple[float, float]:
        from gradmix.generate import loudest_window

        w = loudest_window(self.audio, self.sample_rate, DEFAULT_REGION_S)
        return w.start / self.sample_rate, w.stop / self.sample_rate

    def set_region(self, start_s: float, end_s: float) -> None:
        """Loop ``start_s .. end_s`` (clipped to the song; at most :data:`MAX_REGION_S` seconds)."""
        if not (math.isfinite(start_s) and math.isfinite(end_s)):
            raise GradmixError("region: start and end must be numbers")
        with self.lock:
            sr = self.sample_rate
            start = min(max(0, round(start_s * sr)), self.length - 1)
            end = min(self.length, max(start + 1, round(end_s * sr)), start + round(MAX_REGION_S * sr))
            self.region = (start, end)
            self._pre = min(start, round(PREROLL_S * sr))
            self._region_audio = [a[:, start - self._pre : end].contiguous().to(self.device) for a in self.audio]
            self._strips.clear()
            self._renders.clear()
            self._gr.clear()
            self.revision += 1

    def render_region(self, version: str) -> RegionAudio:
        """``version`` rendered on the loop region, with the current mute/solo."""
        with self.lock:
            if version not in self.versions:
                raise GradmixError(f"no version named {version!r}")
            setting = self.versions[version]
            key = json.dumps([setting.to_json(), sorted(self.muted), sorted(self.soloed)])
            if key not in self._renders:  # by content: versions with the same console share one render
                with torch.no_grad():
                    mix = self._render(setting)[:, self._pre :].cpu()  # for the page and its meters
                peak = float(mix.abs().max())
                self._renders[key] = RegionAudio(
                    mix,
                    float(integrated_loudness(mix[None], sample_rate=self.sample_rate)),
                    20 * math.log10(max(peak, 1e-12)),
                )
                while len(self._renders) > MAX_RENDERS:
                    self._renders.pop(next(iter(self._renders)))
            return self._renders[key]

    def _strip_key(self, i: int, setting: ConsoleSetting) -> tuple[int, str]:
        return i, json.dumps([e.to_json() for e in setting.tracks[i].chain])

    def _render(self, setting: ConsoleSetting) -> Tensor:
        keys = [self._strip_key(i, setting) for i in range(len(setting.tracks))]
        todo = [i for i, k in enumerate(keys) if k not in self._strips]
        if todo:
            only = ConsoleSetting(self.sample_rate, [setting.tracks[i] for i in todo])
            _, strips = only.render([self._region_audio[i] for i in todo], keep_strips=True)
            for j, i in enumerate(todo):
                self._strips[keys[i]] = strips[j]
        playing = [i for i, on in enumerate(self.audible()) if on]
        layout, params = setting.mix_layout(self._region_audio[0])
        down = Mixdown(layout, params, self._region_audio[0], self._region_audio[0].shape[-1])
        if playing:
            down.add(torch.stack([self._strips[keys[i]] for i in playing])[None], playing)
        return down.finish(self.sample_rate)[0]

    # ---- what the page shows ------------------------------------------------------------------------

    def wav_bytes(self, version: str) -> tuple[bytes, RegionAudio]:
        """The region render of ``version`` as a 32-bit float WAV file."""
        import soundfile as sf

        r = self.render_region(version)
        buf = io.BytesIO()
        sf.write(buf, r.mix.T.numpy().astype(np.float32), self.sample_rate, subtype="FLOAT", format="WAV")
        return buf.getvalue(), r

    def meters(self, version: str) -> dict[str, Any]:
        """Loudness of the master (integrated, short-term every 0.1 s, peak) and each compressor's gain
        reduction every 0.1 s on the loop region."""
        with self.lock:
            r = self.render_region(version)
            setting = self.versions[version]
            short = lufs_from_power(
                block_powers(
                    r.mix[None].double(), sample_rate=self.sample_rate, block_s=SHORT_TERM_S, step_s=METER_STEP_S
                )
            )[0]
            return {
                "version": version,
                "integrated_lufs": r.loudness_lufs,
                "peak_dbfs": r.peak_dbfs,
                "short_term_lufs": [round(max(v, -70.0), 2) for v in short.tolist()],
                "short_term_offset_s": SHORT_TERM_S,
                "step_s": METER_STEP_S,
                "gain_reduction_db": [self._gain_reduction(i, setting) for i in range(len(setting.tracks))],
            }

    def _gain_reduction(self, i: int, setting: ConsoleSetting) -> list[float] | None:
        """Per 0.1 s, how far the track's first compressor turns the signal down (dB, >= 0), makeup aside."""
        chain = setting.tracks[i].chain
        k = next((k for k, e in enumerate(chain) if e.effect.type_name == "compressor"), None)
        if k is None:
            return None
        key = self._strip_key(i, setting)
        if key not in self._gr:
            with torch.no_grad():
                x = self._region_audio[i][None]
                for e in chain[: k + 1]:
                    before = x
                    x = _apply_entry(e, x, self.sample_rate)
            hop = round(METER_STEP_S * self.sample_rate)

            def level(y: Tensor) -> Tensor:
                y = y[..., self._pre :]
                n = y.shape[-1] // hop * hop
                return 10 * torch.log10(y[..., :n].square().mean(1).reshape(-1, hop).mean(-1).clamp_min(1e-12))

            gr = level(before) - level(x) + float(chain[k].params["makeup_db"])
            self._gr[key] = [round(max(v, 0.0), 2) for v in gr.tolist()]
        return self._gr[key]

    def eq_curves(self, setting: ConsoleSetting) -> dict[str, Any]:
        """Magnitude response (dB at :data:`EQ_FREQS_HZ`) of each track's and the master's first EQ (on the CPU:
        a few numbers for the page)."""

        def curve(chain) -> list[float] | None:
            e = next((e for e in chain if e.effect.type_name == "eq"), None)
            if e is None:
                return None
            p = {k: torch.tensor([e.params[k]], dtype=torch.float64, device="cpu") for k in ("freq_hz", "gain_db", "q")}
            b, a = eq_coefficients(e.effect.shapes, sample_rate=self.sample_rate, **p)
            return [round(v, 3) for v in frequency_response_db(b, a, EQ_FREQS_HZ, self.sample_rate)[0].tolist()]

        return {
            "freqs_hz": [round(float(f), 2) for f in EQ_FREQS_HZ],
            "tracks": [curve(t.chain) for t in setting.tracks],
            "master": curve(setting.master),
        }

    def overview(self, bins: int = 1200) -> list[list[float]]:
        """``bins`` ``[min, max]`` pairs of the plain sum of the whole song (mono), for the waveform."""
        total = sum(a.mean(0) for a in self.audio)
        n = total.shape[-1] // bins * bins
        if n == 0:
            return [[float(total.min()), float(total.max())]]
        blocks = total[:n].reshape(bins, -1)
        return [[round(lo, 4), round(hi, 4)] for lo, hi in zip(blocks.amin(1).tolist(), blocks.amax(1).tolist())]

    def state(self, overview: bool = False) -> dict[str, Any]:
        """What the page shows; ``overview``: also the song's waveform (:meth:`overview`, sent once)."""
        with self.lock:
            sr = self.sample_rate
            return {
                "sample_rate": sr,
                "song_s": self.length / sr,
                "tracks": [
                    {"name": n, "file": f, "channels": a.shape[0]}
                    for n, f, a in zip(self.names, self.files, self.audio)
                ],
                "region": [self.region[0] / sr, self.region[1] / sr],
                "versions": list(self.versions),
                "console": self.edited.to_json(),
                "eq": self.eq_curves(self.edited),
                "muted": sorted(self.muted),
                "soloed": sorted(self.soloed),
                "can_undo": bool(self.undo_stack),
                "can_redo": bool(self.redo_stack),
                "revision": self.revision,
                "out_dir": str(self.out_dir),
                "has_style": bool(self.model.cfg.style_dim),
                **({"overview": self._overview} if overview else {}),
            }

    # ---- saving --------------------------------------------------------------------------------------

    def save(self, name: str = "studio_mix") -> list[Path]:
        """Write the edited console, its whole-song mix, the processed stems and DAW sessions to the output
        folder; every file is written atomically, and none over a stem."""
        from gradmix.daw import export_session

        stem = safe_file_name(name) or "studio_mix"
        with self.lock:
            setting = copy.deepcopy(self.edited)
            make_output_folder(self.out_dir)
            stems_out = self.out_dir / f"{stem}_stems"
            stems_out.mkdir(exist_ok=True)
            inputs = list(self.inputs)
            console = check_output_path(self.out_dir / f"{stem}.console.json", inputs)
            mix_path = check_output_path(self.out_dir / f"{stem}.wav", inputs)
            strip_paths = [
                check_output_path(stems_out / f"{i + 1:02d}_{safe_file_name(t.name)}.wav", inputs)
                for i, t in enumerate(setting.tracks)
            ]
            with torch.no_grad():
                mix, _ = setting.render(
                    list(self.audio),
                    keep_strips=False,
                    on_strip=lambda i, s: write_audio(strip_paths[i], s, self.sample_rate),
                    device=self.device,
                )
            write_audio(mix_path, mix, self.sample_rate)
            setting.save(console, stems_dir=self.stems_dir)
            written = [console, mix_path, *strip_paths]
            for fmt, suffix in (("dawproject", ".dawproject"), ("reaper", ".RPP")):
                written.append(export_session(setting, fmt, self.out_dir / f"{stem}{suffix}", stems_dir=self.stems_dir))
            return written


def _apply(data: dict[str, Any], path: Any, value: Any) -> None:
    if not isinstance(path, list) or not path:
        raise ConsoleFileError("edit: path must be a non-empty list")
    if len(path) == 4 and path[0] == "tracks" and path[2] == "sends":
        track = _walk(data, path[:2])
        sends = [s for s in track.setdefault("sends", []) if s["bus"] != path[3]]
        if value is not None:
            sends.append({"bus": path[3], "level_db": value})
        track["sends"] = sends
        return
    parent = _walk(data, path[:-1])
    leaf = path[-1]
    if (
        isinstance(parent, dict)
        and leaf in parent
        and leaf not in ("type", "shape")
        or isinstance(parent, list)
        and isinstance(leaf, int)
        and 0 <= leaf < len(parent)
    ):
        parent[leaf] = value
    else:
        raise ConsoleFileError(f"edit: {place(path)} cannot be set")


def _walk(data: Any, path: list[Any]) -> Any:
    node = data
    for k, step in enumerate(path):
        ok = (
            isinstance(node, dict)
            and isinstance(step, str)
            and step in node
            or isinstance(node, list)
            and isinstance(step, int)
            and 0 <= step < len(node)
        )
        if not ok:
            raise ConsoleFileError(f"edit: {place(path[: k + 1])} does not exist")
        node = node[step]
    return node


def _apply_entry(entry, x: Tensor, sample_rate: int) -> Tensor:
    """One chain entry on ``(1, channels, samples)`` audio, the pan slot with the console's pan law."""
    params = {k: torch.tensor([v], dtype=x.dtype, device=x.device) for k, v in entry.params.items()}
    if entry.effect.type_name == "pan":
        return place_stereo(x, params["pan"], None)
    return entry.effect(x, params, sample_rate=sample_rate)
