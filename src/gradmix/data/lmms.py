"""Real multitracks rendered offline from LMMS projects: one dry stem per track plus the author's mix.

Debian's ``lmms-common`` ships demo songs by musicians under free licences. For each project,
``lmms render`` (headless, ``QT_QPA_PLATFORM=offscreen``) renders the full mix from the project as it is,
and each stem from an edited copy that contains only that track (every other track removed, including
those inside Beat+Bassline containers, whose pattern triggers are kept) with its mixing neutralised:
volume 100 %, pan centre, routed straight to the master, its effect chain and every mixer channel's
effect chain switched off. Muted tracks, which the author's mix does not play, are skipped. LMMS's own
``rendertracks`` is not used (it re-renders the song per track and returns NaN stems).

LMMS draws noise at load time in some instruments, so stems rendered in separate processes never sum
exactly to the mix; the residual is measured and stored in each song's metadata.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np

from gradmix.audio import make_output_folder, read_audio, write_audio
from gradmix.data.songs import select_shard
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
    return [c for t in _song_tracks(root).findall("track") if t.get("type") == BEAT_BASSLINE
            for c in t.iter("trackcontainer")]


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
        refs.append(TrackRef(i, t.get("name", f"track{i}"), t.get("type"), inside,
                             inst.get("name") if inst is not None else None))
    return refs


def isolate(root: ET.Element, ref: TrackRef) -> ET.Element:
    """A copy of the project with only ``ref`` playing, its mixing neutral (see the module docstring)."""
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
    for tag in ("instrumenttrack", "sampletrack"):
        for node in keep.iter(tag):
            node.set("vol", "100")
            node.set("pan", "0")
            node.set("fxch", "0")
    for chain in keep.iter("fxchain"):
        chain.set("enabled", "0")
    for channel in new.iter("fxchannel"):
        channel.set("volume", "1")
        channel.set("muted", "0")
        for chain in channel.iter("fxchain"):
            chain.set("enabled", "0")
    return new


def _lmms() -> str:
    exe = shutil.which("lmms")
    if exe is None:
        raise LmmsError("lmms is not installed (apt-get install lmms lmms-common)")
    return exe


def render(project: str | Path, out_wav: str | Path, timeout_s: float = 600.0, attempts: int = 2) -> None:
    """Render a project file headless to a 32-bit float WAV.

    A failed render is tried again (``attempts`` in all): headless lmms now and then exits non-zero part of the
    way through a project it renders fine the next time (seen once in a full test run, at 64 %). After the
    last failure no partial file is left at ``out_wav``.
    """
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
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
    raise LmmsError(f"{project}: lmms render failed {attempts} times "
                    f"({(proc.stderr or proc.stdout).strip()[-200:]})")


def licence_of(project: Path, copyright_file: Path = COPYRIGHT_FILE) -> dict[str, Any]:
    """Licence and copyright holders of a project shipped by Debian's lmms-common (last matching stanza)."""
    if not copyright_file.is_file():
        return {"licence": None, "copyright": []}
    try:
        rel = "data/projects/" + str(project.resolve().relative_to(PROJECTS_DIR))
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
            found = {"licence": fields["License"][0] if fields["License"] else None,
                     "copyright": fields.get("Copyright", []) if specific else []}
    return found


def shipped_projects(projects_dir: Path = PROJECTS_DIR) -> list[Path]:
    """Demo and short projects of lmms-common (templates and tutorials left out)."""
    return sorted(p for sub in ("demos", "shorties") for p in (projects_dir / sub).rglob("*.mmp*"))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_") or "track"


def render_song(project: str | Path, out_dir: str | Path) -> Path:
    """Render one project into ``out_dir/<song>/``: numbered dry stems, ``mix.wav``, ``metadata.json``."""
    project = Path(project)
    root = read_project(project)
    refs = stem_tracks(root)
    name = _safe(project.name.split(".mmp")[0])
    out = Path(out_dir) / name
    for stale in Path(out_dir).glob(f".{name}.*"):  # left by a run that was killed mid-song
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{name}."))
    try:
        render(project, tmp / "mix.wav")
        mix, rate = read_audio(tmp / "mix.wav")
        stems, skipped, total = {}, {}, np.zeros_like(mix)
        for k, ref in enumerate(refs):
            edited = tmp / f"stem{k}.mmp"
            edited.write_bytes(ET.tostring(isolate(root, ref)))
            wav = tmp / f"stem{k}.wav"
            render(edited, wav)
            try:
                audio, _ = read_audio(wav)
            except GradmixError as exc:
                skipped[ref.name] = str(exc).split(": ", 1)[-1]
                continue
            finally:  # the work files never reach the song folder, whatever happens to the stem
                edited.unlink()
                wav.unlink(missing_ok=True)
            if float(np.abs(audio).max()) < 1e-6:
                skipped[ref.name] = "silent"
                continue
            file = f"{k + 1:02d}-{_safe(ref.name)}.wav"
            write_audio(tmp / file, audio, rate)
            stems[file[:-4]] = {"track": ref.name, "instrument": ref.instrument, "beat_bassline": ref.inside_bb}
            n = min(total.shape[-1], audio.shape[-1])
            total[:, :n] += audio[:, :n] if audio.shape[0] == total.shape[0] else audio[:1, :n]
        if not stems:
            raise LmmsError(f"{project}: no track rendered to a non-silent stem")
        residual = 20 * np.log10(np.sqrt(np.mean((total - mix) ** 2)) / max(np.sqrt(np.mean(mix ** 2)), 1e-12) + 1e-12)
        meta = {"title": project.name.split(".mmp")[0], "author": project.name.split("-")[0], "source": str(project),
                **licence_of(project), "sample_rate": rate, "stems": stems, "skipped": skipped,
                "stems_vs_mix_residual_db": float(residual),
                "note": "stems are dry (volume, pan, effects neutral); mix.wav is the author's own mix"}
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=1))
        (tmp / DONE).write_text("ok\n")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def build_dataset(out_dir: str | Path, projects: list[Path] | None = None, *, progress: bool = False,
                  workers: int | None = None, shard: tuple[int, int] | None = None) -> dict[str, Any]:
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
    projects = projects if projects is not None else shipped_projects()
    if not projects:
        raise LmmsError("no LMMS projects found (install lmms-common, or name projects)")
    make_output_folder(out_dir)
    projects = select_shard(projects, shard)
    todo = [p for p in projects if not (out_dir / _safe(Path(p).name.split(".mmp")[0]) / DONE).is_file()]
    failed: dict[str, str] = {}

    def one(p: Path) -> str | None:
        try:
            return render_song(p, out_dir).name
        except LmmsError as exc:
            failed[str(p)] = str(exc)
            return None

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        done = [r for r in show_progress(pool.map(one, todo), "rendering LMMS projects", progress, total=len(todo))
                if r]
    return {"done": done, "skipped": len(projects) - len(todo), "failed": failed}
