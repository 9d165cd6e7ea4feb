// gradmix studio: the page. Plain JavaScript and the Web Audio API; everything it needs comes from the server.
// The server renders; the page plays the loop region of each version, switches between them at the same
// position, and sends every edit as a path into the console file.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const authHeaders = token ? { "X-Gradmix-Token": token } : {};
const $ = (id) => document.getElementById(id);

// Exposed for the browser tests and the benchmark.
const studio = {
  state: null, buffers: {}, meters: {}, current: "edited", playing: false, playingVersion: null,
  playingBuffer: null, latencies: [],
};
window.studio = studio;

const ctx = new AudioContext();
let source = null, sourceGain = null, startedAt = 0, offset = 0;
const loadCounter = {};

// ---------------------------------------------------------------- server ----

async function api(path, body) {
  const init = body === undefined ? { headers: authHeaders }
    : { method: "POST", headers: { ...authHeaders, "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(path, init);
  return readJson(response);
}

async function readJson(response) {
  let data = null;
  try { data = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) throw new Error((data && data.error) || `${response.status} ${response.statusText}`);
  return data;
}

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function run(label, work) {
  if (label) say(label + "…");
  try {
    const out = await work();
    if (label) say(label + ": done");
    return out;
  } catch (e) {
    say(e.message, true);
  }
}

// ---------------------------------------------------------------- audio ----

async function loadAudio(version) {
  const ticket = (loadCounter[version] = (loadCounter[version] || 0) + 1);
  const response = await fetch(`api/audio?version=${encodeURIComponent(version)}`, { headers: authHeaders });
  if (!response.ok) await readJson(response);
  const lufs = parseFloat(response.headers.get("X-Loudness-LUFS"));
  const buffer = await ctx.decodeAudioData(await response.arrayBuffer());
  if (ticket !== loadCounter[version]) return false;  // a newer render is on its way
  studio.buffers[version] = { buffer, lufs };
  if (studio.playing && version === studio.current) startVersion(version);
  else applyLevels();
  api(`api/meters?version=${encodeURIComponent(version)}`).then((m) => { studio.meters[version] = m; }, () => {});
  return true;
}

function regionSeconds() { return studio.state.region[1] - studio.state.region[0]; }

function position() {
  const d = regionSeconds();
  return studio.playing ? (offset + ctx.currentTime - startedAt) % d : offset % d;
}

function levelFor(version) {
  const b = studio.buffers[version];
  if (!b || !$("matched").checked) return 1;
  const loud = Object.values(studio.buffers).map((x) => x.lufs).filter((x) => x > -69);
  if (!loud.length || !(b.lufs > -69)) return 1;
  return Math.pow(10, (Math.min(...loud) - b.lufs) / 20);
}

function applyLevels() {
  if (sourceGain) sourceGain.gain.setTargetAtTime(levelFor(studio.playingVersion), ctx.currentTime, 0.01);
}

function startVersion(version) {
  const b = studio.buffers[version];
  if (!b) return;
  const pos = position();
  const gain = ctx.createGain();
  gain.gain.value = 0;
  gain.connect(ctx.destination);
  const node = ctx.createBufferSource();
  node.buffer = b.buffer;
  node.loop = true;
  node.connect(gain);
  node.start(ctx.currentTime, pos % b.buffer.duration);
  gain.gain.setTargetAtTime(levelFor(version), ctx.currentTime, 0.005);
  if (source) {  // a short crossfade, no click
    sourceGain.gain.setTargetAtTime(0, ctx.currentTime, 0.005);
    source.stop(ctx.currentTime + 0.05);
  }
  source = node; sourceGain = gain; startedAt = ctx.currentTime; offset = pos;
  studio.playingVersion = version;
  studio.playingBuffer = b.buffer;
}

async function play() {
  await ctx.resume();
  if (!studio.buffers[studio.current]) await loadAudio(studio.current);
  studio.playing = true;
  startVersion(studio.current);
  $("play").innerHTML = "&#10074;&#10074; pause";
}

function pause() {
  offset = position();
  studio.playing = false;
  if (source) source.stop();
  source = null; sourceGain = null; studio.playingVersion = null; studio.playingBuffer = null;
  $("play").innerHTML = "&#9654; play";
}

function seek(seconds) {
  offset = Math.max(0, Math.min(seconds, regionSeconds() - 0.01));
  if (studio.playing) { startedAt = ctx.currentTime; startVersion(studio.current); }
}

async function choose(version) {
  studio.current = version;
  drawVersions();
  if (!studio.buffers[version]) await run(null, () => loadAudio(version));
  if (studio.playing) startVersion(version);
}

// ---------------------------------------------------------------- state ----

function structure(s) {
  return JSON.stringify([s.tracks.map((t) => t.name), s.console.tracks.map((t) => t.chain.map((e) => e.type)),
    s.console.buses.map((b) => b.name), s.console.master.chain.map((e) => e.type)]);
}

let builtFor = null;

function applyState(s) {
  const regionChanged = studio.state && (studio.state.region[0] !== s.region[0] || studio.state.region[1] !== s.region[1]);
  studio.state = s;
  if (s.overview) studio.overview = s.overview;
  if (regionChanged) { studio.buffers = {}; studio.meters = {}; offset = 0; }
  if (!s.versions.includes(studio.current)) studio.current = "edited";
  if (structure(s) !== builtFor) { buildMixer(); builtFor = structure(s); }
  refreshMixer();
  drawVersions();
  $("undo").disabled = !s.can_undo;
  $("redo").disabled = !s.can_redo;
  $("sample").disabled = !s.has_style;
  $("reference").disabled = !s.has_style;
  const [a, b] = s.region;
  $("region").textContent = `loop ${clock(a)} – ${clock(b)} of ${clock(s.song_s)}`;
  drawOverview();
}

function clock(t) {
  const m = Math.floor(t / 60);
  return `${m}:${(t - 60 * m).toFixed(1).padStart(4, "0")}`;
}

function drawVersions() {
  const box = $("versions");
  box.replaceChildren(...studio.state.versions.map((v, k) => {
    const b = document.createElement("button");
    b.textContent = `${String.fromCharCode(65 + k)} · ${v}`;
    b.dataset.version = v;
    b.className = v === studio.current ? "on" : "";
    b.onclick = () => choose(v);
    return b;
  }));
}

// ---------------------------------------------------------------- edits ----

const pending = new Map();
let firstPendingAt = null, inFlight = false;

function queueEdit(path, value) {
  pending.set(JSON.stringify(path), value);
  if (firstPendingAt === null) firstPendingAt = performance.now();
  if (!inFlight) flush();
}

async function flush() {
  inFlight = true;
  while (pending.size) {
    const changes = [...pending].map(([p, value]) => ({ path: JSON.parse(p), value }));
    const t0 = firstPendingAt;
    pending.clear(); firstPendingAt = null;
    const ok = await run(null, async () => {
      const r = await api("api/edit", { changes });
      applyState(r.state);
      if (await loadAudio("edited")) studio.latencies.push(performance.now() - t0);
      return true;
    });
    if (!ok) { const s = await api("api/state"); applyState(s); }
  }
  inFlight = false;
}

async function command(path, label, versionsToLoad = ["edited"], body = {}) {
  return run(label, async () => {
    const r = await api(path, body);
    applyState(r.state);
    for (const v of versionsToLoad) await loadAudio(v === "*result" ? r.result : v);
    return r;
  });
}

// ---------------------------------------------------------------- mixer ----

const EQ_MIN_DB = -18, EQ_MAX_DB = 18, F_LO = 20, F_HI = 20000;
let stripViews = [];

function control(parent, label, min, max, step, path, format, scale = "lin") {
  const row = document.createElement("div");
  row.className = "row";
  const name = document.createElement("label");
  name.textContent = label;
  const input = document.createElement("input");
  input.type = "range";
  const toPos = scale === "log" ? (v) => Math.log(v) : (v) => v;
  const fromPos = scale === "log" ? (p) => Math.exp(p) : (p) => p;
  input.min = toPos(min); input.max = toPos(max); input.step = scale === "log" ? (toPos(max) - toPos(min)) / 200 : step;
  const value = document.createElement("span");
  value.className = "value";
  row.append(name, input, value);
  parent.append(row);
  const view = {
    input, path,
    set(v) { if (document.activeElement !== input) input.value = toPos(v); value.textContent = format(v); },
  };
  input.addEventListener("input", () => {
    const v = fromPos(parseFloat(input.value));
    value.textContent = format(v);
    queueEdit(view.path(), v);
  });
  return view;
}

const dB = (v) => (v === null ? "off" : `${v.toFixed(1)} dB`);
const panText = (v) => (Math.abs(v) < 0.005 ? "C" : `${v < 0 ? "L" : "R"}${Math.round(Math.abs(v) * 100)}`);

function entryIndex(chain, type) { return chain.findIndex((e) => e.type === type); }

function buildStrip(box, getChain, prefix, eqCurve, title) {
  // One strip: controls for the first gain, EQ, compressor, limiter and pan of a chain; other effects listed.
  const chain = getChain();
  const views = [];
  const at = (type, key) => () => [...prefix(), entryIndex(getChain(), type), key];
  const h = document.createElement("h2");
  h.textContent = title;
  h.title = title;
  box.append(h);
  if (entryIndex(chain, "eq") >= 0) views.push(eqView(box, getChain, () => [...prefix(), entryIndex(getChain(), "eq")], eqCurve));
  if (entryIndex(chain, "compressor") >= 0) {
    const get = (k) => () => getChain()[entryIndex(getChain(), "compressor")][k];
    for (const [key, label, lo, hi, step, fmt, scale] of [
      ["threshold_db", "threshold", -60, 0, 0.1, (v) => `${v.toFixed(1)} dB`],
      ["ratio", "ratio", 1, 20, 0.01, (v) => `${v.toFixed(2)}:1`, "log"],
      ["attack_ms", "attack", 0.1, 100, 0.1, (v) => `${v.toFixed(1)} ms`, "log"],
      ["release_ms", "release", 10, 1000, 1, (v) => `${v.toFixed(0)} ms`, "log"]]) {
      const v = control(box, label, lo, hi, step, at("compressor", key), fmt, scale);
      views.push({ refresh: () => v.set(get(key)()) });
    }
    const row = document.createElement("div");
    row.className = "row";
    row.innerHTML = '<label>reduction</label><div class="meter" title="compressor gain reduction"><div></div></div><span class="value gr"></span>';
    box.append(row);
    views.push({ gr: row });
  }
  if (entryIndex(chain, "limiter") >= 0) {
    const v = control(box, "ceiling", -12, 0, 0.1, at("limiter", "ceiling_db"), (x) => `${x.toFixed(1)} dB`);
    views.push({ refresh: () => v.set(getChain()[entryIndex(getChain(), "limiter")].ceiling_db) });
  }
  const others = chain.filter((e, k) => !["gain", "eq", "compressor", "limiter", "pan"].includes(e.type)
    || k !== entryIndex(chain, e.type)).map((e) => e.type);
  if (others.length) {
    const p = document.createElement("div");
    p.className = "other";
    p.textContent = `also: ${others.join(", ")} (edit in the console file)`;
    box.append(p);
  }
  return views;
}

function buildMixer() {
  const s = studio.state;
  const mixer = $("mixer");
  mixer.replaceChildren();
  stripViews = s.tracks.map((track, i) => {
    const box = document.createElement("section");
    box.className = "strip";
    box.dataset.track = i;
    const getChain = () => studio.state.console.tracks[i].chain;
    const prefix = () => ["tracks", i, "chain"];
    const views = buildStrip(box, getChain, prefix, () => studio.state.eq.tracks[i], track.name);
    for (const bus of s.console.buses.map((b) => b.name)) {
      const v = control(box, `→ ${bus}`, -61, 0, 0.1, () => ["tracks", i, "sends", bus], (x) => dB(x <= -60.5 ? null : x));
      v.input.addEventListener("input", () => {
        if (parseFloat(v.input.value) <= -60.5) queueEdit(["tracks", i, "sends", bus], null);
      });
      views.push({ refresh: () => {
        const send = studio.state.console.tracks[i].sends.find((x) => x.bus === bus);
        v.set(send ? send.level_db : -61);
      } });
    }
    if (entryIndex(getChain(), "pan") >= 0) {
      const v = control(box, "pan", -1, 1, 0.01, () => ["tracks", i, "chain", entryIndex(getChain(), "pan"), "pan"], panText);
      views.push({ refresh: () => v.set(getChain()[entryIndex(getChain(), "pan")].pan) });
    }
    const row = document.createElement("div");
    row.className = "fader";
    const buttons = document.createElement("div");
    for (const kind of ["mute", "solo"]) {
      const b = document.createElement("button");
      b.className = kind;
      b.textContent = kind[0].toUpperCase();
      b.title = `${kind} (monitoring only: the console file is not changed)`;
      b.onclick = () => toggleMonitor(kind, i);
      buttons.append(b, document.createElement("br"));
    }
    if (entryIndex(getChain(), "gain") >= 0) {
      const fader = document.createElement("input");
      fader.type = "range"; fader.min = -60; fader.max = 24; fader.step = 0.1;
      fader.className = "fader-input";
      fader.title = "fader (dB)";
      const value = document.createElement("span");
      value.className = "value";
      fader.addEventListener("input", () => {
        value.textContent = dB(parseFloat(fader.value));
        queueEdit(["tracks", i, "chain", entryIndex(getChain(), "gain"), "gain_db"], parseFloat(fader.value));
      });
      row.append(fader, value);
      views.push({ refresh: () => {
        const g = getChain()[entryIndex(getChain(), "gain")].gain_db;
        if (document.activeElement !== fader) fader.value = g;
        value.textContent = dB(g);
      } });
    }
    row.append(buttons);
    box.append(row);
    views.push({ refresh: () => {
      buttons.children[0].classList.toggle("on", studio.state.muted.includes(i));
      buttons.children[2].classList.toggle("on", studio.state.soloed.includes(i));
    } });
    mixer.append(box);
    return views;
  });
  const master = $("master");
  master.replaceChildren();
  const meters = document.createElement("div");
  meters.innerHTML = '<div class="row"><label>short-term</label><span class="big" id="short-term">–</span></div>' +
    '<div class="row"><label>integrated</label><span id="integrated">–</span></div>' +
    '<div class="row"><label>peak</label><span id="peak">–</span></div>';
  const mviews = buildStrip(master, () => studio.state.console.master.chain, () => ["master", "chain"],
    () => studio.state.eq.master, "master");
  master.append(meters);
  stripViews.push(mviews);
}

function refreshMixer() {
  for (const views of stripViews) for (const v of views) if (v.refresh) v.refresh();
}

async function toggleMonitor(kind, i) {
  const set = new Set(kind === "mute" ? studio.state.muted : studio.state.soloed);
  set.has(i) ? set.delete(i) : set.add(i);
  const muted = kind === "mute" ? [...set] : studio.state.muted;
  const soloed = kind === "solo" ? [...set] : studio.state.soloed;
  await run(null, async () => {
    const r = await api("api/monitor", { muted, soloed });
    studio.buffers = {};
    applyState(r.state);
    await loadAudio(studio.current);
  });
}

// ---------------------------------------------------------------- EQ ----

function eqView(box, getChain, path, curve) {
  const canvas = document.createElement("canvas");
  canvas.className = "eq";
  canvas.width = 386; canvas.height = 160;
  canvas.title = "drag a band; wheel: Q";
  box.append(canvas);
  const editor = document.createElement("div");
  editor.className = "band-editor";
  box.append(editor);
  const view = { canvas, selected: 0, dragging: false };
  const bands = () => getChain()[path().at(-1)].bands;
  const x = (f) => (Math.log(f / F_LO) / Math.log(F_HI / F_LO)) * canvas.width;
  const fOf = (px) => F_LO * Math.pow(F_HI / F_LO, px / canvas.width);
  const y = (g) => ((EQ_MAX_DB - g) / (EQ_MAX_DB - EQ_MIN_DB)) * canvas.height;
  const gOf = (py) => EQ_MAX_DB - (py / canvas.height) * (EQ_MAX_DB - EQ_MIN_DB);
  const hasGain = (b) => ["peak", "low_shelf", "high_shelf"].includes(b.shape);

  view.draw = () => {
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, canvas.width, canvas.height);
    g.strokeStyle = "#333"; g.lineWidth = 1;
    for (const f of [100, 1000, 10000]) { g.beginPath(); g.moveTo(x(f), 0); g.lineTo(x(f), canvas.height); g.stroke(); }
    g.beginPath(); g.moveTo(0, y(0)); g.lineTo(canvas.width, y(0)); g.stroke();
    const c = curve();
    if (c) {
      g.strokeStyle = "#7fb7ff"; g.lineWidth = 2; g.beginPath();
      studio.state.eq.freqs_hz.forEach((f, k) => { const py = y(Math.max(EQ_MIN_DB, Math.min(EQ_MAX_DB, c[k]))); k ? g.lineTo(x(f), py) : g.moveTo(x(f), py); });
      g.stroke();
    }
    bands().forEach((b, k) => {
      g.fillStyle = k === view.selected ? "#ffcf5c" : "#d0d0d0";
      g.beginPath(); g.arc(x(b.freq_hz), y(hasGain(b) ? b.gain_db : 0), 6, 0, 2 * Math.PI); g.fill();
    });
  };
  view.editor = () => {
    const b = bands()[view.selected];
    if (!b) { editor.replaceChildren(); return; }
    editor.replaceChildren();
    const label = document.createElement("span");
    label.textContent = `${view.selected + 1}: ${b.shape.replace("_", " ")}`;
    editor.append(label);
    for (const [key, step] of [["freq_hz", 1], ["gain_db", 0.1], ["q", 0.01]]) {
      if (key === "gain_db" && !hasGain(b)) continue;
      const input = document.createElement("input");
      input.type = "number"; input.step = step; input.value = +b[key].toFixed(key === "freq_hz" ? 0 : 2);
      input.title = { freq_hz: "frequency (Hz)", gain_db: "gain (dB)", q: "Q" }[key];
      input.dataset.key = key;
      input.addEventListener("change", () => queueEdit([...path(), "bands", view.selected, key], parseFloat(input.value)));
      const unit = document.createElement("small");
      unit.textContent = { freq_hz: "Hz", gain_db: "dB", q: "Q" }[key];
      editor.append(input, unit);
    }
  };
  view.refresh = () => { view.draw(); if (!view.dragging && !editor.contains(document.activeElement)) view.editor(); };

  const local = (e) => { const r = canvas.getBoundingClientRect(); return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height]; };
  canvas.addEventListener("pointerdown", (e) => {
    const [px, py] = local(e);
    let best = -1, dist = 1e9;
    bands().forEach((b, k) => { const d = Math.hypot(x(b.freq_hz) - px, y(hasGain(b) ? b.gain_db : 0) - py); if (d < dist) { dist = d; best = k; } });
    if (best < 0) return;
    view.selected = best; view.dragging = dist < 24;
    if (view.dragging) canvas.setPointerCapture(e.pointerId);
    view.refresh();
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!view.dragging) return;
    const [px, py] = local(e);
    const b = bands()[view.selected];
    b.freq_hz = Math.min(20000, Math.max(20, fOf(px)));
    queueEdit([...path(), "bands", view.selected, "freq_hz"], b.freq_hz);
    if (hasGain(b)) {
      b.gain_db = Math.min(EQ_MAX_DB, Math.max(EQ_MIN_DB, gOf(py)));
      queueEdit([...path(), "bands", view.selected, "gain_db"], b.gain_db);
    }
    view.draw();
  });
  canvas.addEventListener("pointerup", () => { view.dragging = false; view.editor(); });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const b = bands()[view.selected];
    b.q = Math.min(10, Math.max(0.1, b.q * (e.deltaY < 0 ? 1.1 : 1 / 1.1)));
    queueEdit([...path(), "bands", view.selected, "q"], b.q);
    view.draw();
  }, { passive: false });
  return view;
}

