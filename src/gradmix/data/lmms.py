"""Real multitracks rendered offline from LMMS projects: a dry and a wet stem per track, plus the author's mix.

Debian's ``lmms-common`` ships demo songs by musicians under free licences. For each project,
``lmms render`` (headless, ``QT_QPA_PLATFORM=offscreen``) renders the full mix from the project as it is,
and each stem from an edited copy that contains only that track (every other track removed, including
those inside Beat+Bassline containers, whose pattern triggers are kept). Muted tracks, which the author's
mix does not play, are skipped. LMMS's own ``rendertracks`` is not used (it re-renders the song per track
and returns NaN stems).

- The **dry** stem (``NN-name.wav``) has its mixing neutralised: volume 100 %, pan centre, routed straight
  to the master, its effect chain and every mixer channel's effect chain switched off.
- The **wet** stem (``wet/NN-name.wav``) keeps the author's volume, panning, instrument, track effects and
  the mixer channels the track is routed through (with their sends). Only the master channel is neutral
  (volume 1, chain off): the wet stems are what the author's master bus receives, as a console's strips
  and buses are what its master chain receives. Where a mixer channel on a track's route is shared with
  other playing tracks and runs a nonlinear effect (a compressor, a waveshaper, ...), the track's own part
  of the author's mix cannot be separated: its wet stem is the track alone through that channel, and the
  song's metadata names the channel under ``stems[...]["wet"]["shared_nonlinear"]``.

Renders are the same in every run. lmms seeds its random numbers from the clock (some instruments draw
noise from them: DrumSynth, Organic, sfxr, the noise oscillators), and its mixer threads draw in an order that
varies, and some instruments read memory they never wrote. So every lmms process preloads
``lmms_fixed_seed.c`` (compiled by :func:`fixed_seed_library`: every seed 1, one mixer thread) and gets its
memory zeroed (:func:`render`). Without a C compiler the renders differ from run to run (one note says so). Even so,
a stem draws its noise alone, not interleaved with the other tracks as in the mix, so the stems never sum
exactly to the mix; the residuals (dry sum and wet sum against the mix) are stored in each song's metadata.
"""

from __future__ import annotations

import atexit
import copy
import fnmatch
import functools
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np

from gradmix.audio import make_output_folder, read_audio, safe_file_name, write_audio
from gradmix.data.songs import select_shard, song_written_whole
from gradmix.errors import GradmixError
from gradmix.progress import progress as show_progress

PROJECTS_DIR = Path("/usr/share/lmms/projects")
COPYRIGHT_FILE = Path("/usr/share/doc/lmms-common/copyright")
DONE = ".lmms-done"
INSTRUMENT, BEAT_BASSLINE, SAMPLE = "0", "1", "2"


class LmmsError(GradmixError):
    """LMMS is missing, a project cannot be read, or a render failed."""


@dataclass(frozen=True)
class TrackRef:
    """A track to render as a stem: its name, kind and position (``inside_bb`` for Beat+Bassline tracks)."""

    index: int
    name: str
    kind: str
    inside_bb: bool
    instrument: str | None


def read_project(path: str | Path) -> ET.Element:
    """Parse an ``.mmp`` (XML) or ``.mmpz`` (4-byte big-endian length + zlib XML) project."""
    path = Path(path)
    try:
        data = path.read_bytes()
        if path.suffix == ".mmpz":
            struct.unpack(">I", data[:4])  # the uncompressed length; zlib checks the data itself
            data = zlib.decompress(data[4:])
        return ET.fromstring(data)
    except (OSError, zlib.error, struct.error, ET.ParseError) as exc:
        raise LmmsError(f"{path}: not a readable LMMS project ({exc})") from None


def _song_tracks(root: ET.Element) -> ET.Element:
    container = root.find("song/trackcontainer")
    if container is None:
        raise LmmsError("project has no song/trackcontainer")
    return container


def _bb_containers(root: ET.Element) -> list[ET.Element]:
    return [
        c
        for t in _song_tracks(root).findall("track")
        if t.get("type") == BEAT_BASSLINE
        for c in t.iter("trackcontainer")
    ]


