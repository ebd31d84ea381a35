// muse-fast view: a small canvas viewer for deep-zoom tiles and a million nuclei (no libraries, no network).
// Coordinates are level-0 pixels; the view maps them to the screen as (x - x0) / scale.
"use strict";

const $ = (id) => document.getElementById(id);
const stage = $("stage");
const canvases = { base: $("base"), layers: $("layers"), points: $("points") };
const ctx = {
  base: canvases.base.getContext("2d"),
  layers: canvases.layers.getContext("2d"),
  points: canvases.points.getContext("2d"),
};
const NUCLEUS_UM = 3.5; // drawn radius of a nucleus, microns
const MAX_TILES = 800;

const S = {
  info: null, stem: null, W: 1, H: 1, cx: 0, cy: 0, scale: 1,
  tiles: new Map(), wanted: new Set(), pending: 0, enabled: [], colours32: [],
  pts: null, fetchTimer: 0, fetchAbort: null, density: null, densityCanvas: null, tissueCanvas: null,
  frame: 0, loadMs: null, pixels: null,
};

function colour32([r, g, b]) { return ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0; }
function api(path) { return fetch(path).then((r) => { if (!r.ok) throw new Error(path + ": " + r.status); return r; }); }
function view() {
  return { x0: S.cx - (S.W * S.scale) / 2, y0: S.cy - (S.H * S.scale) / 2, scale: S.scale };
}

function resize() {
  S.W = Math.max(1, stage.clientWidth);
  S.H = Math.max(1, stage.clientHeight);
  for (const c of Object.values(canvases)) { c.width = S.W; c.height = S.H; }
  S.pixels = ctx.points.createImageData(S.W, S.H);
  redraw();
}

function fit() {
  const i = S.info;
  S.scale = Math.max(i.width / S.W, i.height / S.H) * 1.02;
  S.cx = i.width / 2;
  S.cy = i.height / 2;
  changed();
}

function zoomAt(factor, sx, sy) {
  const v = view();
  const x = v.x0 + sx * v.scale, y = v.y0 + sy * v.scale;
  const maxScale = Math.max(S.info.width / S.W, S.info.height / S.H) * 4;
  S.scale = Math.min(maxScale, Math.max(0.05, S.scale / factor));
  S.cx = x - (sx - S.W / 2) * S.scale;
  S.cy = y - (sy - S.H / 2) * S.scale;
  changed();
}

function changed() { redraw(); schedulePoints(); }

let rafPending = false;
function redraw() {
  if (rafPending) return;
  rafPending = true;
  requestAnimationFrame(() => { rafPending = false; draw(); });
}

function draw() {
  if (!S.info) return;
  const t0 = performance.now();
  drawBase();
  drawLayers();
  drawPoints();
  S.frame = performance.now() - t0;
  return S.frame;
}

// ---- slide tiles ----
function tileLevel() {
  const top = S.info.top_level;
  return Math.max(0, Math.min(top, top - Math.floor(Math.log2(Math.max(S.scale, 1e-9)))));
}

function drawBase() {
  const c = ctx.base, v = view(), i = S.info;
  c.fillStyle = "#d8d8d8";
  c.fillRect(0, 0, S.W, S.H);
  if (i.top_level === null) {  // no slide image: a white sheet the size of the nuclei's extent
    c.fillStyle = "#fff";
    c.fillRect(-v.x0 / v.scale, -v.y0 / v.scale, i.width / v.scale, i.height / v.scale);
    return;
  }
  const want = tileLevel();
  S.wanted = new Set();
  for (let level = Math.max(0, want - 5); level <= want; level++) drawLevel(level, level === want, v);
  document.body.dataset.tiles = S.pending ? "loading" : "loaded";
}