// ---------------------------------------------------------------- overview and meters ----

let drag = null;

function drawOverview() {
  const canvas = $("overview");
  const s = studio.state;
  canvas.width = canvas.clientWidth * devicePixelRatio;
  canvas.height = 70 * devicePixelRatio;
  const g = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, peaks = studio.overview || [];
  const sx = (t) => (t / s.song_s) * W;
  g.clearRect(0, 0, W, H);
  g.strokeStyle = "#8fa3bf"; g.beginPath();
  peaks.forEach(([lo, hi], k) => { const px = (k / peaks.length) * W; g.moveTo(px, H / 2 - hi * H / 2); g.lineTo(px, H / 2 - lo * H / 2); });
  g.stroke();
  const [a, b] = drag ? [Math.min(drag.a, drag.b), Math.max(drag.a, drag.b)] : s.region;
  g.fillStyle = "rgba(10, 10, 14, 0.7)";  // outside the loop region: dimmed
  g.fillRect(0, 0, sx(a), H);
  g.fillRect(sx(b), 0, W - sx(b), H);
  const t = s.region[0] + position();
  g.strokeStyle = "#ffcf5c"; g.beginPath(); g.moveTo(sx(t), 0); g.lineTo(sx(t), H); g.stroke();
}

function overviewTime(e) {
  const r = $("overview").getBoundingClientRect();
  return ((e.clientX - r.left) / r.width) * studio.state.song_s;
}