def _candidates(root: ET.Element) -> list[tuple[ET.Element, bool]]:
    song = [(t, False) for t in _song_tracks(root).findall("track") if t.get("type") in (INSTRUMENT, SAMPLE)]
    bb = [(t, True) for c in _bb_containers(root) for t in c.findall("track") if t.get("type") in (INSTRUMENT, SAMPLE)]
    return song + bb


def stem_tracks(root: ET.Element) -> list[TrackRef]:
    """The tracks that play in the author's mix (not muted), song-level first, then Beat+Bassline ones."""
    refs = []
    for i, (t, inside) in enumerate(_candidates(root)):
        if t.get("muted") == "1":
            continue
        inst = t.find("instrumenttrack/instrument")
        refs.append(
            TrackRef(
                i, t.get("name", f"track{i}"), t.get("type"), inside, inst.get("name") if inst is not None else None
            )
        )
    return refs


def isolate(root: ET.Element, ref: TrackRef, *, wet: bool = False) -> ET.Element:
    """A copy of the project with only ``ref`` playing: its mixing neutral (dry), or the author's with a
    neutral master channel (``wet``); see the module docstring."""
    new = copy.deepcopy(root)
    keep = _candidates(new)[ref.index][0]
    song = _song_tracks(new)
    for t in list(song.findall("track")):
        if t is keep or t.get("type") not in (INSTRUMENT, SAMPLE, BEAT_BASSLINE):
            continue
        if t.get("type") == BEAT_BASSLINE and ref.inside_bb:
            continue  # its patterns trigger the Beat+Bassline tracks
        song.remove(t)
    for container in _bb_containers(new):
        for t in list(container.findall("track")):
            if t is not keep:
                container.remove(t)
    keep.set("muted", "0")
    keep.set("solo", "0")
    for channel in new.iter("fxchannel"):
        if wet and channel.get("num") != MASTER:
            continue
        channel.set("volume", "1")
        channel.set("muted", "0")
        for chain in channel.iter("fxchain"):
            chain.set("enabled", "0")
    if wet:
        return new
    for tag in ("instrumenttrack", "sampletrack"):
        for node in keep.iter(tag):
            node.set("vol", "100")
            node.set("pan", "0")
            node.set("fxch", MASTER)
    for chain in keep.iter("fxchain"):
        chain.set("enabled", "0")
    return new


MASTER = "0"
LMMS_LINEAR_EFFECTS = frozenset(
    {
        # LMMS's own effects
        "amplifier",
        "bassbooster",
        "delay",
        "dualfilter",
        "eq",
        "flanger",
        "multitapecho",
        "reverbsc",
        "spectrumanalyzer",
        "stereoenhancer",
        "stereomatrix",
        # LADSPA plugins (by label) found in the shipped projects
        "Reverb",
        "Plate2x2",
        "Eq",
        "Eq2x2",
        "tap_stereo_echo",
        "fbdelay_1s",
        "delay_1s",
        "canyon_delay",
        "Filter",
        "PhaserI",
        "PhaserII",
        "Phaser",
        "fourByFourPole",
        "autoPhaser",
        "MultiChorus",
        "ChorusI",
        "Flanger",
        "tap_chorusflanger",
        "comb",
        "dj_eq",
        "tap_equalizer",
        "VintageDelay",
        "ToneStack",
        "CabinetII",
        "dcRemove",
        "amp_stereo",
        "hpf",
        "lpf",
        "highpass_iir",
        "freeverb3",
        "tap_reverb",
        "amPitchshift",
        "Narrower",
        "StereoTools",
        "ringmod_1i1o1l",
        "SweepVFI",
        "SweepVFII",
    }
)
"""Effects whose output is linear in their input (filters, delays, reverbs, modulation, gain, stereo
matrices). Anything else (compressors, limiters, clippers, waveshapers, exciters, de-essers, a peak
controller, LADSPA plugins not listed) is taken as nonlinear."""


