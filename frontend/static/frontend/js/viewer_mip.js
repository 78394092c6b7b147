// Rotating MIP viewer component: one or more canvases ("panes") that turn together through a fixed number of
// frames (frame i shows the angle round(i * 360 / frames)). The caller hands in the canvases and builds every URL
// (frameUrl, overlayUrl), so the viewer knows nothing about volumes, drafts or reading tokens and reads no DOM
// ids. Drag a canvas to rotate, play/pause, step, optional wheel zoom, optional overlay image per frame (drawn
// when the rotation rests), optional preloading of every frame. Used by the annotation workspace (one pane with
// the draft's vessel label on top) and the blinded reader workspace (panes "A" and "B", token URLs only).

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.decoding = "async";
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

export class RotatingMip {
  /**
   * panes: [{ canvas, frameUrl(angleDeg) -> url, overlayUrl?(angleDeg) -> url | null, onError?(message | null) }]
   *   A pane with onError gets the server's detail when a frame fails (and null once a frame loads); a pane
   *   without it just keeps the last frame it could draw.
   * options:
   *   frames          frames in one turn (default 36)
   *   fitCanvas       true: size each canvas's pixel buffer to its parent box (device pixels, follows resizes);
   *                   false: keep the canvas's own width/height (default false)
   *   preload         reload() loads every frame of every pane, the current frame first (default false: on demand)
   *   degreesPerPixel drag sensitivity, a number or (canvas) => number (default: one turn per 1.5 canvas widths)
   *   playIntervalMs  frame interval while playing (default 120)
   *   overlayAlpha    opacity of the overlay image (default 0.8)
   *   zoom            {min, max}: the wheel zooms between them; null: no zoom (default)
   *   onFrame({index, angle}), onPlaying(playing), onZoom(zoom), onProgress(remaining, total)
   */
  constructor(panes, options = {}) {
    this.frames = options.frames ?? 36;
    this.fitCanvas = options.fitCanvas ?? false;
    this.preload = options.preload ?? false;
    this.degreesPerPixel = options.degreesPerPixel ?? ((canvas) => 360 / (1.5 * Math.max(1, canvas.clientWidth)));
    this.playIntervalMs = options.playIntervalMs ?? 120;
    this.overlayAlpha = options.overlayAlpha ?? 0.8;
    this.zoomRange = options.zoom ?? null;
    this.callbacks = {
      onFrame: options.onFrame || (() => {}),
      onPlaying: options.onPlaying || (() => {}),
      onZoom: options.onZoom || (() => {}),
      onProgress: options.onProgress || (() => {}),
    };
    this.index = 0;
    this.zoom = 1;
    this.timer = null;
    this.generation = 0;
    this.panes = panes.map((p) => ({
      ...p,
      images: new Map(), // frame index -> Promise<Image>
      loaded: new Map(), // frame index -> Image, once loaded
      current: null, // the image drawn now
      currentIndex: -1,
      overlay: null, // {index, url, img}
    }));
    for (const pane of this.panes) this.bind(pane);
  }

  get playing() { return this.timer !== null; }

  angleOf(index) { return Math.round((index * 360) / this.frames); }

  wrap(index) { return ((Math.round(index) % this.frames) + this.frames) % this.frames; }