function setupOverview() {
  const canvas = $("overview");
  canvas.addEventListener("pointerdown", (e) => { drag = { a: overviewTime(e), b: overviewTime(e) }; canvas.setPointerCapture(e.pointerId); });
  canvas.addEventListener("pointermove", (e) => { if (drag) { drag.b = overviewTime(e); drawOverview(); } });
  canvas.addEventListener("pointerup", async () => {
    const d = drag; drag = null;
    const [a, b] = [Math.min(d.a, d.b), Math.max(d.a, d.b)];
    const [ra, rb] = studio.state.region;
    if (b - a < 0.25) {  // a click: seek inside the loop region
      if (a >= ra && a <= rb) seek(a - ra);
      drawOverview();
      return;
    }
    const wasPlaying = studio.playing;
    if (wasPlaying) pause();
    await command("api/region", "rendering the new loop region", [studio.current], { start: a, end: b });
    if (wasPlaying) play();
  });
}

function tick() {
  if (studio.state) {
    const t = position();
    $("time").textContent = clock(studio.state.region[0] + t);
    drawOverview();
    const m = studio.meters[studio.current];
    if (m) {
      const k = Math.max(0, Math.min(m.short_term_lufs.length - 1, Math.floor((t - m.short_term_offset_s) / m.step_s)));
      $("short-term").textContent = `${m.short_term_lufs[k].toFixed(1)} LUFS`;
      $("integrated").textContent = `${m.integrated_lufs.toFixed(1)} LUFS`;
      $("peak").textContent = `${m.peak_dbfs.toFixed(1)} dBFS`;
      const step = Math.floor(t / m.step_s);
      stripViews.forEach((views, i) => {
        const gr = views.find((v) => v.gr);
        const series = m.gain_reduction_db[i];
        if (!gr || !series) return;
        const v = series[Math.min(series.length - 1, step)] || 0;
        gr.gr.querySelector(".meter > div").style.width = `${Math.min(100, (v / 24) * 100)}%`;
        gr.gr.querySelector(".gr").textContent = v >= 0.05 ? `-${v.toFixed(1)} dB` : "0.0 dB";
      });
    }
  }
  requestAnimationFrame(tick);
}