def effect_names(chain: ET.Element) -> list[str]:
    """Names of the effects of an enabled ``fxchain`` (a LADSPA effect by its plugin label); [] if disabled."""
    if chain is None or chain.get("enabled") != "1":
        return []
    names = []
    for e in chain.findall("effect"):
        key = {a.get("name"): a.get("value") for a in e.iter("attribute")}
        ladspa = e.get("name") == "ladspaeffect" and key.get("plugin")
        names.append(ladspa or e.get("name", "?"))
    return names


def _mixing_node(track: ET.Element) -> ET.Element | None:
    """The element holding a track's volume, pan and mixer channel (instrument or sample track)."""
    node = track.find("instrumenttrack")
    return node if node is not None else track.find("sampletrack")


def _mixer_channel(track: ET.Element) -> str:
    node = _mixing_node(track)
    return (node.get("fxch") if node is not None else None) or MASTER


def _routes(root: ET.Element) -> dict[str, list[str]]:
    """Each mixer channel's sends (channel numbers); a channel without ``send`` elements feeds the master."""
    routes = {}
    for channel in root.iter("fxchannel"):
        sends = [s.get("channel", MASTER) for s in channel.findall("send")]
        routes[channel.get("num", MASTER)] = sends if sends or channel.get("num") == MASTER else [MASTER]
    return routes


def route(root: ET.Element, ref: TrackRef) -> list[str]:
    """The mixer channels (numbers, the master left out) that ``ref``'s sound passes through."""
    routes, seen, todo = _routes(root), [], [_mixer_channel(_candidates(root)[ref.index][0])]
    while todo:
        ch = todo.pop()
        if ch == MASTER or ch in seen:
            continue
        seen.append(ch)
        todo += routes.get(ch, [MASTER])
    return seen


def shared_nonlinear(root: ET.Element, refs: list[TrackRef]) -> dict[int, list[str]]:
    """For each track (by ``ref.index``), the mixer channels on its route that other playing tracks share and
    whose chain has a nonlinear effect (names as ``"<num> <name>: effect, ..."``)."""
    channels = {c.get("num", MASTER): c for c in root.iter("fxchannel")}
    paths = {r.index: route(root, r) for r in refs}
    users: dict[str, int] = {}
    for path in paths.values():
        for ch in path:
            users[ch] = users.get(ch, 0) + 1
    out = {}
    for index, path in paths.items():
        found = []
        for ch in path:
            names = effect_names(channels[ch].find("fxchain")) if ch in channels else []
            nonlinear = [n for n in names if n not in LMMS_LINEAR_EFFECTS]
            if users[ch] > 1 and nonlinear:
                found.append(f"{ch} {channels[ch].get('name', '')}: {', '.join(nonlinear)}")
        if found:
            out[index] = found
    return out


def silent_by_design(root: ET.Element, ref: TrackRef) -> str | None:
    """Why the author's mix cannot hear ``ref`` although it plays (volume 0, a peak controller in its chain
    that mutes its output, or every route through a muted or zero-volume channel), or ``None``."""
    track = _candidates(root)[ref.index][0]
    node = _mixing_node(track)
    if node is not None and float(node.get("vol", "100")) == 0:
        return "its volume is 0 %"
    for chain in track.iter("fxchain"):
        for effect in chain.findall("effect") if chain.get("enabled") == "1" else []:
            controls = effect.find("peakcontrollereffectcontrols")
            if effect.get("on", "1") == "1" and controls is not None and controls.get("mute") == "1":
                return "it only drives a peak controller (a sidechain source, muted in the mix)"
    channels, routes = {c.get("num", MASTER): c for c in root.iter("fxchannel")}, _routes(root)

    def audible(ch: str, seen: frozenset) -> bool:
        c = channels.get(ch)
        if c is not None and (c.get("muted") == "1" or float(c.get("volume") or 1) == 0):
            return False
        if ch == MASTER:
            return True
        return any(audible(nxt, seen | {ch}) for nxt in routes.get(ch, [MASTER]) if nxt not in seen)

    return None if audible(_mixer_channel(track), frozenset()) else "its mixer channel is muted or at volume 0"