function drawLevel(level, request, v) {
  const i = S.info, ds = 2 ** (i.top_level - level), span = i.tile * ds;
  const lw = Math.ceil(i.width / ds), lh = Math.ceil(i.height / ds);
  const c0 = Math.max(0, Math.floor(v.x0 / span)), r0 = Math.max(0, Math.floor(v.y0 / span));
  const c1 = Math.min(Math.ceil(lw / i.tile) - 1, Math.floor((v.x0 + S.W * v.scale) / span));
  const r1 = Math.min(Math.ceil(lh / i.tile) - 1, Math.floor((v.y0 + S.H * v.scale) / span));
  for (let r = r0; r <= r1; r++) {
    for (let col = c0; col <= c1; col++) {
      const key = `${S.stem}/${level}/${col}_${r}`;
      if (request) S.wanted.add(key);
      let img = S.tiles.get(key);
      if (!img && request) img = loadTile(key);
      if (img && img.complete && img.naturalWidth) {
        const x = (col * span - v.x0) / v.scale, y = (r * span - v.y0) / v.scale;
        ctx.base.drawImage(img, x, y, (img.naturalWidth * ds) / v.scale, (img.naturalHeight * ds) / v.scale);
      }
    }
  }
}

// At most TILE_REQUESTS tile requests at once (browsers open about 6 connections per host: the rest stay free for
// the nuclei); queued tiles that left the view before their turn are dropped.
const TILE_REQUESTS = 3;
const tileQueue = [];
let tilesActive = 0;

function loadTile(key) {
  const img = new Image();
  S.pending++;
  S.tiles.set(key, img);
  if (S.tiles.size > MAX_TILES) S.tiles.delete(S.tiles.keys().next().value);
  tileQueue.push([key, img]);
  pumpTiles();
  return img;
}

function pumpTiles() {
  while (tilesActive < TILE_REQUESTS && tileQueue.length) {
    const [key, img] = tileQueue.shift();
    if (!S.wanted.has(key)) {  // no longer in view: forget it, so that it is asked for again if it comes back
      S.pending--;
      if (S.tiles.get(key) === img) S.tiles.delete(key);
      continue;
    }
    tilesActive++;
    const done = () => { tilesActive--; S.pending--; pumpTiles(); redraw(); };
    img.onload = done;
    img.onerror = done;
    const [stem, level, name] = key.split("/");
    img.src = `/api/tile/${encodeURIComponent(stem)}/${level}/${name}.jpg`;
  }
  if (!S.pending) document.body.dataset.tiles = "loaded";
}

// ---- nuclei ----
function schedulePoints() {
  clearTimeout(S.fetchTimer);
  S.fetchTimer = setTimeout(fetchPoints, 80);
}

async function fetchPoints() {
  const v = view(), w = S.W * v.scale, h = S.H * v.scale;
  const box = { x0: v.x0 - w / 4, y0: v.y0 - h / 4, x1: v.x0 + w * 1.25, y1: v.y0 + h * 1.25, scale: v.scale };
  const classes = S.enabled.map((on, k) => (on ? k : -1)).filter((k) => k >= 0).join(",");
  if (S.fetchAbort) S.fetchAbort.abort();
  S.fetchAbort = new AbortController();
  document.body.dataset.nuclei = "loading";
  const q = `x0=${box.x0}&y0=${box.y0}&x1=${box.x1}&y1=${box.y1}&scale=${box.scale}&classes=${classes}`;
  let buf;
  try {
    const r = await fetch(`/api/points/${encodeURIComponent(S.stem)}?${q}`, { signal: S.fetchAbort.signal });
    if (!r.ok) throw new Error("points: " + r.status);
    buf = await r.arrayBuffer();
  } catch (e) {
    if (e.name !== "AbortError") $("note").textContent = String(e);
    return;
  }
  const head = new DataView(buf, 0, 12);
  const mode = head.getInt32(0, true), n = head.getInt32(4, true), side = head.getFloat32(8, true);
  S.pts = {
    mode, n, side, box,
    x: new Float32Array(buf, 12, n), y: new Float32Array(buf, 12 + 4 * n, n), c: new Uint8Array(buf, 12 + 8 * n, n),
  };
  draw();
  document.body.dataset.nuclei = "drawn";
  if (S.loadMs === null) {
    S.loadMs = performance.now();
    document.body.dataset.loadMs = S.loadMs.toFixed(0);
  }
  status();
}

const ringCache = new Map();
function ring(r) {  // pixel offsets [dx0, dy0, dx1, dy1, ...] of a ring of radius r, 2 px wide
  if (ringCache.has(r)) return ringCache.get(r);
  const offs = [];
  for (let dy = -r; dy <= r; dy++) {
    for (let dx = -r; dx <= r; dx++) {
      const d = Math.sqrt(dx * dx + dy * dy);
      if (d <= r + 0.5 && d >= r - 1.5) offs.push(dx, dy);
    }
  }
  ringCache.set(r, Int32Array.from(offs));
  return ringCache.get(r);
}