// ---------------------------------------------------------------- start ----

async function main() {
  $("play").onclick = () => (studio.playing ? pause() : play());
  $("matched").onchange = applyLevels;
  $("undo").onclick = () => command("api/undo", "undo");
  $("redo").onclick = () => command("api/redo", "redo");
  $("adopt").onclick = () => command("api/adopt", `editing from ${studio.current}`, ["edited"], { version: studio.current })
    .then(() => choose("edited"));
  $("mix-again").onclick = () => command("api/mix-again", "mixing again");
  $("sample").onclick = async () => {
    const r = await command("api/sample", "sampling another mix", ["*result"]);
    if (r) choose(r.result);
  };
  $("reference").onchange = async () => {
    const file = $("reference").files[0];
    if (!file) return;
    const r = await run(`matching the style of ${file.name}`, async () => {
      const response = await fetch("api/match", { method: "POST", headers: { ...authHeaders, "X-Filename": file.name }, body: file });
      const data = await readJson(response);
      applyState(data.state);
      await loadAudio(data.result);
      return data;
    });
    $("reference").value = "";
    if (r) choose(r.result);
  };
  $("save").onclick = () => run("saving (the whole song)", async () => {
    const r = await api("api/save", { name: $("save-name").value });
    applyState(r.state);
    say(`saved ${r.result.length} files in ${studio.state.out_dir}: ${r.result.map((p) => p.split("/").pop()).join(", ")}`);
    studio.saved = r.result;
  });
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" && e.target.type !== "range") return;
    if (e.code === "Space") { e.preventDefault(); $("play").click(); }
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); (e.shiftKey ? $("redo") : $("undo")).click(); }
  });
  setupOverview();
  const s = await api("api/state");
  applyState(s);
  say(`${s.tracks.length} tracks; rendering the loop region…`);
  await Promise.all(s.versions.map((v) => loadAudio(v)));
  studio.ready = true;
  say(`${s.tracks.length} tracks, ${clock(s.song_s)}; play, switch versions (A/B…), move anything`);
  requestAnimationFrame(tick);
}

main().catch((e) => say(e.message, true));