def _lmms() -> str:
    exe = shutil.which("lmms")
    if exe is None:
        raise LmmsError("lmms is not installed (apt-get install lmms lmms-common)")
    return exe


@functools.cache
def fixed_seed_library() -> Path | None:
    """``lmms_fixed_seed.c`` compiled for this process (removed at exit), for lmms to preload so that a render
    is the same in every run; ``None`` (with one note on stderr) where no C compiler builds it."""
    cc = shutil.which("cc") or shutil.which("gcc")
    source = Path(__file__).with_name("lmms_fixed_seed.c")
    if cc is not None:
        folder = Path(tempfile.mkdtemp(prefix="gradmix-lmms-"))
        atexit.register(shutil.rmtree, folder, True)
        library = folder / "lmms_fixed_seed.so"
        proc = subprocess.run(
            [cc, "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"], capture_output=True, text=True
        )
        if proc.returncode == 0 and library.is_file():
            return library
    print("note: no C compiler built lmms_fixed_seed.c; LMMS renders will differ from run to run", file=sys.stderr)
    return None


def render(project: str | Path, out_wav: str | Path, timeout_s: float = 600.0, attempts: int = 2) -> None:
    """Render a project file headless to a 32-bit float WAV, the same in every run.

    lmms runs with :func:`fixed_seed_library` preloaded and with glibc's ``MALLOC_PERTURB_=255``, which hands
    out every allocation zeroed: some instruments read memory they never wrote (with the seeds fixed alone, nine
    renders of a song gave at least six different files, 16 samples apart or with bursts to +61 dBFS).
    A failed render is tried again (``attempts`` in all): headless lmms now and then exits non-zero part of the
    way through a project it renders fine the next time (seen once in a full test run, at 64 %). After the
    last failure no partial file is left at ``out_wav``.
    """
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "MALLOC_PERTURB_": "255"}
    library = fixed_seed_library()
    if library is not None:
        env["LD_PRELOAD"] = " ".join(filter(None, [str(library), env.get("LD_PRELOAD")]))
    cmd = [_lmms(), "--allowroot", "render", str(project), "-f", "wav", "-a", "-o", str(out_wav)]
    for _ in range(attempts):
        Path(out_wav).unlink(missing_ok=True)
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise LmmsError(f"{project}: lmms render took longer than {timeout_s:g} s") from None
        if proc.returncode == 0 and Path(out_wav).is_file():
            return
    Path(out_wav).unlink(missing_ok=True)  # no half-written render left behind
    raise LmmsError(f"{project}: lmms render failed {attempts} times ({(proc.stderr or proc.stdout).strip()[-200:]})")


def licence_of(project: Path, copyright_file: Path = COPYRIGHT_FILE) -> dict[str, Any]:
    """Licence and copyright holders of a project (or any file) shipped by Debian's lmms-common (last matching
    stanza)."""
    if not copyright_file.is_file():
        return {"licence": None, "copyright": []}
    try:
        rel = "data/" + str(project.resolve().relative_to(PROJECTS_DIR.parent))
    except ValueError:
        return {"licence": None, "copyright": []}
    found: dict[str, Any] = {"licence": None, "copyright": []}
    for stanza in copyright_file.read_text(errors="replace").split("\n\n"):
        fields: dict[str, list[str]] = {}
        key = None
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = [value.strip()] if value.strip() else []
            elif key and line.strip() and line.strip() != ".":
                fields[key].append(line.strip())
        patterns = fields.get("Files", [])
        if any(fnmatch.fnmatch(rel, p) for p in patterns) and "License" in fields:
            specific = patterns != ["*"]  # the catch-all stanza names LMMS's authors, not the song's
            found = {
                "licence": fields["License"][0] if fields["License"] else None,
                "copyright": fields.get("Copyright", []) if specific else [],
            }
    return found


