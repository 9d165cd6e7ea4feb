"""A console setting for one song in physical units: what ``console.json`` holds, for people to edit.

Tracks may have different chains (a person can add or drop effects on one track); rendering groups the
tracks whose chains have the same structure and channel count and renders each group in one batched
call, so the cost stays that of one call per effect and group, not per track.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gradmix.audio import write_text_atomically
from gradmix.console.layout import Layout, Params, Slot
from gradmix.console.render import StripGroup, render_chunked, track_outputs
from gradmix.console.schema import FORMAT, VERSION, place, validate
from gradmix.effects import Effect, get_effect
from gradmix.errors import ConsoleFileError, GradmixError

CHUNK_SAMPLES = 1 << 25
"""Samples (all channels of all tracks) rendered in one batched call by :meth:`ConsoleSetting.render`."""


@dataclass
class Entry:
    """One effect in a chain with its physical parameters (every parameter present)."""

    effect: Effect
    params: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return self.effect.to_json(self.params)

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> Entry:
        effect, params = get_effect(entry["type"]).from_json(entry)
        return cls(effect, params)

    @property
    def signature(self) -> tuple[str, str]:
        return self.effect.type_name, json.dumps(self.effect.config(), sort_keys=True)


@dataclass
class TrackSetting:
    name: str
    file: str | None
    chain: list[Entry]
    sends: dict[str, float] = field(default_factory=dict)
    """Bus name -> post-fader send level in dB; a bus not named here gets nothing from this track."""


@dataclass
class BusSetting:
    name: str
    chain: list[Entry]


@dataclass
class ConsoleSetting:
    """A whole console for one song, in physical units (see ``console.schema.json``)."""

    sample_rate: int
    tracks: list[TrackSetting]
    buses: list[BusSetting] = field(default_factory=list)
    master: list[Entry] = field(default_factory=list)
    stems: Path | None = None
    """The folder of the tracks' files (absolute; ``None``: not recorded). A console file holds it relative to
    its own folder (``"stems"``): :meth:`load` reads it, :meth:`save` writes it."""

    # ---- JSON --------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "sample_rate": self.sample_rate,
            "tracks": [
                {
                    "name": t.name,
                    "file": t.file,
                    "chain": [e.to_json() for e in t.chain],
                    "sends": [{"bus": b, "level_db": float(v)} for b, v in t.sends.items()],
                }
                for t in self.tracks
            ],
            "buses": [{"name": b.name, "chain": [e.to_json() for e in b.chain]} for b in self.buses],
            "master": {"chain": [e.to_json() for e in self.master]},
        }

    @classmethod
    def from_json(cls, data: Any, source: str = "console") -> ConsoleSetting:
        """Validate (schema, then the checks that need the sample rate) and build."""
        validate(data, source)
        sr = data["sample_rate"]
        try:
            tracks = [
                TrackSetting(
                    t["name"],
                    t.get("file"),
                    [Entry.from_json(e) for e in t["chain"]],
                    {s["bus"]: float(s["level_db"]) for s in t.get("sends", [])},
                )
                for t in data["tracks"]
            ]
            buses = [BusSetting(b["name"], [Entry.from_json(e) for e in b["chain"]]) for b in data.get("buses", [])]
            master = [Entry.from_json(e) for e in data.get("master", {}).get("chain", [])]
        except GradmixError as exc:
            raise ConsoleFileError(f"{source}: {exc}") from None
        setting = cls(sr, tracks, buses, master)
        setting._check(data, source)
        return setting

    def _check(self, data: Mapping[str, Any], source: str) -> None:
        def fail(path: list[Any], msg: str) -> None:
            raise ConsoleFileError(f"{source}: {place(path)}: {msg}")

        names = [t.name for t in self.tracks]
        for i, n in enumerate(names):
            if names.index(n) != i:
                fail(["tracks", i, "name"], f"{n!r} is used by tracks[{names.index(n)}] too")
        bus_names = [b.name for b in self.buses]
        for i, n in enumerate(bus_names):
            if bus_names.index(n) != i:
                fail(["buses", i, "name"], f"{n!r} is used by buses[{bus_names.index(n)}] too")
        chains = [(["tracks", i, "chain"], t.chain) for i, t in enumerate(self.tracks)]
        chains += [(["buses", i, "chain"], b.chain) for i, b in enumerate(self.buses)]
        chains += [(["master", "chain"], self.master)]
        for path, chain in chains:
            for j, e in enumerate(chain):
                problem = e.effect.sample_rate_problem(e.params, self.sample_rate)
                if problem is not None:
                    fail(path + [j, *problem[0]], problem[1])
        for i, t in enumerate(data["tracks"]):
            seen = set()
            for j, s in enumerate(t.get("sends", [])):
                if s["bus"] not in bus_names:
                    fail(
                        ["tracks", i, "sends", j, "bus"],
                        f"{s['bus']!r} is not a bus (buses: {', '.join(bus_names) or 'none'})",
                    )
                if s["bus"] in seen:
                    fail(["tracks", i, "sends", j, "bus"], f"{s['bus']!r} is sent to twice")
                seen.add(s["bus"])

    def save(self, path: str | os.PathLike, stems_dir: str | os.PathLike | None = None) -> Path:
        """Write the JSON atomically (temp file + rename), with the folder of the tracks' files (``stems_dir``,
        else :attr:`stems`) relative to the file's folder, where ``render`` and ``export`` find them."""
        path = Path(path)
        if not path.parent.is_dir():
            raise GradmixError(f"{path.parent}: output folder does not exist")
        data = self.to_json()
        folder = Path(stems_dir).resolve() if stems_dir is not None else self.stems
        if folder is not None:
            try:
                data["stems"] = Path(os.path.relpath(folder, path.parent.resolve())).as_posix()
            except ValueError:  # no relative path (another drive)
                data["stems"] = folder.as_posix()
        return write_text_atomically(path, json.dumps(data, indent=2) + "\n")

    def stems_folder(self, path: str | os.PathLike) -> Path:
        """The folder of the tracks' files for the console file at ``path``: the recorded :attr:`stems`, or
        the file's own folder."""
        return self.stems if self.stems is not None else Path(path).parent

    @classmethod
    def load(cls, path: str | os.PathLike) -> ConsoleSetting:
        path = Path(path)
        if not path.is_file():
            raise ConsoleFileError(f"{path}: no such console file")

        def constant(name: str) -> float:  # -Infinity is an absent send; NaN and +Infinity are no setting
            if name != "-Infinity":
                raise ConsoleFileError(f"{path}: {name} is not a value a console file may hold")
            return -math.inf

        try:
            data = json.loads(path.read_text(), parse_constant=constant)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConsoleFileError(f"{path}: not valid JSON ({exc})") from None
        setting = cls.from_json(data, str(path))
        if "stems" in data:
            setting.stems = (path.parent.resolve() / data["stems"]).resolve()
        return setting

    # ---- building ------------------------------------------------------------------------------------

    @classmethod
    def neutral(
        cls,
        names: Sequence[str],
        files: Sequence[str | None] | None = None,
        *,
        sample_rate: int,
        layout: Layout | None = None,
    ) -> ConsoleSetting:
        """Every effect of ``layout`` at its defaults and no sends: renders the plain (panned) sum."""
        layout = layout or Layout.default()
        files = list(files) if files is not None else [None] * len(names)

        def entries(slots: Sequence[Slot]) -> list[Entry]:
            return [Entry(s.effect, s.effect.complete(dict(s.fixed))) for s in slots]

        return cls(
            sample_rate,
            [TrackSetting(n, f, entries(layout.strip)) for n, f in zip(names, files)],
            [BusSetting(name, entries(chain)) for name, chain in layout.buses],
            entries(layout.master),
        )

    @classmethod
    def from_params(
        cls,
        layout: Layout,
        params: Params,
        *,
        names: Sequence[str],
        files: Sequence[str | None],
        sample_rate: int,
        item: int = 0,
        send_floor_db: float = -math.inf,
    ) -> ConsoleSetting:
        """The console file of batch item ``item`` of a network's physical parameters.

        Sends at or below ``send_floor_db`` are left out.
        """

        def val(v: Tensor, *index: int) -> Any:
            return v.detach()[(item, *index)].tolist()

        tracks = []
        for n, (name, file) in enumerate(zip(names, files)):
            chain = [Entry(s.effect, {k: val(v, n) for k, v in p.items()}) for s, p in zip(layout.strip, params.strip)]
            sends = {
                bus: float(params.sends_db[item, n, k])
                for k, bus in enumerate(layout.bus_names)
                if float(params.sends_db[item, n, k]) > send_floor_db
            }
            tracks.append(TrackSetting(name, file, chain, sends))
        buses = [
            BusSetting(name, [Entry(s.effect, {k: val(v) for k, v in p.items()}) for s, p in zip(chain, ps)])
            for (name, chain), ps in zip(layout.buses, params.buses)
        ]
        master = [Entry(s.effect, {k: val(v) for k, v in p.items()}) for s, p in zip(layout.master, params.master)]
        return cls(sample_rate, tracks, buses, master)

    def round_values(self, digits: int = 4) -> None:
        """In place: every parameter and send level rounded to ``digits`` significant digits, as a person
        writes them (a network's float32 values carry seven digits of noise); 4 digits move a gain of 10 dB by
        at most 0.0005 dB and a frequency by at most 0.05 %. Whole numbers (a reverb's seed) stay as they are."""
        for entry in [e for t in self.tracks for e in t.chain] + [e for b in self.buses for e in b.chain] + self.master:
            entry.params = {k: significant(v, digits) for k, v in entry.params.items()}
        for track in self.tracks:
            track.sends = {bus: significant(level, digits) for bus, level in track.sends.items()}

    # ---- rendering ------------------------------------------------------------------------------------

    def render(
        self,
        tracks: Sequence[Tensor],
        *,
        keep_strips: bool = True,
        on_strip: Callable[[int, Tensor], None] | None = None,
        chunk_samples: int = CHUNK_SAMPLES,
        release: bool = False,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Render the song.

        Tracks are rendered in batched chunks of at most ``chunk_samples`` samples (all channels of all
        tracks in the chunk), so long songs stay within a bounded amount of memory.

        Args:
            tracks: one ``(channels, samples)`` tensor per track (in track order), channels 1 or 2, all of one
                length, at :attr:`sample_rate`.
            keep_strips: also return every strip output (costs ``tracks x 2 x samples`` of memory).
            on_strip: called with ``(track index, (2, samples) strip output)`` as each is rendered.
            chunk_samples: memory budget of one batched call.
            release: set each entry of ``tracks`` (a list) to ``None`` once rendered, so that its memory can be
                freed before the buses and the master run.
            device: where to compute (default: the tracks' device); each chunk of tracks is copied there, and
                the results stay there.

        Returns:
            ``(mix, strips)``: ``(2, samples)`` and ``(tracks, 2, samples)`` (post-fader, post-pan) or ``None``.
        """
        if len(tracks) != len(self.tracks):
            raise GradmixError(f"the console has {len(self.tracks)} tracks, {len(tracks)} were given")
        like = tracks[0].new_zeros(0, device=device)
        members: dict[Any, list[int]] = {}
        for i, (t, audio) in enumerate(zip(self.tracks, tracks)):
            members.setdefault((tuple(e.signature for e in t.chain), audio.shape[0]), []).append(i)
        groups = [
            StripGroup(
                [Slot(e.effect) for e in self.tracks[idx[0]].chain],
                idx,
                [
                    {
                        name: torch.tensor(
                            [[self.tracks[i].chain[k].params[name] for i in idx]], dtype=like.dtype, device=like.device
                        )
                        for name in entry.params
                    }
                    for k, entry in enumerate(self.tracks[idx[0]].chain)
                ],
            )
            for idx in members.values()
        ]
        layout, params = self.mix_layout(like)
        mix, strips = render_chunked(
            layout,
            groups,
            tracks if isinstance(tracks, list) else list(tracks),
            params,
            sample_rate=self.sample_rate,
            chunk_samples=chunk_samples,
            keep_strips=keep_strips,
            on_strip=on_strip,
            release=release,
            device=device,
        )
        return mix[0], None if strips is None else strips[0]

    def track_outputs(self, strips: Tensor) -> Tensor:
        """Each track's own part of the mix before the master chain: its strip output plus, for every bus it
        sends to, that bus's chain applied to the strip times the send gain ``10 ** (level_db / 20)`` (a track
        without a send to a bus gets nothing from it). The parts sum to what the master chain receives.

        Buses must hold linear effects only (see :func:`gradmix.console.track_outputs`, which this calls).

        Args:
            strips: ``(tracks, 2, samples)`` strip outputs, as :meth:`render` returns with ``keep_strips``.

        Returns:
            ``(tracks, 2, samples)``, the dtype and device of ``strips``.
        """
        if strips.dim() != 3 or strips.shape[0] != len(self.tracks) or strips.shape[1] != 2:
            raise GradmixError(
                f"strips: expected ({len(self.tracks)} tracks, 2 channels, samples), got {tuple(strips.shape)}"
            )
        layout, params = self.mix_layout(strips)
        return track_outputs(layout, strips[None], params, sample_rate=self.sample_rate)[0]

    def mix_layout(self, like: Tensor) -> tuple[Layout, Params]:
        """The bus and master chains as a :class:`Layout` without strips, and their :class:`Params` for a batch
        of one, with every track's sends ``(1, tracks, buses)`` (``-inf`` dB: no send) in the dtype and on the
        device of ``like``: what :class:`~gradmix.console.Mixdown` sums and finishes with. A bus that no track
        sends to is left out (every effect maps silence to silence), so that its chain is not run."""
        buses = [b for b in self.buses if any(b.name in t.sends for t in self.tracks)]
        sends = torch.tensor(
            [[t.sends.get(b.name, -math.inf) for b in buses] for t in self.tracks],
            dtype=like.dtype,
            device=like.device,
        ).reshape(1, len(self.tracks), len(buses))
        layout = Layout(
            (),
            tuple((b.name, tuple(Slot(e.effect) for e in b.chain)) for b in buses),
            tuple(Slot(e.effect) for e in self.master),
        )
        params = Params([], sends, [[e.params for e in b.chain] for b in buses], [e.params for e in self.master])
        return layout, params


def significant(value: Any, digits: int) -> Any:
    """``value`` (a float, or lists and dicts of them) rounded to ``digits`` significant digits; other values
    (ints, strings, infinities) unchanged."""
    if isinstance(value, float) and math.isfinite(value) and value != 0.0:
        return round(value, digits - 1 - math.floor(math.log10(abs(value))))
    if isinstance(value, list):
        return [significant(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: significant(v, digits) for k, v in value.items()}
    return value