  bind(pane) {
    const canvas = pane.canvas;
    let drag = null;
    canvas.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, index: this.index };
      canvas.setPointerCapture(e.pointerId);
      canvas.classList.add("dragging");
      this.pause();
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const perPx = typeof this.degreesPerPixel === "function" ? this.degreesPerPixel(canvas) : this.degreesPerPixel;
      const frames = Math.round(((e.clientX - drag.x) * perPx * this.frames) / 360);
      this.show(drag.index + frames, { overlay: false });
    });
    const end = () => {
      if (!drag) return;
      drag = null;
      canvas.classList.remove("dragging");
      this.show(this.index);
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    if (this.zoomRange) {
      canvas.addEventListener("wheel", (e) => {
        e.preventDefault();
        this.setZoom(this.zoom * (e.deltaY < 0 ? 1.15 : 1 / 1.15));
      }, { passive: false });
    }
    if (this.fitCanvas) new ResizeObserver(() => this.drawPane(pane)).observe(canvas.parentElement);
  }

  // Forget every frame (new volume, new window) and show the current angle again; preload if asked to.
  reload() {
    this.generation += 1;
    for (const pane of this.panes) { pane.images.clear(); pane.loaded.clear(); pane.overlay = null; }
    if (this.preload) this.preloadAll();
    this.show(this.index);
  }

  preloadAll() {
    const generation = this.generation;
    const total = this.panes.length * this.frames;
    let remaining = total;
    this.callbacks.onProgress(remaining, total);
    const order = [...Array(this.frames).keys()].map((i) => (i + this.index) % this.frames);
    for (const pane of this.panes) {
      for (const i of order) {
        this.image(pane, i).catch(() => {}).finally(() => {
          if (generation !== this.generation) return;
          remaining -= 1;
          this.callbacks.onProgress(remaining, total);
        });
      }
    }
  }

  image(pane, index) {
    if (!pane.images.has(index)) {
      const generation = this.generation;
      const promise = (pane.onError ? checkedImage : loadImage)(pane.frameUrl(this.angleOf(index)));
      promise.then((img) => {
        if (generation !== this.generation) return;
        pane.loaded.set(index, img);
        if (index !== this.index) return;
        this.setCurrent(pane, index, img);
        this.drawPane(pane);
      }, (err) => {
        if (pane.images.get(index) === promise) pane.images.delete(index);
        if (generation === this.generation && index === this.index && pane.onError) {
          pane.onError(`MIP at ${this.angleOf(index)}°: ${err.message}`);
          this.drawPane(pane);
        }
      });
      pane.images.set(index, promise);
    }
    return pane.images.get(index);
  }

  setCurrent(pane, index, img) {
    pane.current = img;
    pane.currentIndex = index;
    if (pane.onError) pane.onError(null);
  }

  // Show frame `index` (wrapped) on every pane: at once when loaded, else when it arrives (the last frame stays
  // until then). The overlay loads unless the rotation is moving.
  show(index, { overlay = true } = {}) {
    const shown = (this.index = this.wrap(index));
    const angle = this.angleOf(shown);
    this.callbacks.onFrame({ index: shown, angle });
    const generation = this.generation;
    for (const pane of this.panes) {
      pane.canvas.dataset.angle = String(angle);
      const img = pane.loaded.get(shown);
      if (img) this.setCurrent(pane, shown, img);
      const ready = img ? Promise.resolve(img) : this.image(pane, shown);
      if (!overlay || !pane.overlayUrl) continue;
      ready.then(async () => {
        if (generation !== this.generation || shown !== this.index) return;
        await this.loadOverlay(pane, shown);
        if (generation === this.generation) this.drawPane(pane);
      }, () => {});
    }
    this.draw();
  }

  async loadOverlay(pane, index) {
    const url = pane.overlayUrl(this.angleOf(index));
    if (!url) { pane.overlay = null; return; }
    if (pane.overlay && pane.overlay.url === url) return;
    try {
      const img = await loadImage(url);
      if (index === this.index) pane.overlay = { index, url, img };
    } catch {
      pane.overlay = null;
    }
  }

  // The overlay changed (new draft revision, overlay switched on/off): reload it for the resting angle.
  refreshOverlay() {
    for (const pane of this.panes) pane.overlay = null;
    this.show(this.index);
  }

  draw() { for (const pane of this.panes) this.drawPane(pane); }

  drawPane(pane) {
    const canvas = pane.canvas;
    if (this.fitCanvas) {
      const box = canvas.parentElement;
      const dpr = window.devicePixelRatio || 1;
      const w = Math.max(1, Math.floor(box.clientWidth * dpr)), h = Math.max(1, Math.floor(box.clientHeight * dpr));
      if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    }
    const { width: w, height: h } = canvas;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, w, h);
    if (!pane.current) return;
    const side = Math.min(w, h) * this.zoom;
    const x = (w - side) / 2, y = (h - side) / 2;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(pane.current, x, y, side, side);
    const overlay = pane.overlay;
    if (overlay && overlay.index === this.index && pane.currentIndex === this.index) {
      ctx.globalAlpha = this.overlayAlpha;
      ctx.drawImage(overlay.img, x, y, side, side);
      ctx.globalAlpha = 1;
    }
  }

  step(frames) { this.show(this.index + frames); }

  play() {
    if (this.timer) return;
    this.timer = setInterval(() => this.show(this.index + 1, { overlay: false }), this.playIntervalMs);
    this.callbacks.onPlaying(true);
  }

  pause() {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = null;
    this.callbacks.onPlaying(false);
    this.show(this.index);
  }

  toggle() { if (this.timer) this.pause(); else this.play(); }

  setZoom(zoom) {
    if (!this.zoomRange) return;
    this.zoom = Math.min(this.zoomRange.max, Math.max(this.zoomRange.min, zoom));
    this.callbacks.onZoom(this.zoom);
    this.draw();
  }
}