def shipped_projects(projects_dir: Path = PROJECTS_DIR) -> list[Path]:
    """Demo and short projects of lmms-common (templates and tutorials left out)."""
    return sorted(p for sub in ("demos", "shorties") for p in (projects_dir / sub).rglob("*.mmp*"))


def _safe(name: str) -> str:
    return safe_file_name(name).strip("_") or "track"


def _level_db(x: np.ndarray, ref: np.ndarray) -> float:
    """RMS of ``x`` relative to the RMS of ``ref``, in dB."""
    return float(20 * np.log10(np.sqrt(np.mean(x**2)) / max(np.sqrt(np.mean(ref**2)), 1e-12) + 1e-12))


def _add(total: np.ndarray, audio: np.ndarray) -> None:
    n = min(total.shape[-1], audio.shape[-1])
    total[:, :n] += audio[:, :n] if audio.shape[0] == total.shape[0] else audio[:1, :n]


def _render_stem(root: ET.Element, ref: TrackRef, tmp: Path, name: str, *, wet: bool) -> np.ndarray:
    """Render one stem of ``ref`` in ``tmp`` and read it; the work files are removed whatever happens.

    A dry stem is read and checked as any audio file (:class:`GradmixError` when unreadable or non-finite);
    a wet one is read as it is, so that the caller tells a render that failed (:class:`LmmsError`) from one
    that produced NaN/Inf samples."""
    import soundfile as sf

    edited, wav = tmp / f"{name}.mmp", tmp / f"{name}.wav"
    edited.write_bytes(ET.tostring(isolate(root, ref, wet=wet)))
    try:
        render(edited, wav)
        if not wet:
            return read_audio(wav)[0]
        try:
            return sf.read(str(wav), dtype="float32", always_2d=True)[0].T
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise LmmsError(f"{wav.name}: not readable ({exc})") from None
    finally:
        edited.unlink(missing_ok=True)
        wav.unlink(missing_ok=True)


def render_song(project: str | Path, out_dir: str | Path) -> Path:
    """Render one project into ``out_dir/<song>/``: numbered dry stems, their wet stems in ``wet/``,
    ``mix.wav`` and ``metadata.json``.

    A track whose dry stem cannot be rendered, or is silent, is skipped (``metadata["skipped"]``). A track
    whose wet stem cannot be rendered, or that the author's mix cannot hear (:func:`silent_by_design`), keeps
    its dry stem without a wet one (``metadata["wet_skipped"]``). A wet stem with NaN/Inf, or silent where its
    dry stem is not, fails the song (:class:`LmmsError`), and nothing of it is written.
    """
    project = Path(project)
    root = read_project(project)
    refs = stem_tracks(root)
    shared = shared_nonlinear(root, refs)
    name = _safe(project.name.split(".mmp")[0])
    out = Path(out_dir) / name
    with song_written_whole(Path(out_dir), name, DONE) as tmp:
        render(project, tmp / "mix.wav")
        mix, rate = read_audio(tmp / "mix.wav")
        (tmp / "wet").mkdir()
        stems, skipped, wet_skipped = {}, {}, {}
        dry_total, wet_total = np.zeros_like(mix), np.zeros_like(mix)
        for k, ref in enumerate(refs):
            try:
                audio = _render_stem(root, ref, tmp, f"stem{k}", wet=False)
            except GradmixError as exc:
                skipped[ref.name] = str(exc).split(": ", 1)[-1]
                continue
            if float(np.abs(audio).max()) < 1e-6:
                skipped[ref.name] = "silent"
                continue
            file = f"{k + 1:02d}-{_safe(ref.name)}.wav"
            write_audio(tmp / file, audio, rate)
            info: dict[str, Any] = {"track": ref.name, "instrument": ref.instrument, "beat_bassline": ref.inside_bb}
            stems[file[:-4]] = info
            _add(dry_total, audio)
            why = silent_by_design(root, ref)
            if why is None:
                try:
                    wet = _render_stem(root, ref, tmp, f"wet{k}", wet=True)
                except LmmsError as exc:
                    why = f"not rendered wet ({str(exc).split(': ', 1)[-1]})"
            if why is not None:
                wet_skipped[ref.name] = why
                continue
            if not np.isfinite(wet).all():
                raise LmmsError(f"{project}: the wet stem of track {ref.name!r} has NaN or Inf samples")
            if float(np.abs(wet).max()) < 1e-6:
                raise LmmsError(f"{project}: the wet stem of track {ref.name!r} is silent, its dry stem is not")
            write_audio(tmp / "wet" / file, wet, rate)
            _add(wet_total, wet)
            info["wet"] = {
                "level_vs_dry_db": _level_db(wet[:, : audio.shape[-1]], audio[:, : wet.shape[-1]]),
                "route": route(root, ref),
                "shared_nonlinear": shared.get(ref.index, []),
            }
        if not stems:
            raise LmmsError(f"{project}: no track rendered to a non-silent stem")
        scale = float((wet_total * mix).sum() / max(float((wet_total**2).sum()), 1e-20))
        master = next((c for c in root.iter("fxchannel") if c.get("num") == MASTER), None)
        meta = {
            "title": project.name.split(".mmp")[0],
            "author": project.name.split("-")[0],
            "source": str(project),
            **licence_of(project),
            "sample_rate": rate,
            "stems": stems,
            "skipped": skipped,
            "wet_skipped": wet_skipped,
            "stems_vs_mix_residual_db": _level_db(dry_total - mix, mix),
            "wet_vs_mix_residual_db": _level_db(wet_total - mix, mix),
            "wet_vs_mix_residual_scaled_db": _level_db(scale * wet_total - mix, mix),
            "master": {
                "volume": float((master.get("volume") if master is not None else None) or 1),
                "effects": effect_names(master.find("fxchain")) if master is not None else [],
            },
            "same_every_run": fixed_seed_library() is not None,
            "note": "stems are dry (volume, pan, effects neutral); wet/ holds each track as the author mixed it, "
            "before the master channel; mix.wav is the author's own mix",
        }
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=1))
    return out


