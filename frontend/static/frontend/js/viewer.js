// Slice viewer core: fetches raw slices (int16 HU, uint8 labels) from the rendering API, windows them in the
// browser (so window/level drags are instant), blends the label overlay and draws one orthogonal view on a 2D
// canvas with zoom, pan, crosshair and screen <-> voxel mapping. No framework; one class per view.
// Class ids and overlay colours come from the page (classes.js reads dla/classes.py's definitions).
// The labels come from the workspace's label source (ws.labels: a draft, a label version, or none); with a diff
// source (ws.diff: the parent version) the voxels that differ are drawn in the diff colours on top.
import { CLASS_COLORS, UNLABELED, VESSEL } from "./classes.js";

const AXIS_INDEX = { z: 0, y: 1, x: 2 };

export class FetchError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

// A small LRU of fetched slices keyed by URL (raw volumes are immutable; draft slices carry the revision).
class SliceCache {
  constructor(limit = 160) { this.limit = limit; this.map = new Map(); }
  get(key) {
    const value = this.map.get(key);
    if (value !== undefined) { this.map.delete(key); this.map.set(key, value); }
    return value;
  }
  set(key, value) {
    this.map.set(key, value);
    while (this.map.size > this.limit) this.map.delete(this.map.keys().next().value);
  }
}
const cache = new SliceCache();

