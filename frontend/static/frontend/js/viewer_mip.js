// Rotating MIP viewer component: one or more canvases ("panes") that turn together through a fixed number of
// frames (frame i shows the angle round(i * 360 / frames)). The caller hands in the canvases and builds every URL
// (frameUrl, overlayUrl), so the viewer knows nothing about volumes, drafts or reading tokens and reads no DOM
// ids. Drag a canvas to rotate, play/pause, step, optional wheel zoom, optional overlay image per frame (drawn
// when the rotation rests), optional preloading of every frame. Used by the annotation workspace (one pane with
// the draft's vessel label on top) and the blinded reader workspace (panes "A" and "B", token URLs only).
//
// Window: one display window for every pane, with a small control (presets, and black/white points on the
// image's grey levels). A preset enters each frame URL through options.window.url (default: the MIP API's
// center/width in HU; "auto" measures the first pane's frame once at the full HU range and asks for that window,
// so a fill MIP is not a saturated white block). The black/white points remap the PNG's grey levels in the
// browser, identically for every pane. The reader workspace passes its server presets (named windows only, no
// HU, no auto) so both blinded images always share one display transform.

// HU windows of the MIP API (center, width), offered when the caller gives none; "auto" is measured.
export const HU_MIP_WINDOWS = [
  { name: "auto", label: "auto" },
  { name: "vessel", label: "vessel", center: 300, width: 1200 },
  { name: "bone", label: "bone", center: 500, width: 2500 },
  { name: "narrow", label: "narrow", center: 200, width: 1000 },
  { name: "full", label: "full range", center: 1024, width: 4096 },
];
const FULL_RANGE = { center: 1024, width: 4096 }; // -1024..3072 HU: what "auto" measures its window on

function withHuWindow(url, w) {
  const u = new URL(url, window.location.href);
  u.searchParams.delete("preset");
  u.searchParams.set("center", String(Math.round(w.center)));
  u.searchParams.set("width", String(Math.max(1, Math.round(w.width))));
  return u.pathname + u.search;
}

// The window [lo, hi] in HU that shows the in-volume pixels (grey > 0 at the full range) of `img` from their
// 1st to their 99.8th percentile; null when the frame shows nothing.
function measureWindow(img) {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  const counts = new Array(256).fill(0);
  let n = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] > 0) { counts[data[i]] += 1; n += 1; }
  if (n < 16) return null;
  const at = (q) => { let seen = 0; for (let g = 1; g < 256; g++) { seen += counts[g]; if (seen >= q * n) return g; } return 255; };
  const grey = (g) => FULL_RANGE.center - FULL_RANGE.width / 2 + (g / 255) * FULL_RANGE.width;
  const lo = grey(at(0.01)), hi = grey(Math.min(255, at(0.998) + 1));
  return { center: (lo + hi) / 2, width: Math.max(50, hi - lo) };
}