// Nuclei are written straight into an RGBA buffer (one putImageData per frame): a filled square when small or a
// bin, a ring of the nucleus's size when zoomed in.
function drawPoints() {
  const p = S.pts, img = S.pixels;
  const px = new Uint32Array(img.data.buffer);
  px.fill(0);
  S.drawn = 0;
  if (p && $("show-points").checked) {
    const v = view(), W = S.W, H = S.H, cols = S.colours32, on = S.enabled;
    const bins = p.mode === 1;
    const r = bins
      ? Math.max(1, Math.round(p.side / v.scale / 2))
      : Math.max(1, Math.min(12, Math.floor(NUCLEUS_UM / (S.info.mpp || 0.5) / v.scale)));
    const offs = bins || r < 4 ? null : ring(r);
    const lo = -r, hi = bins ? r : r + 1;  // a bin is 2r wide, a small nucleus 2r + 1
    const index = offs && Int32Array.from({ length: offs.length / 2 }, (_, j) => offs[2 * j + 1] * W + offs[2 * j]);
    const inv = 1 / v.scale;
    let drawn = 0;
    for (let k = 0; k < p.n; k++) {
      const cls = p.c[k];
      if (!on[cls]) continue;
      const sx = Math.round((p.x[k] - v.x0) * inv), sy = Math.round((p.y[k] - v.y0) * inv);
      if (sx < -r || sy < -r || sx >= W + r || sy >= H + r) continue;
      const colour = cols[cls];
      drawn++;
      if (offs === null) {
        const xa = Math.max(0, sx + lo), xb = Math.min(W, sx + hi), ya = Math.max(0, sy + lo), yb = Math.min(H, sy + hi);
        for (let y = ya; y < yb; y++) {
          const row = y * W;
          for (let x = xa; x < xb; x++) px[row + x] = colour;
        }
      } else if (sx >= r && sy >= r && sx < W - r && sy < H - r) {
        const base = sy * W + sx;
        for (let j = 0; j < index.length; j++) px[base + index[j]] = colour;
      } else {
        for (let j = 0; j < offs.length; j += 2) {
          const x = sx + offs[j], y = sy + offs[j + 1];
          if (x >= 0 && y >= 0 && x < W && y < H) px[y * W + x] = colour;
        }
      }
    }
    S.drawn = drawn;
  }
  ctx.points.putImageData(img, 0, 0);
}

// ---- optional layers ----
function drawLayers() {
  const c = ctx.layers, v = view(), i = S.info;
  c.clearRect(0, 0, S.W, S.H);
  const X = (x) => (x - v.x0) / v.scale, Y = (y) => (y - v.y0) / v.scale;
  c.imageSmoothingEnabled = false;
  if ($("show-tissue").checked && S.tissueCanvas) {
    c.drawImage(S.tissueCanvas, X(0), Y(0), i.width / v.scale, i.height / v.scale);
  }
  if (S.densityCanvas && S.density) {  // cells past the slide's edge are cut at the edge
    const d = S.density;
    c.save();
    c.beginPath();
    c.rect(X(0), Y(0), i.width / v.scale, i.height / v.scale);
    c.clip();
    c.drawImage(S.densityCanvas, X(0), Y(0), (d.cols * d.cell_px) / v.scale, (d.rows * d.cell_px) / v.scale);
    c.restore();
  }
  if ($("show-grid").checked && i.tile_grid) drawGrid(c, i.tile_grid, v, X, Y);
  if ($("show-unreadable").checked) {
    c.strokeStyle = "#000";
    c.lineWidth = 2;
    for (const [x, y, w, h] of i.unreadable_regions) {
      c.strokeRect(X(x), Y(y), w / v.scale, h / v.scale);
      c.beginPath();
      c.moveTo(X(x), Y(y)); c.lineTo(X(x + w), Y(y + h));
      c.moveTo(X(x), Y(y + h)); c.lineTo(X(x + w), Y(y));
      c.stroke();
    }
  }
}