async function fetchRaw(url, ArrayType) {
  const hit = cache.get(url);
  if (hit) return hit;
  const promise = (async () => {
    let response;
    try {
      response = await fetch(url, { credentials: "same-origin" });
    } catch {
      throw new FetchError(0, "The server could not be reached; retrying when you scroll again.");
    }
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`;
      try { detail = (await response.json()).detail || detail; } catch { /* not JSON */ }
      throw new FetchError(response.status, detail);
    }
    const [rows, cols] = (response.headers.get("X-Shape") || "0,0").split(",").map(Number);
    const buffer = await response.arrayBuffer();
    return { rows, cols, data: new ArrayType(buffer) };
  })();
  cache.set(url, promise);
  promise.catch(() => cache.map.delete(url));
  return promise;
}

export function volumeSlice(volumeId, axis, index) {
  return fetchRaw(`/api/volumes/${volumeId}/slice/?axis=${axis}&index=${index}&format=raw`, Int16Array);
}

export function draftSlice(draftId, revision, axis, index) {
  return fetchRaw(`/api/drafts/${draftId}/slice/?axis=${axis}&index=${index}&rev=${revision}`, Uint8Array);
}

export function versionSlice(versionId, axis, index) {
  return fetchRaw(`/api/label-versions/${versionId}/slice/?axis=${axis}&index=${index}`, Uint8Array);
}

// Colours of changed voxels in a diff overlay (not class colours: a change must stand out from every class):
// "gained" = the voxel now has a labeled class it did not have before, "cleared" = it became unlabeled.
export const DIFF_COLORS = Object.freeze({ gained: Object.freeze([255, 0, 255]), cleared: Object.freeze([0, 255, 255]) });

// Geometry of a view: which array axis runs along rows and columns, their spacing, and whether rows are
// flipped so that superior is at the top (coronal and sagittal views).
export function viewGeometry(axis, shape, spacing) {
  const [nz, ny, nx] = shape;
  const [dz, dy, dx] = spacing;
  if (axis === "z") return { rows: ny, cols: nx, rowMm: dy, colMm: dx, flip: false, rowAxis: "y", colAxis: "x" };
  if (axis === "y") return { rows: nz, cols: nx, rowMm: dz, colMm: dx, flip: true, rowAxis: "z", colAxis: "x" };
  return { rows: nz, cols: ny, rowMm: dz, colMm: dy, flip: true, rowAxis: "z", colAxis: "y" };
}

export class SliceView {
  constructor(root, axis, ws) {
    this.root = root;
    this.axis = axis;
    this.ws = ws; // the workspace: volume, window, overlay settings, crosshair, tools
    this.canvas = root.querySelector("canvas");
    this.errorBox = root.querySelector(".view-error");
    this.slider = root.querySelector(".slice-slider");
    this.indexLabel = root.querySelector(".idx");
    this.image = document.createElement("canvas"); // slice resolution, composed image
    this.zoom = 1;
    this.pan = [0, 0];
    this.index = 0;
    this.hu = null; // last raw slice {rows, cols, data}
    this.labels = null;
    this.preview = null; // {rows, cols, data} of the subtracted slice for the threshold preview
    this.polygon = []; // scissors vertices [row, col]
    this.renderToken = 0;
    new ResizeObserver(() => this.draw()).observe(this.canvas.parentElement);
  }

  setVolume(shape, spacing) {
    this.geom = viewGeometry(this.axis, shape, spacing);
    const n = shape[AXIS_INDEX[this.axis]];
    this.count = n;
    this.slider.max = String(n - 1);
    if (this.index >= n) this.index = Math.floor(n / 2);
  }

  setIndex(index) {
    const clamped = Math.max(0, Math.min(this.count - 1, Math.round(index)));
    if (clamped === this.index && this.hu) return false;
    this.index = clamped;
    this.slider.value = String(clamped);
    this.load();
    return true;
  }

  showError(message) {
    this.errorBox.textContent = message;
    this.errorBox.hidden = !message;
  }

  async load() {
    const token = ++this.renderToken;
    const ws = this.ws;
    this.indexLabel.textContent = `${this.index + 1} / ${this.count}`;
    // what this load fetches: the marker `data-loaded` names it once it is composed, never what is merely wanted
    const loading = { index: this.index, key: ws.labels ? ws.labels.key : "-" };
    try {
      const [hu, labels, before] = await Promise.all([
        volumeSlice(ws.volume.id, this.axis, this.index),
        ws.labels ? ws.labels.slice(this.axis, this.index) : null,
        ws.diff && ws.diff.source ? ws.diff.source.slice(this.axis, this.index) : null,
      ]);
      if (token !== this.renderToken) return;
      this.hu = hu;
      this.labels = labels;
      this.before = before;
      this.held = loading;
      this.showError("");
      this.compose();
    } catch (err) {
      if (token !== this.renderToken) return;
      this.showError(`Could not load ${this.axis} slice ${this.index}: ${err.message}`);
      this.draw();
    }
  }

  // Window the HU slice and blend the label overlay into the slice-resolution image.
  compose() {
    if (!this.hu) return;
    const { rows, cols, data } = this.hu;
    const ws = this.ws;
    this.image.width = cols;
    this.image.height = rows;
    const ctx = this.image.getContext("2d");
    const out = ctx.createImageData(cols, rows);
    const px = out.data;
    const low = ws.window.center - ws.window.width / 2;
    const scale = 255 / ws.window.width;
    const labels = ws.overlay.visible && this.labels ? this.labels.data : null;
    const alpha = ws.overlay.opacity;
    const shown = ws.overlay.classes;
    const preview = this.preview && this.preview.rows === rows && this.preview.cols === cols ? this.preview.data : null;
    const threshold = ws.threshold;
    const vessel = CLASS_COLORS[VESSEL];
    const current = this.labels ? this.labels.data : null;
    const before = ws.diff && ws.diff.visible && current && this.before && this.before.data.length === current.length
      ? this.before.data : null;
    const { gained, cleared } = DIFF_COLORS;
    for (let i = 0, j = 0; i < data.length; i += 1, j += 4) {
      let g = (data[i] - low) * scale;
      g = g < 0 ? 0 : g > 255 ? 255 : g;
      let r = g, gg = g, b = g;
      let c = labels ? labels[i] : UNLABELED;
      if (preview) c = preview[i] >= threshold ? VESSEL : (c === VESSEL ? UNLABELED : c);
      if (before && before[i] !== current[i]) {
        // a changed voxel: drawn even with the class overlay off, opaque enough to be seen at any opacity
        const col = current[i] === UNLABELED ? cleared : gained;
        const a = Math.max(alpha, 0.85);
        r = r * (1 - a) + col[0] * a;
        gg = gg * (1 - a) + col[1] * a;
        b = b * (1 - a) + col[2] * a;
      } else if (c && (preview ? (c === VESSEL || shown[c]) : shown[c])) {
        const col = CLASS_COLORS[c] || vessel;
        r = r * (1 - alpha) + col[0] * alpha;
        gg = gg * (1 - alpha) + col[1] * alpha;
        b = b * (1 - alpha) + col[2] * alpha;
      }
      px[j] = r; px[j + 1] = gg; px[j + 2] = b; px[j + 3] = 255;
    }
    ctx.putImageData(out, 0, 0);
    if (this.held) this.root.dataset.loaded = `${this.held.index}:${this.held.key}`;
    this.draw();
  }

  // The transform from slice pixels to canvas pixels: fit, zoom, pan, aspect from spacing, flip.
  transform() {
    const g = this.geom;
    const w = this.canvas.width, h = this.canvas.height;
    const fit = Math.min(w / (g.cols * g.colMm), h / (g.rows * g.rowMm)) * this.zoom;
    const sx = fit * g.colMm, sy = fit * g.rowMm;
    const ox = (w - g.cols * sx) / 2 + this.pan[0];
    const oy = (h - g.rows * sy) / 2 + this.pan[1];
    return { sx, sy, ox, oy };
  }

  draw() {
    const box = this.canvas.parentElement;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.floor(box.clientWidth * dpr)), h = Math.max(1, Math.floor(box.clientHeight * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) { this.canvas.width = w; this.canvas.height = h; }
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, w, h);
    if (!this.geom || !this.hu) return;
    const t = this.transform();
    const g = this.geom;
    ctx.imageSmoothingEnabled = false;
    ctx.save();
    if (g.flip) {
      ctx.translate(t.ox, t.oy + g.rows * t.sy);
      ctx.scale(t.sx, -t.sy);
    } else {
      ctx.translate(t.ox, t.oy);
      ctx.scale(t.sx, t.sy);
    }
    ctx.drawImage(this.image, 0, 0);
    ctx.restore();
    this.drawCrosshair(ctx, t);
    this.drawPolygon(ctx, t);
  }

  // slice (row, col) -> canvas (x, y) at the pixel centre
  toCanvas(row, col, t = this.transform()) {
    const g = this.geom;
    const r = g.flip ? g.rows - 1 - row : row;
    return [t.ox + (col + 0.5) * t.sx, t.oy + (r + 0.5) * t.sy];
  }

  drawCrosshair(ctx, t) {
    const c = this.ws.crosshair;
    const g = this.geom;
    const [x, y] = this.toCanvas(c[g.rowAxis], c[g.colAxis], t);
    ctx.strokeStyle = "rgba(79,179,255,0.55)";
    ctx.lineWidth = 1;
    ctx.setLineDash([4, 4]);
    ctx.beginPath();
    ctx.moveTo(x, t.oy); ctx.lineTo(x, t.oy + g.rows * t.sy);
    ctx.moveTo(t.ox, y); ctx.lineTo(t.ox + g.cols * t.sx, y);
    ctx.stroke();
    ctx.setLineDash([]);
  }

  drawPolygon(ctx, t) {
    if (!this.polygon.length) return;
    ctx.strokeStyle = "#ffd400";
    ctx.fillStyle = "rgba(255,212,0,0.15)";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    this.polygon.forEach(([r, c], i) => {
      const [x, y] = this.toCanvas(r, c, t);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.closePath();
    ctx.fill();
    ctx.stroke();
  }

  // canvas event -> {row, col, zyx} or null outside the slice
  pick(event) {
    if (!this.geom) return null;
    const rect = this.canvas.getBoundingClientRect();
    const x = (event.clientX - rect.left) * (this.canvas.width / rect.width);
    const y = (event.clientY - rect.top) * (this.canvas.height / rect.height);
    const t = this.transform();
    const g = this.geom;
    const col = Math.floor((x - t.ox) / t.sx);
    let row = Math.floor((y - t.oy) / t.sy);
    if (col < 0 || col >= g.cols || row < 0 || row >= g.rows) return null;
    if (g.flip) row = g.rows - 1 - row;
    const zyx = { z: 0, y: 0, x: 0 };
    zyx[this.axis] = this.index;
    zyx[g.rowAxis] = row;
    zyx[g.colAxis] = col;
    return { row, col, zyx: [zyx.z, zyx.y, zyx.x] };
  }

  valueAt(row, col) {
    const i = row * this.geom.cols + col;
    return {
      hu: this.hu ? this.hu.data[i] : null,
      label: this.labels ? this.labels.data[i] : 0,
    };
  }
}