// The grey-level remapping of the black/white points (identity at 0/255), as a 256-entry table.
function levelTable(black, white) {
  const lut = new Uint8ClampedArray(256);
  const span = Math.max(1, white - black);
  for (let g = 0; g < 256; g++) lut[g] = Math.round(((g - black) / span) * 255);
  return lut;
}

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
   *   window          the display window of every pane (default: HU_MIP_WINDOWS, starting at "auto"); false: none
   *                   { presets: [{name, label, center?, width?}], value: name,
   *                     url(frameUrl, preset, measured) -> url   (default: center/width of the preset, or of the
   *                                                             measured window for "auto"),
   *                     levels: true (black/white point sliders), container: node for the control (default: an
   *                     overlay in the first canvas's parent box), testid: data-testid prefix ("mip-window"),
   *                     onChange(preset) }
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
      leveled: new Map(), // frame index -> canvas of the frame with the black/white points applied
    }));
    this.setupWindow(options.window);
    for (const pane of this.panes) this.bind(pane);
  }

  // ------------------------------------------------------------------------------------------------ window

  setupWindow(spec) {
    this.windowSpec = null;
    this.black = 0;
    this.white = 255;
    this.measured = null; // the "auto" window in HU, measured once per reload
    if (spec === false) return;
    const given = spec || {};
    const presets = given.presets || HU_MIP_WINDOWS;
    this.windowSpec = {
      presets,
      url: given.url || ((url, preset, measured) => {
        const w = preset.name === "auto" ? measured : preset;
        return w && w.center !== undefined ? withHuWindow(url, w) : url;
      }),
      levels: given.levels ?? true,
      testid: given.testid || "mip-window",
      onChange: given.onChange || (() => {}),
    };
    this.windowName = presets.some((p) => p.name === given.value) ? given.value : presets[0].name;
    this.buildWindowControl(given.container || null);
  }

  get windowPreset() {
    return this.windowSpec ? this.windowSpec.presets.find((p) => p.name === this.windowName) : null;
  }

  buildWindowControl(container) {
    const spec = this.windowSpec;
    const make = (tag, attrs = {}, ...children) => {
      const node = document.createElement(tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      node.append(...children);
      return node;
    };
    const select = make("select", { "data-testid": spec.testid, "aria-label": "MIP window", title: "Window of the MIP" },
      ...spec.presets.map((p) => { const o = make("option", { value: p.name }, p.label || p.name); o.selected = p.name === this.windowName; return o; }));
    select.addEventListener("change", () => this.setWindow(select.value));
    const parts = [make("span", {}, "Window"), select];
    if (spec.levels) {
      const slider = (name, value) => {
        const input = make("input", { type: "range", min: "0", max: "255", step: "1", value: String(value),
          "data-testid": `${spec.testid}-${name}`, "aria-label": `${name} point`, title: `${name} point (grey level)` });
        input.addEventListener("input", () => {
          const v = Number(input.value);
          if (name === "black") this.setLevels(Math.min(v, this.white - 1), this.white);
          else this.setLevels(this.black, Math.max(v, this.black + 1));
        });
        return input;
      };
      this.levelInputs = { black: slider("black", this.black), white: slider("white", this.white) };
      const reset = make("button", { type: "button", title: "Reset black and white points", "data-testid": `${spec.testid}-reset` }, "↺");
      reset.addEventListener("click", () => this.setLevels(0, 255));
      parts.push(make("span", {}, "black"), this.levelInputs.black, make("span", {}, "white"), this.levelInputs.white, reset);
    }
    const control = make("div", { class: "mip-window", "data-testid": `${spec.testid}-control` }, ...parts);
    Object.assign(control.style, { display: "inline-flex", gap: "6px", alignItems: "center", flexWrap: "nowrap" });
    for (const node of control.querySelectorAll("select, input")) Object.assign(node.style, { display: "inline-block", width: "auto", margin: "0" });
    for (const node of control.querySelectorAll("input")) node.style.width = "64px";
    if (container) {
      container.replaceChildren(control);
    } else {
      const box = this.panes[0]?.canvas.parentElement;
      if (!box) return;
      Object.assign(control.style, { position: "absolute", left: "6px", bottom: "6px", display: "flex", gap: "4px",
        alignItems: "center", padding: "2px 6px", font: "11px system-ui, sans-serif", color: "#b8c7d8",
        background: "rgba(12, 19, 27, 0.78)", borderRadius: "4px", zIndex: "2", opacity: "0.85" });
      for (const node of control.querySelectorAll("select, button")) {
        Object.assign(node.style, { font: "11px system-ui, sans-serif", padding: "1px 4px", minHeight: "0", height: "20px" });
      }
      for (const node of control.querySelectorAll("input")) Object.assign(node.style, { width: "56px", margin: "0" });
      if (getComputedStyle(box).position === "static") box.style.position = "relative";
      box.append(control);
    }
    this.windowSelect = select;
  }

  // Switch to the preset `name` (every pane; frames reload with it).
  setWindow(name) {
    if (!this.windowSpec || !this.windowSpec.presets.some((p) => p.name === name)) return;
    this.windowName = name;
    if (this.windowSelect) this.windowSelect.value = name;
    this.windowSpec.onChange(this.windowPreset);
    this.reload();
  }

  // Black and white points (grey levels 0..255) of every pane, applied in the browser to the loaded frames.
  setLevels(black, white) {
    this.black = Math.max(0, Math.min(254, Math.round(black)));
    this.white = Math.max(this.black + 1, Math.min(255, Math.round(white)));
    if (this.levelInputs) { this.levelInputs.black.value = String(this.black); this.levelInputs.white.value = String(this.white); }
    for (const pane of this.panes) pane.leveled.clear();
    this.draw();
  }

  frameUrlOf(pane, index) {
    const url = pane.frameUrl(this.angleOf(index));
    return this.windowSpec ? this.windowSpec.url(url, this.windowPreset, this.measured) : url;
  }

  // The frame as drawn: the image itself, or (black/white points set) a canvas with its grey levels remapped.
  leveledImage(pane) {
    const img = pane.current;
    if (!img || (this.black === 0 && this.white === 255)) return img;
    const cached = pane.leveled.get(pane.currentIndex);
    if (cached && cached.img === img) return cached.canvas;
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(img, 0, 0);
    const frame = ctx.getImageData(0, 0, canvas.width, canvas.height);
    const lut = levelTable(this.black, this.white);
    const d = frame.data;
    for (let i = 0; i < d.length; i += 4) { d[i] = lut[d[i]]; d[i + 1] = lut[d[i + 1]]; d[i + 2] = lut[d[i + 2]]; }
    ctx.putImageData(frame, 0, 0);
    pane.leveled.set(pane.currentIndex, { img, canvas });
    return canvas;
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
    for (const pane of this.panes) { pane.images.clear(); pane.loaded.clear(); pane.leveled.clear(); pane.overlay = null; }
    if (this.windowPreset?.name === "auto" && this.panes.length) {
      // measure once on the first pane's current frame at the full HU range, then load with that window
      const generation = this.generation;
      this.measured = null;
      const url = withHuWindow(this.panes[0].frameUrl(this.angleOf(this.index)), FULL_RANGE);
      loadImage(url).then((img) => measureWindow(img), () => null).then((w) => {
        if (generation !== this.generation) return;
        this.measured = w || FULL_RANGE;
        this.startLoading();
      });
      return;
    }
    this.startLoading();
  }

  startLoading() {
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

  get measuring() { return this.windowPreset?.name === "auto" && !this.measured; }

  image(pane, index) {
    if (this.measuring) return Promise.reject(new Error("measuring the window")); // reload() loads after it
    if (!pane.images.has(index)) {
      const generation = this.generation;
      const promise = (pane.onError ? checkedImage : loadImage)(this.frameUrlOf(pane, index));
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
    ctx.drawImage(this.leveledImage(pane), x, y, side, side);
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