def build_dataset(
    out_dir: str | Path,
    projects: list[Path] | None = None,
    *,
    progress: bool = False,
    workers: int | None = None,
    shard: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Render projects (default: every shipped demo) into a folder-of-stems dataset; resumable.

    ``workers`` songs render at once (default: every core; each is a chain of lmms processes);
    ``shard=(i, n)`` renders projects ``i, i + n, ...`` only, for one job of a cluster run.
    """
    from concurrent.futures import ThreadPoolExecutor

    out_dir = Path(out_dir)
    for p in projects or []:
        if not Path(p).is_file():
            raise LmmsError(f"{p}: no such LMMS project")
    _lmms()
    fixed_seed_library()  # compiled (or its note given) once, before the songs render in parallel
    projects = projects if projects is not None else shipped_projects()
    if not projects:
        raise LmmsError("no LMMS projects found (install lmms-common, or name projects)")
    make_output_folder(out_dir)
    projects = select_shard(projects, shard)
    todo = [p for p in projects if not is_done(out_dir / _safe(Path(p).name.split(".mmp")[0]))]
    failed: dict[str, str] = {}

    def one(p: Path) -> str | None:
        try:
            return render_song(p, out_dir).name
        except LmmsError as exc:
            failed[str(p)] = str(exc)
            return None

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        done = [
            r for r in show_progress(pool.map(one, todo), "rendering LMMS projects", progress, total=len(todo)) if r
        ]
    wet_skipped = {name: json.loads((out_dir / name / "metadata.json").read_text())["wet_skipped"] for name in done}
    return {
        "done": done,
        "skipped": len(projects) - len(todo),
        "failed": failed,
        "wet_skipped": {k: v for k, v in wet_skipped.items() if v},
    }


def is_done(song_dir: Path) -> bool:
    """A song rendered completely by this version (a folder from before wet stems existed is redone)."""
    return (song_dir / DONE).is_file() and (song_dir / "wet").is_dir()