function drawGrid(c, g, v, X, Y) {
  const x1 = v.x0 + S.W * v.scale, y1 = v.y0 + S.H * v.scale;
  const seen = g.tiles.filter(([x, y]) => x + g.side >= v.x0 && x <= x1 && y + g.side >= v.y0 && y <= y1);
  if (seen.length > 20000) return;  // zoom in to see the grid
  c.strokeStyle = "rgba(0, 90, 200, 0.7)";
  c.lineWidth = 1;
  c.beginPath();
  for (const [x, y] of seen) c.rect(X(x) + 0.5, Y(y) + 0.5, g.side / v.scale, g.side / v.scale);
  c.stroke();
}

async function loadTissue() {
  S.tissueCanvas = null;
  if (!S.info.tissue) return;
  const img = new Image();
  img.src = `/api/layer/${encodeURIComponent(S.stem)}/tissue.png`;
  await img.decode();
  const cv = document.createElement("canvas");
  cv.width = img.naturalWidth;
  cv.height = img.naturalHeight;
  const c = cv.getContext("2d");
  c.drawImage(img, 0, 0);
  const data = c.getImageData(0, 0, cv.width, cv.height);
  for (let k = 0; k < data.data.length; k += 4) {  // shade what is not tissue
    const glass = data.data[k] < 128;
    data.data.set(glass ? [0, 40, 120, 90] : [0, 0, 0, 0], k);
  }
  c.putImageData(data, 0, 0);
  S.tissueCanvas = cv;
  redraw();
}

async function loadDensity(k) {
  S.density = null;
  S.densityCanvas = null;
  $("density-scale").textContent = "";
  if (k < 0) return redraw();
  const d = await (await api(`/api/density/${encodeURIComponent(S.stem)}?class=${k}`)).json();
  const cv = document.createElement("canvas");
  cv.width = d.cols;
  cv.height = d.rows;
  const c = cv.getContext("2d"), data = c.createImageData(d.cols, d.rows);
  const [r, g, b] = S.info.classes[k].colour;
  d.values.forEach((val, j) => data.data.set([r, g, b, d.max > 0 ? Math.round((200 * val) / d.max) : 0], 4 * j));
  c.putImageData(data, 0, 0);
  S.density = d;
  S.densityCanvas = cv;
  $("density-scale").textContent =
    `${S.info.classes[k].name}: 0 to ${d.max.toFixed(0)} per mm² (cells of ${d.cell_mm2} mm²)`;
  redraw();
}

// ---- panel ----
function legend() {
  const body = $("legend").querySelector("tbody");
  body.textContent = "";
  const density = $("density");
  density.length = 1;
  S.info.classes.forEach((k) => {
    const tr = document.createElement("tr");
    const [r, g, b] = k.colour;
    tr.innerHTML = `<td><input type="checkbox" checked data-class="${k.id}"></td>` +
      `<td><span class="swatch" style="background:rgb(${r},${g},${b})"></span> </td>` +
      `<td>${k.count.toLocaleString("en")}</td><td>${k.per_mm2.toFixed(0)}</td>`;
    tr.children[1].append(k.name);  // a class name is text, never markup
    tr.querySelector("input").addEventListener("change", (e) => {
      S.enabled[k.id] = e.target.checked;
      draw();
      schedulePoints();
    });
    body.append(tr);
    const opt = document.createElement("option");
    opt.value = k.id;
    opt.textContent = k.name;
    density.append(opt);
  });
  const i = S.info;
  $("totals").textContent = `${i.nuclei.toLocaleString("en")} nuclei on ${i.area_mm2.toFixed(2)} mm² of tissue`;
}

function status() {
  const p = S.pts, umpp = S.info.mpp ? `${(S.scale * S.info.mpp).toFixed(2)} µm/px` : "";
  const what = p ? `${(S.drawn || 0).toLocaleString("en")} ${p.mode === 1 ? "bins of nuclei" : "nuclei"}` : "";
  $("status").textContent = `${umpp} · ${what} drawn · frame ${S.frame.toFixed(1)} ms`;
}

