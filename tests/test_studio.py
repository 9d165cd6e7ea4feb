"""``gradmix studio``: the session (region renders equal the console's, caching, edits, undo, monitor, save),
the server's safety rules, the CLI, and the page in a real browser (Debian's chromium driven by Playwright)."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from gradmix.console import ConsoleSetting
from gradmix.errors import ConsoleFileError, GradmixError
from gradmix.studio.session import EDITED, SUM, Session
from conftest import error_db, require, require_tool

SR = 44100


def make_song(folder: Path, names=("kick", "bass", "keys", "pad"), seconds=6.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(0)
    for k, name in enumerate(names):
        x = 0.3 * np.sin(2 * np.pi * (60 + 150 * k) * t) * (1 + np.sin(2 * np.pi * (1 + k) * t)) / 2
        x = x + 0.02 * rng.standard_normal(t.size)
        data = np.stack([x, 0.6 * x], 1) if k % 2 else x[:, None]
        sf.write(folder / f"{name}.wav", data.astype(np.float32), SR)
    return folder


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    return make_song(tmp_path_factory.mktemp("song") / "stems")


@pytest.fixture
def session(song, tmp_path) -> Session:
    return Session(song, tmp_path / "out")


def full_render(session: Session, version: str) -> torch.Tensor:
    with torch.no_grad():
        mix, _ = session.versions[version].render(list(session.audio), keep_strips=False)
    start, end = session.region
    return mix[:, start:end]


# ---- the session -----------------------------------------------------------------------------------


def test_region_render_is_the_console_render_of_that_region(session):
    session.set_region(2.0, 5.0)
    for version in (SUM, EDITED):
        region = session.render_region(version).mix
        assert region.shape == (2, 3 * SR)
        # compressors, delays and reverb tails from before the region are settled by the pre-roll
        assert error_db(region.numpy(), full_render(session, version).numpy()) < (-100 if version == SUM else -40)
    assert (
        error_db(
            session.render_region(SUM).mix.numpy(),
            sum(
                a[:, 2 * SR : 5 * SR].expand(2, -1) * (np.sqrt(0.5) if a.shape[0] == 1 else 1.0) for a in session.audio
            ).numpy(),
        )
        < -100
    )  # the plain sum: mono tracks centred with the -3 dB pan law


def test_one_fader_move_re_renders_one_strip(session, monkeypatch):
    session.render_region(EDITED)
    rendered = []
    original = ConsoleSetting.render

    def counting(self, tracks, **kw):
        rendered.append(len(tracks))
        return original(self, tracks, **kw)

    monkeypatch.setattr(ConsoleSetting, "render", counting)
    before = session.render_region(EDITED).mix.clone()
    session.edit([{"path": ["tracks", 1, "chain", 0, "gain_db"], "value": -40.0}])
    after = session.render_region(EDITED).mix
    assert rendered == [1]
    assert not torch.allclose(before, after)
    rendered.clear()
    session.edit([{"path": ["tracks", 2, "sends", "reverb"], "value": -6.0}])  # a send: no strip re-render
    session.render_region(EDITED)
    assert rendered == []
    assert error_db(session.render_region(EDITED).mix.numpy(), full_render(session, EDITED).numpy()) < -40


def test_edits_are_validated_all_or_nothing_and_undoable(session):
    first = session.edited.to_json()
    with pytest.raises(ConsoleFileError, match=r"tracks\[0\]\.chain\[1\]\.bands\[2\]\.q: 0 is not > 0"):
        session.edit(
            [
                {"path": ["tracks", 0, "chain", 0, "gain_db"], "value": -1.0},
                {"path": ["tracks", 0, "chain", 1, "bands", 2, "q"], "value": 0},
            ]
        )
    assert session.edited.to_json() == first
    with pytest.raises(ConsoleFileError, match="does not exist"):
        session.edit([{"path": ["tracks", 9, "chain", 0, "gain_db"], "value": -1.0}])
    with pytest.raises(ConsoleFileError, match="cannot be set"):
        session.edit([{"path": ["tracks", 0, "chain", 0, "type"], "value": "eq"}])
    session.edit([{"path": ["tracks", 0, "chain", 0, "gain_db"], "value": -7.5}])
    session.edit([{"path": ["tracks", 0, "sends", "delay"], "value": -20.0}])  # whether the mix sent it or not
    session.edit([{"path": ["tracks", 0, "sends", "delay"], "value": None}])
    assert session.edited.tracks[0].chain[0].params["gain_db"] == -7.5
    assert "delay" not in session.edited.tracks[0].sends
    assert session.undo() and session.edited.tracks[0].sends["delay"] == -20.0
    assert session.undo() and session.undo() and session.edited.to_json() == first
    assert not session.undo()
    assert session.redo() and session.edited.tracks[0].chain[0].params["gain_db"] == -7.5
    session.adopt(SUM)
    assert session.edited.to_json()["tracks"] == session.versions[SUM].to_json()["tracks"]
    assert not session.redo_stack


def test_mute_and_solo_change_what_plays_not_the_console(session):
    session.set_region(0.0, 4.0)
    everything = session.render_region(SUM).mix.clone()
    session.monitor(muted=[1], soloed=[])
    muted = session.render_region(SUM).mix
    track1 = session.audio[1][:, : 4 * SR]
    assert (
        error_db(
            (everything - muted).numpy(), track1.expand(2, -1).numpy() * (1.0 if track1.shape[0] == 2 else np.sqrt(0.5))
        )
        < -100
    )
    session.monitor(muted=[], soloed=[3])
    solo = session.render_region(SUM).mix
    track3 = session.audio[3][:, : 4 * SR]
    assert error_db(solo.numpy(), track3.expand(2, -1).numpy() * (1.0 if track3.shape[0] == 2 else np.sqrt(0.5))) < -100
    assert session.edited.to_json() == session.versions[next(iter(session.versions))].to_json()
    with pytest.raises(GradmixError, match="no track 7"):
        session.monitor(muted=[7], soloed=[])


def test_sample_and_match_add_versions(session, tmp_path):
    name = session.sample()
    assert name == "sample 1" and list(session.versions)[-1] == EDITED
    assert session.sample() == "sample 2"
    assert session.versions["sample 1"].to_json() != session.versions["sample 2"].to_json()
    ref = tmp_path / "ref.wav"
    sf.write(ref, np.random.default_rng(1).standard_normal((SR * 3, 2)).astype(np.float32) * 0.1, 48000)
    assert session.match(ref) == "match"
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    with pytest.raises(GradmixError, match="notes.wav"):
        session.match(bad)


def test_save_writes_console_mix_stems_and_daw_sessions_and_never_the_stems(session, song, tmp_path):
    before = digest(song)
    session.edit([{"path": ["tracks", 0, "chain", 0, "gain_db"], "value": -3.0}])
    written = session.save("take one")
    names = sorted(p.name for p in written)
    assert "take_one.console.json" in names and "take_one.wav" in names
    assert "take_one.dawproject" in names and "take_one.RPP" in names
    assert len([p for p in written if p.parent.name == "take_one_stems"]) == 4
    assert digest(song) == before
    from gradmix.render import render_folder

    console = tmp_path / "out" / "take_one.console.json"
    render_folder(None, console, tmp_path / "again.wav")  # the console file records where its stems are
    saved = sf.read(tmp_path / "out" / "take_one.wav")[0]
    again = sf.read(tmp_path / "again.wav")[0]
    assert error_db(again, saved) < -100
    assert json.loads(console.read_text())["tracks"][0]["chain"][0]["gain_db"] == -3.0


def test_one_track_and_a_region_past_the_end(tmp_path):
    s = Session(make_song(tmp_path / "one", names=("solo",), seconds=3.0), tmp_path / "out")
    assert s.region == (0, 3 * SR)  # a song shorter than the default region loops whole
    s.set_region(2.5, 99.0)
    assert s.region == (int(2.5 * SR), 3 * SR)
    assert s.render_region(EDITED).mix.shape == (2, SR // 2)
    assert torch.isfinite(s.render_region(EDITED).mix).all()
    with pytest.raises(GradmixError, match="numbers"):
        s.set_region(float("nan"), 1.0)


def test_the_output_folder_must_lie_outside_the_stems(song):
    with pytest.raises(GradmixError, match="outside the stems folder"):
        Session(song, song / "mixes")


def test_opening_a_console_file(song, tmp_path):
    setting = ConsoleSetting.neutral(["b", "a"], ["bass.wav", "kick.wav"], sample_rate=SR)
    setting.tracks[0].chain[0].params["gain_db"] = -6.0
    path = setting.save(tmp_path / "two.console.json")
    s = Session(song, tmp_path / "out", console=path)
    assert s.names == ["b", "a"] and list(s.versions)[0] == "opened console"
    assert s.edited.tracks[0].chain[0].params["gain_db"] == -6.0


# ---- the server ------------------------------------------------------------------------------------


@pytest.fixture
def client(session):
    require("starlette")
    require("httpx2")
    from starlette.testclient import TestClient

    from gradmix.studio.server import create_app

    return TestClient(create_app(session, max_upload_bytes=1 << 20), base_url="http://127.0.0.1:8765")


def test_api_edit_audio_and_errors(client, session):
    state = client.get("/api/state").json()
    assert [t["name"] for t in state["tracks"]] == session.names and len(state["overview"]) > 100
    a = client.get("/api/audio", params={"version": EDITED})
    assert a.status_code == 200 and a.headers["content-type"] == "audio/wav"
    r = client.post("/api/edit", json={"changes": [{"path": ["tracks", 0, "chain", 0, "gain_db"], "value": -30.0}]})
    assert r.status_code == 200 and r.json()["state"]["console"]["tracks"][0]["chain"][0]["gain_db"] == -30.0
    b = client.get("/api/audio", params={"version": EDITED})
    assert a.content != b.content and float(a.headers["x-loudness-lufs"]) != float(b.headers["x-loudness-lufs"])
    bad = client.post("/api/edit", json={"changes": [{"path": ["tracks", 0, "chain", 2, "ratio"], "value": 0.5}]})
    assert bad.status_code == 400 and "tracks[0].chain[2].ratio" in bad.json()["error"]
    assert client.post("/api/edit", content=b"{nope").json() == {"error": "the request body is not JSON"}
    assert client.get("/api/audio", params={"version": "nope"}).status_code == 400
    meters = client.get("/api/meters", params={"version": EDITED}).json()
    assert len(meters["gain_reduction_db"]) == len(session.names) and meters["peak_dbfs"] < 6


def test_only_files_inside_the_stems_and_output_folders_are_served(client, song, tmp_path):
    secret = song.parent / "secret.txt"
    secret.write_text("no")
    assert client.get("/files/stems/kick.wav").status_code == 200
    for path in (
        "/files/stems/../secret.txt",
        "/files/stems/%2e%2e/secret.txt",
        "/files/stems/..%2fsecret.txt",
        f"/files/stems/{secret}",
        "/files/stems//etc/passwd",
        "/files/elsewhere/kick.wav",
        "/files/out/nothing.wav",
        "/static/../session.py",
    ):
        assert client.get(path).status_code == 404, path
    link = song / "link.wav"  # a link inside the stems folder that leads out of it
    link.symlink_to(secret)
    try:
        assert client.get("/files/stems/link.wav").status_code == 404
    finally:
        link.unlink()


def test_uploads_are_limited_and_decoded_safely(client, tmp_path):
    r = client.post("/api/match", content=b"MThd this is not audio" * 10, headers={"x-filename": "song.wav"})
    assert r.status_code == 400 and "reference" in r.json()["error"]
    assert client.post("/api/match", content=b"").status_code == 400
    big = client.post("/api/match", content=b"\0" * (2 << 20), headers={"x-filename": "big.wav"})
    assert big.status_code == 413 and "limit" in big.json()["error"]
    buf = tmp_path / "ref.flac"
    sf.write(buf, np.random.default_rng(2).standard_normal((SR, 2)).astype(np.float32) * 0.1, SR)
    ok = client.post("/api/match", content=buf.read_bytes(), headers={"x-filename": "ref.flac"})
    assert ok.status_code == 200 and "match" in ok.json()["state"]["versions"]


def test_foreign_host_names_and_missing_tokens_are_refused(session):
    require("starlette")
    from starlette.testclient import TestClient

    from gradmix.studio.server import create_app

    local = TestClient(create_app(session), base_url="http://evil.example:8765")
    assert local.get("/api/state").status_code == 400  # DNS rebinding: only loopback names
    shared = TestClient(create_app(session, token="s3cret", allowed_hosts=("*",)), base_url="http://10.0.0.5:8765")
    assert shared.get("/api/state").status_code == 403
    assert shared.get("/api/state", headers={"x-gradmix-token": "wrong"}).status_code == 403
    assert shared.get("/api/state", headers={"x-gradmix-token": "s3cret"}).status_code == 200
    assert shared.get("/?token=s3cret").status_code == 200


def test_studio_on_a_shared_host_prints_a_token_and_the_server_refuses_requests_without_it(
    song, tmp_path, monkeypatch, capsys
):
    """`gradmix studio --host 0.0.0.0` makes a token and prints it; the real server answers 403 without it and
    413 to an upload declared larger than the 200 MB cap, before reading it."""
    require("starlette")
    require("uvicorn")
    import http.client
    import re
    import threading

    from gradmix.cli.main import main
    from gradmix.studio import server

    assert server.MAX_UPLOAD_BYTES == 200 * 2**20
    answers = {}
    serve = server.Studio.serve_forever

    def serve_and_ask(self):
        thread = threading.Thread(target=serve, args=(self,), daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)

        def ask(method, path, headers=None):
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            c.request(method, path, headers=headers or {})
            status = c.getresponse().status
            c.close()
            return status

        answers["none"] = ask("GET", "/api/state")
        answers["wrong"] = ask("GET", "/api/state", {"x-gradmix-token": "wrong"})
        answers["token"] = ask("GET", f"/api/state?token={self.token}")
        answers["big"] = ask(
            "POST",
            "/api/match",
            {
                "x-gradmix-token": self.token,
                "x-filename": "big.wav",
                "content-length": str(server.MAX_UPLOAD_BYTES + 1),
            },
        )
        self.server.should_exit = True
        thread.join(10)

    monkeypatch.setattr(server.Studio, "serve_forever", serve_and_ask)
    assert main(["studio", str(song), "--host", "0.0.0.0", "--port", "0", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    token = re.search(r"\?token=([\w-]+)", out).group(1)
    assert len(token) >= 20 and f"open it with the token above ({token})" in out
    assert answers == {"none": 403, "wrong": 403, "token": 200, "big": 413}


def test_concurrent_edits_leave_a_whole_console(session, client):
    from concurrent.futures import ThreadPoolExecutor

    def move(k: int):
        return client.post(
            "/api/edit",
            json={
                "changes": [
                    {"path": ["tracks", 0, "chain", 0, "gain_db"], "value": float(-k)},
                    {"path": ["tracks", 1, "chain", 0, "gain_db"], "value": float(-k)},
                ]
            },
        ).status_code

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(move, range(12))) == {200}
    g = [t.chain[0].params["gain_db"] for t in session.edited.tracks[:2]]
    assert g[0] == g[1] and len(session.undo_stack) == 12


# ---- the command -----------------------------------------------------------------------------------


def test_cli_refuses_a_missing_folder_in_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "gradmix.cli.main", "studio", str(tmp_path / "nope"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nope" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "gradmix.cli.main", "studio", str(tmp_path), "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.strip() == "gradmix: error: --port: 99999 is not a port (0..65535)"


def test_cli_refuses_an_output_folder_that_is_a_file_in_one_line(song, tmp_path):
    blocker = tmp_path / "saves"
    blocker.write_text("not a folder")
    r = subprocess.run(
        [sys.executable, "-m", "gradmix.cli.main", "studio", str(song), "--port", "0", "--out", str(blocker)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr == f"gradmix: error: {blocker}: is a file; saves go into a folder\n"
    assert blocker.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["saves"]


def test_cli_serves_and_stops_cleanly_on_ctrl_c(song, tmp_path):
    require("uvicorn")
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "gradmix.cli.main", "studio", str(song), "--port", "0", "--out", str(tmp_path / "o")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        deadline = time.time() + 120
        while url is None and time.time() < deadline:
            line = proc.stdout.readline()
            if "http://" in line:
                url = line.split()[2]
        assert url is not None and url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/state", timeout=30) as r:
            assert len(json.loads(r.read())["tracks"]) == 4
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        proc.kill()


# ---- the page in a real browser --------------------------------------------------------------------


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser():
    sync = require("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        require_tool("chromium")
    with sync.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--autoplay-policy=no-user-gesture-required",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


def test_the_page_plays_switches_edits_and_saves(browser, session, song, tmp_path):
    from gradmix.studio.server import Studio

    with Studio(session, port=0) as studio:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(studio.url)
        page.wait_for_function("window.studio && window.studio.ready", timeout=60_000)
        assert page.locator("#mixer .strip").count() == len(session.names)
        assert page.locator("#versions button").count() == 3

        page.click("#play")
        page.wait_for_function("studio.playingVersion === 'edited'")
        playing = page.evaluate("studio.playingBuffer.getChannelData(0).slice(0, 44100).reduce((a, x) => a + x * x, 0)")

        # moving a fader changes the audio the server returns, and that is what plays
        before = session.render_region(EDITED).mix.clone()
        page.locator(".strip[data-track='0'] .fader-input").fill("-40")
        page.wait_for_function("studio.latencies.length > 0", timeout=30_000)
        assert session.edited.tracks[0].chain[0].params["gain_db"] == -40.0
        assert not torch.allclose(before, session.render_region(EDITED).mix)
        now = page.evaluate("studio.playingBuffer.getChannelData(0).slice(0, 44100).reduce((a, x) => a + x * x, 0)")
        assert abs(now - playing) > 1e-3 * playing

        # A/B: the plain sum plays at the same position
        page.click(f"#versions button[data-version='{SUM}']")
        page.wait_for_function(f"studio.playingVersion === '{SUM}'")
        sum_energy = page.evaluate("studio.playingBuffer.getChannelData(0).reduce((a, x) => a + x * x, 0)")
        expected = float(session.render_region(SUM).mix[0].double().square().sum())
        assert sum_energy == pytest.approx(expected, rel=1e-3)
        page.click("#versions button[data-version='edited']")
        page.wait_for_function("studio.playingVersion === 'edited'")

        # sample another, match a reference (an upload), and a non-audio upload gets one clear line
        page.click("#sample")
        page.wait_for_function("studio.playingVersion === 'sample 1'", timeout=60_000)
        ref = tmp_path / "reference.wav"
        sf.write(ref, np.random.default_rng(3).standard_normal((2 * SR, 2)).astype(np.float32) * 0.1, SR)
        page.set_input_files("#reference", str(ref))
        page.wait_for_function("studio.playingVersion === 'match'", timeout=60_000)
        junk = tmp_path / "junk.wav"
        junk.write_text("certainly not audio")
        page.set_input_files("#reference", str(junk))
        page.wait_for_function("document.getElementById('status').className === 'error'", timeout=60_000)
        assert "junk" not in page.evaluate("studio.state.versions").__repr__()
        assert page.locator("#versions button").count() == 5

        # save: a console that gradmix render reproduces
        page.fill("#save-name", "from_page")
        page.click("#save")
        page.wait_for_function("studio.saved !== undefined", timeout=120_000)
        page.screenshot(path=str(tmp_path / "studio.png"))
        assert not errors
    from gradmix.render import render_folder

    out = session.out_dir
    render_folder(song, out / "from_page.console.json", tmp_path / "again.wav")
    assert error_db(sf.read(tmp_path / "again.wav")[0], sf.read(out / "from_page.wav")[0]) < -100
    assert json.loads((out / "from_page.console.json").read_text())["tracks"][0]["chain"][0]["gain_db"] == -40.0
