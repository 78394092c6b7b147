// MIP view: rotating maximum intensity projection from the server's cine (36 cached angles), drag to rotate,
// play/pause, and the draft's vessel label projected on top.
import { api } from "./api.js";

const STEP_DEG = 10;

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`could not load ${url}`));
    img.src = url;
  });
}

async function checkedImage(url) {
  try {
    return await loadImage(url);
  } catch {
    // an <img> error hides the server's message: ask again for the JSON detail
    const response = await fetch(url, { credentials: "same-origin" });
    let detail = `${response.status} ${response.statusText}`;
    try { detail = (await response.json()).detail || detail; } catch { /* not JSON */ }
    throw new Error(detail);
  }
}

export class MipView {
  constructor(root, ws) {
    this.ws = ws;
    this.canvas = root.querySelector("canvas");
    this.errorBox = root.querySelector(".view-error");
    this.angleLabel = document.getElementById("mip-angle");
    this.status = document.getElementById("mip-status");
    this.playButton = document.getElementById("mip-play");
    this.vesselBox = document.getElementById("mip-vessels");
    this.angle = 0;
    this.images = new Map(); // angle -> Promise<Image>
    this.vessel = null; // {angle, revision, img}
    this.timer = null;
    this.token = 0;
    this.bind();
    new ResizeObserver(() => this.draw()).observe(this.canvas.parentElement);
  }

  bind() {
    let dragging = null;
    this.canvas.addEventListener("pointerdown", (e) => {
      dragging = { x: e.clientX, angle: this.angle };
      this.canvas.setPointerCapture(e.pointerId);
      this.pause();
    });
    this.canvas.addEventListener("pointermove", (e) => {
      if (!dragging) return;
      const angle = dragging.angle + (e.clientX - dragging.x) * 0.75;
      this.show(angle, { overlay: false });
    });
    const end = () => { if (dragging) { dragging = null; this.show(this.angle); } };
    this.canvas.addEventListener("pointerup", end);
    this.canvas.addEventListener("pointercancel", end);
    this.playButton.addEventListener("click", () => (this.timer ? this.pause() : this.play()));
    this.vesselBox.addEventListener("change", () => this.show(this.angle));
  }

  url(angle) {
    return `/api/volumes/${this.ws.volume.id}/mip/?angle=${angle}&size=256`;
  }

  async setVolume() {
    this.images.clear();
    this.token += 1;
    clearTimeout(this.cineTimer);
    this.show(this.angle);
    this.watchCine(this.token, true);
  }

  // Ask for the cine once if it is missing, then follow its run until all angles are cached.
  async watchCine(token, mayStart) {
    if (token !== this.token) return;
    try {
      const cine = await api(`/api/volumes/${this.ws.volume.id}/cine/`);
      if (token !== this.token) return;
      const active = cine.run && ["queued", "running"].includes(cine.run.state);
      if (cine.complete) {
        this.status.textContent = `${cine.angles.length} angles cached`;
        return;
      }
      if (!active && mayStart) {
        await api(`/api/volumes/${this.ws.volume.id}/cine/`, { method: "POST", body: {} });
        this.status.textContent = "cine queued: angles render in the background";
      } else if (active) {
        this.status.textContent = `cine ${cine.cached.length}/${cine.angles.length} angles`;
      } else {
        this.status.textContent = `cine ${cine.run ? cine.run.state : "missing"}; angles render on demand`;
        return;
      }
      this.cineTimer = setTimeout(() => this.watchCine(token, false), 2000);
    } catch (err) {
      this.status.textContent = `cine: ${err.message}`;
    }
  }

  image(angle) {
    if (!this.images.has(angle)) {
      const promise = checkedImage(this.url(angle));
      promise.catch(() => this.images.delete(angle));
      this.images.set(angle, promise);
    }
    return this.images.get(angle);
  }

  async show(angle, { overlay = true } = {}) {
    const snapped = ((Math.round(angle / STEP_DEG) * STEP_DEG) % 360 + 360) % 360;
    this.angle = snapped;
    this.angleLabel.textContent = `${snapped}°`;
    this.canvas.dataset.angle = String(snapped);
    const token = this.token;
    try {
      const img = await this.image(snapped);
      if (token !== this.token || snapped !== this.angle) return;
      this.current = img;
      this.errorBox.hidden = true;
      if (overlay) await this.loadVessel(snapped);
      this.draw();
    } catch (err) {
      if (snapped !== this.angle) return;
      this.errorBox.textContent = `MIP at ${snapped}°: ${err.message}`;
      this.errorBox.hidden = false;
      this.draw();
    }
  }

  async loadVessel(angle) {
    const draft = this.ws.draft;
    if (!this.vesselBox.checked || !draft) { this.vessel = null; return; }
    if (this.vessel && this.vessel.angle === angle && this.vessel.revision === draft.revision) return;
    try {
      const img = await loadImage(`/api/drafts/${draft.id}/mip/?angle=${angle}&size=256&label=1&rev=${draft.revision}`);
      this.vessel = { angle, revision: draft.revision, img };
    } catch {
      this.vessel = null;
    }
  }

  draw() {
    const box = this.canvas.parentElement;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.floor(box.clientWidth * dpr)), h = Math.max(1, Math.floor(box.clientHeight * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) { this.canvas.width = w; this.canvas.height = h; }
    const ctx = this.canvas.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, w, h);
    if (!this.current) return;
    const side = Math.min(w, h);
    const x = (w - side) / 2, y = (h - side) / 2;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(this.current, x, y, side, side);
    if (this.vessel && this.vessel.angle === this.angle && this.vesselBox.checked) {
      ctx.globalAlpha = 0.8;
      ctx.drawImage(this.vessel.img, x, y, side, side);
      ctx.globalAlpha = 1;
    }
  }

  rotate(stepDeg) { this.show(this.angle + stepDeg); }

  play() {
    this.playButton.textContent = "❚❚ Pause";
    this.timer = setInterval(() => this.show(this.angle + STEP_DEG, { overlay: false }), 120);
  }

  pause() {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = null;
    this.playButton.textContent = "▶ Play";
    this.show(this.angle);
  }

  refreshOverlay() { this.vessel = null; this.show(this.angle); }
}