async function openSlide(stem) {
  S.stem = stem;
  S.pts = null;
  S.loadMs = null;
  S.info = await (await api(`/api/slide/${encodeURIComponent(stem)}`)).json();
  S.enabled = S.info.classes.map(() => true);
  S.colours32 = S.info.classes.map((k) => colour32(k.colour));
  $("slide-name").textContent = S.info.slide || S.info.stem;
  $("note").textContent = S.info.top_level === null ? `slide image not found (${S.info.slide_recorded}); ` +
    "pass it: muse-fast view OUT_DIR SLIDE" : "";
  $("density").value = "-1";
  $("show-grid").disabled = !S.info.tile_grid;
  $("show-tissue").disabled = !S.info.tissue;
  $("density").disabled = !S.info.density_cell_mm2;
  legend();
  loadDensity(-1);
  fit();
  loadTissue();
}

async function start() {
  const slides = await (await api("/api/slides")).json();
  const pick = $("slides");
  for (const s of slides) {
    const opt = document.createElement("option");
    opt.value = s.stem;
    opt.textContent = `${s.stem} (${s.nuclei.toLocaleString("en")})`;
    pick.append(opt);
  }
  $("slide-pick").hidden = slides.length < 2;
  const wanted = decodeURIComponent(location.hash.slice(1));
  const first = slides.some((s) => s.stem === wanted) ? wanted : slides[0].stem;
  pick.value = first;
  pick.addEventListener("change", () => { location.hash = encodeURIComponent(pick.value); openSlide(pick.value); });
  resize();
  await openSlide(first);
}

// ---- interaction ----
let drag = null;
stage.addEventListener("mousedown", (e) => { drag = { x: e.clientX, y: e.clientY, cx: S.cx, cy: S.cy, moved: false }; });
window.addEventListener("mousemove", (e) => {
  if (!drag) return;
  const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
  if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
  S.cx = drag.cx - dx * S.scale;
  S.cy = drag.cy - dy * S.scale;
  changed();
});
window.addEventListener("mouseup", (e) => {
  if (drag && !drag.moved) pick(e);
  drag = null;
});
stage.addEventListener("wheel", (e) => {
  e.preventDefault();
  const rect = stage.getBoundingClientRect();
  zoomAt(Math.pow(1.2, -e.deltaY / 100), e.clientX - rect.left, e.clientY - rect.top);
}, { passive: false });

async function pick(e) {
  const rect = stage.getBoundingClientRect(), v = view();
  const sx = e.clientX - rect.left, sy = e.clientY - rect.top;
  const x = v.x0 + sx * v.scale, y = v.y0 + sy * v.scale, r = Math.max(6 * v.scale, 8 / (S.info.mpp || 0.5));
  const classes = S.enabled.map((on, k) => (on ? k : -1)).filter((k) => k >= 0).join(",");
  const q = `x=${x}&y=${y}&r=${r}&classes=${classes}`;
  const hit = await (await api(`/api/nucleus/${encodeURIComponent(S.stem)}?${q}`)).json();
  const box = $("popup");
  if (!hit) { box.hidden = true; return; }
  box.textContent = `${hit.class_name} · p ${hit.class_probability.toFixed(3)} · score ${hit.score.toFixed(3)}` +
    ` · (${hit.x.toFixed(0)}, ${hit.y.toFixed(0)})`;
  box.style.left = `${sx + 12}px`;
  box.style.top = `${sy + 12}px`;
  box.hidden = false;
}

$("zoom-in").addEventListener("click", () => zoomAt(2, S.W / 2, S.H / 2));
$("zoom-out").addEventListener("click", () => zoomAt(0.5, S.W / 2, S.H / 2));
$("fit").addEventListener("click", fit);
for (const id of ["show-points", "show-tissue", "show-grid", "show-unreadable"]) $(id).addEventListener("change", redraw);
$("density").addEventListener("change", (e) => loadDensity(Number(e.target.value)));
window.addEventListener("resize", () => { resize(); schedulePoints(); });

// For tests and benchmarks: the view transform, and the time of n synchronous frames while panning.
window.museView = {
  state: S,
  view,
  setView(cx, cy, scale) { S.cx = cx; S.cy = cy; S.scale = scale; changed(); },
  frames(n) {
    const times = [];
    for (let k = 0; k < n; k++) {
      S.cx += S.scale * 2;
      times.push(draw());
    }
    return times;
  },
};

start().catch((e) => { $("note").textContent = String(e); document.body.dataset.nuclei = "error"; });
