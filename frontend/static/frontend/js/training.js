// Training page: launch form -> POST /api/training-runs/; the selected run is polled every second while it is
// active (progress bar with ETA, plotly curves of training loss and per-class validation error with the best
// validation marked, log tail, cancel). A finished run shows both the registered (best validation) weights and
// the last iteration with their validation errors, and the warning when validation diverged. Plotly is loaded by a classic <script> served from the installed python package (window.Plotly).
import { api, el, showError } from "./api.js";
import { CLASS_COLORS, CLASS_IDS, CLASS_LABELS, LABELED_CLASSES } from "./classes.js";
import { plainError } from "./taskruns.js";

const ACTIVE = new Set(["queued", "running"]);
// [name, line colour, display label] per labeled class, from the page's class definition (the overlay colours)
const NAME_OF = Object.fromEntries(Object.entries(CLASS_IDS).map(([name, id]) => [id, name]));
const CLASSES = LABELED_CLASSES.map((id) => [NAME_OF[id], `rgb(${CLASS_COLORS[id].slice(0, 3).join(",")})`, CLASS_LABELS[id]]);
const Plotly = window.Plotly;

const form = document.getElementById("train-form");
const formError = document.getElementById("form-error");
const runCard = document.getElementById("run-card");
const tableBody = document.querySelector("#runs-table tbody");
const cancelButton = document.getElementById("cancel-run");
let selected = runCard.dataset.selected ? Number(runCard.dataset.selected) : null;
let selectedTimer = null;
let listTimer = null;
let lastCurveKey = "";

const baseLayout = (title, ytitle, ylog) => ({
  title: { text: title, font: { size: 13, color: "#e6edf3" } },
  paper_bgcolor: "#0b1118", plot_bgcolor: "#0b1118",
  font: { color: "#8b9bb0", size: 11 },
  margin: { l: 55, r: 12, t: 36, b: ylog ? 42 : 78 },
  xaxis: { title: { text: "iteration" }, gridcolor: "#223041", zeroline: false },
  yaxis: { title: { text: ytitle }, gridcolor: "#223041", zeroline: false, type: ylog ? "log" : "linear" },
  legend: { orientation: "h", x: 0, y: -0.3, yanchor: "top", font: { size: 11 } },
  showlegend: !ylog,
});
const plotConfig = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

function fmtSeconds(s) {
  if (s === null || s === undefined || !isFinite(s)) return "?";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(sec).padStart(2, "0")}s` : `${sec}s`;
}

function drawCurves(detail) {
  if (!Plotly) return;
  const key = `${detail.id}:${detail.train_curve.length}:${detail.val_curve.length}:${detail.iteration}:${detail.run.state}`;
  if (key === lastCurveKey) return;
  lastCurveKey = key;
  const train = detail.train_curve;
  Plotly.react("loss-chart", [{
    x: train.map((p) => p[0]), y: train.map((p) => p[1]), type: "scatter", mode: "lines",
    name: "training loss", line: { color: "#4fb3ff", width: 1.5 },
  }], baseLayout("Training loss (class-balanced cross-entropy)", "loss", true), plotConfig);
  const val = detail.val_curve;
  const traces = CLASSES.map(([name, color, label]) => ({
    x: val.map((p) => p.iteration), y: val.map((p) => p[`val_err_${name}`]), type: "scatter",
    mode: "lines+markers", name: label, line: { color, width: 2 }, marker: { size: 5 },
  }));
  traces.push({ x: val.map((p) => p.iteration), y: val.map((p) => p.val_error), type: "scatter",
                mode: "lines", name: "mean", line: { color: "#d29922", dash: "dot", width: 2 } });
  const kept = keptWeights(detail);
  if (kept && kept.iteration !== null && kept.error !== null) {
    traces.push({ x: [kept.iteration], y: [kept.error], type: "scatter", mode: "markers",
                  name: kept.final ? "registered weights" : "best so far",
                  marker: { symbol: "star", size: 14, color: "#f0f6fc", line: { color: "#d29922", width: 1 } },
                  hovertemplate: `${kept.final ? "registered" : "best so far"}: iteration %{x}, mean error %{y:.4f}<extra></extra>` });
  }
  const layout = baseLayout("Validation error per class", "error (1 - accuracy)", false);
  layout.yaxis.rangemode = "tozero";
  Plotly.react("val-chart", traces, layout, plotConfig);
}

// The weights a run keeps: from the finished run's result (kept vs last iteration), else the best validation so
// far on the curve (lowest mean error; the trainer also asks for a minimum improvement).
function keptWeights(detail) {
  const result = detail.run && detail.run.result;
  if (result && result.kept_iteration !== undefined) {
    return { final: true, iteration: result.kept_iteration, error: result.kept_val_error, kind: result.kept_weights,
             last: result.last_iteration, lastError: result.last_val_error, warning: result.validation_warning || "" };
  }
  const val = (detail.val_curve || []).filter((p) => p.val_error !== null && p.val_error !== undefined);
  if (!val.length) return null;
  const best = val.reduce((a, b) => (b.val_error < a.val_error ? b : a));
  const last = val[val.length - 1];
  return { final: false, iteration: best.iteration, error: best.val_error, last: last.iteration, lastError: last.val_error, warning: "" };
}

function fmtError(e) {
  return e === null || e === undefined || !isFinite(e) ? "n/a" : e.toFixed(4);
}

function showWeights(detail) {
  const box = document.getElementById("run-weights") || (() => {
    const p = el("p", { id: "run-weights", class: "small" });
    document.getElementById("run-message").after(p);
    return p;
  })();
  const kept = keptWeights(detail);
  if (!kept) { box.replaceChildren(); box.hidden = true; return; }
  box.hidden = false;
  const lines = [];
  if (kept.final) {
    const what = kept.kind === "best" ? "best validation" : "last iteration (keep_weights = last)";
    lines.push(el("span", { dataset: { kept: kept.iteration } },
      `Registered weights: iteration ${kept.iteration} (${what}), validation error ${fmtError(kept.error)}`));
    lines.push(el("br"), el("span", { class: "muted", dataset: { last: kept.last } },
      `Last iteration: ${kept.last}, validation error ${fmtError(kept.lastError)}`));
    if (kept.warning) lines.push(el("br"), el("span", { class: "error-text", role: "alert" }, `Warning: ${kept.warning}`));
  } else if (ACTIVE.has(detail.run.state)) {
    lines.push(el("span", { class: "muted", dataset: { best: kept.iteration } },
      `Best validation so far: iteration ${kept.iteration}, error ${fmtError(kept.error)}; latest: iteration ${kept.last}, error ${fmtError(kept.lastError)}. The best validation's weights are the ones registered at the end.`));
  } else {
    lines.push(el("span", { class: "muted", dataset: { best: kept.iteration } },
      `Best validation: iteration ${kept.iteration}, error ${fmtError(kept.error)}; last validated: iteration ${kept.last}, error ${fmtError(kept.lastError)}.` +
      (detail.model_version ? " This run predates keeping the best weights: the last iteration's weights were registered." : "")));
  }
  box.replaceChildren(...lines);
}

function showRun(detail) {
  const run = detail.run;
  document.getElementById("run-title").textContent = `Run #${detail.id}${detail.name ? ` · ${detail.name}` : ""}`;
  const state = document.getElementById("run-state");
  state.textContent = run.state;
  state.className = `badge ${run.state}`;
  const pct = Math.round((run.progress || 0) * 100);
  const bar = document.getElementById("run-progress");
  bar.hidden = false;
  bar.className = `progress ${run.state}`;
  bar.setAttribute("aria-valuenow", pct);
  bar.firstElementChild.style.width = `${pct}%`;
  const parts = [`${pct}%`, `iteration ${detail.iteration}/${detail.max_iterations}`];
  if (detail.voxels_per_s) parts.push(`${Math.round(detail.voxels_per_s).toLocaleString()} voxels/s`);
  if (ACTIVE.has(run.state)) parts.push(`ETA ${fmtSeconds(detail.eta_s)}`);
  if (run.duration_s) parts.push(`elapsed ${fmtSeconds(run.duration_s)}`);
  const message = document.getElementById("run-message");
  // while running, the server's message repeats the numbers above; show it only when it says something else
  const extra = run.error ? plainError(run.error)
    : ACTIVE.has(run.state) && run.message.startsWith("iteration") ? "" : plainError(run.message);
  message.replaceChildren(parts.join(" · "), ...(extra ? [el("br"), extra] : []));
  message.className = run.error ? "error-text" : "muted";
  if (detail.model_version) {
    message.append(el("br"), "Registered as ", el("a", { href: `/models/#model-${detail.model_version}` },
                                                  `model #${detail.model_version}`));
  }
  cancelButton.hidden = !ACTIVE.has(run.state) || run.cancel_requested;
  const log = document.getElementById("run-log");
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.textContent = run.log_tail || "";
  if (atBottom) log.scrollTop = log.scrollHeight;
  showWeights(detail);
  drawCurves(detail);
  runCard.dataset.state = run.state;
}

async function pollSelected() {
  clearTimeout(selectedTimer);
  if (!selected) return;
  try {
    const detail = await api(`/api/training-runs/${selected}/`);
    showRun(detail);
    if (ACTIVE.has(detail.run.state)) selectedTimer = setTimeout(pollSelected, 1000);
    else refreshList();
  } catch (err) {
    document.getElementById("run-message").textContent = `Could not load run ${selected}: ${err.message}`;
    selectedTimer = setTimeout(pollSelected, 5000);
  }
}

function select(id) {
  selected = id;
  lastCurveKey = "";
  const url = new URL(window.location.href);
  url.searchParams.set("run", id);
  window.history.replaceState(null, "", url);
  for (const row of tableBody.querySelectorAll("tr")) row.classList.toggle("selected", Number(row.dataset.id) === id);
  pollSelected();
}

async function refreshList() {
  clearTimeout(listTimer);
  try {
    const page = await api("/api/training-runs/?page_size=50");
    const runs = page.results || [];
    tableBody.replaceChildren(...(runs.length ? runs.map((r) => {
      const pct = Math.round((r.run.progress || 0) * 100);
      const bar = el("div", { class: `progress small-bar ${r.run.state}` }, el("div", { class: "bar" }));
      bar.firstChild.style.width = `${pct}%`;
      return el("tr", { class: `clickable${r.id === selected ? " selected" : ""}`, dataset: { id: r.id, state: r.run.state },
                        onclick: () => select(r.id) },
        el("td", {}, `#${r.id}`), el("td", {}, r.name || "—"),
        el("td", {}, el("span", { class: `badge ${r.run.state}` }, r.run.state)),
        el("td", {}, bar, ` ${pct}%`), el("td", { class: "muted" }, plainError(r.run.message || "").slice(0, 90)),
        el("td", {}, r.run.created_by || ""),
        el("td", {}, r.model_version ? el("a", { href: `/models/#model-${r.model_version}` }, `#${r.model_version}`) : "—"));
    }) : [el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No training runs yet."))]));
    if (!selected && runs.length) select(runs[0].id);
    listTimer = setTimeout(refreshList, runs.some((r) => ACTIVE.has(r.run.state)) ? 2000 : 10000);
  } catch (err) {
    tableBody.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "error-text" }, `Could not load runs: ${err.message}`)));
    listTimer = setTimeout(refreshList, 10000);
  }
}

// The architecture select shows the fields of the chosen network only; hidden fields are disabled, so they are
// not sent and the API's defaults apply (the U-Net ignores the voxel preset and sampling mode).
function showArchitectureFields() {
  const arch = form.elements.architecture.value;
  for (const label of form.querySelectorAll("[data-arch]")) {
    const on = label.dataset.arch === arch;
    label.hidden = !on;
    label.style.display = on ? "" : "none"; // app.css gives labels display:block, which beats [hidden]
    for (const input of label.querySelectorAll("input, select")) input.disabled = !on;
  }
}
form.elements.architecture.addEventListener("change", showArchitectureFields);
showArchitectureFields();

function numberList(text) {
  return text.split(/[,\s]+/).filter(Boolean).map(Number);
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  formError.replaceChildren();
  const data = new FormData(form);
  const body = {};
  for (const [key, value] of data.entries()) {
    if (key === "activate" || key === "augment_mirror") continue;
    const input = form.elements[key];
    if (input.type === "number") body[key] = value === "" ? undefined : Number(value);
    else body[key] = value;
  }
  body.lr_values = numberList(data.get("lr_values"));
  body.lr_boundaries_epochs = numberList(data.get("lr_boundaries_epochs"));
  body.validation_cohort = data.get("validation_cohort") || null;
  body.activate = form.elements.activate.checked;
  body.augment_mirror = form.elements.augment_mirror.checked;
  const button = document.getElementById("launch");
  button.disabled = true;
  try {
    const started = await api("/api/training-runs/", { method: "POST", body });
    await refreshList();
    select(started.id);
  } catch (err) {
    showError(formError, err.message);
  } finally {
    button.disabled = false;
  }
});

// The studies of the chosen cohorts without an approved label version: training skips them (a cohort with
// none cannot train at all). Each links to its workspace, or to its review when the head version is submitted.
const lacking = JSON.parse(document.getElementById("lacking-labels").textContent);
const lackingBox = document.getElementById("lacking");
const STATUS_WORDS = { unlabeled: "no labels yet", none: "not submitted", submitted: "waiting for review", rejected: "rejected" };

function showLacking() {
  const cohorts = [form.elements.train_cohort.value, form.elements.validation_cohort.value].filter(Boolean);
  const groups = [...new Set(cohorts)].map((cohort) => {
    const studies = lacking[cohort] || [];
    if (!studies.length) return null;
    const items = studies.slice(0, 30).map((s) => el("li", { dataset: { studyId: s.id } },
      el("a", { href: s.status === "submitted" ? `/studies/${s.id}/?review=${s.head_id}` : `/studies/${s.id}/` }, s.pseudonym),
      el("span", { class: "muted" }, ` ${s.head ? `v${s.head} ` : ""}${STATUS_WORDS[s.status] || s.status}`)));
    if (studies.length > 30) items.push(el("li", { class: "muted" }, `… and ${studies.length - 30} more`));
    return el("div", { class: "lacking-group", dataset: { cohort } },
      el("strong", {}, `${studies.length} ${cohort} stud${studies.length === 1 ? "y lacks" : "ies lack"} approved labels`),
      el("span", { class: "muted small" }, " (skipped by training; approve them in the ", el("a", { href: "/reviews/" }, "review queue"), ")"),
      el("ul", { class: "lacking-list" }, ...items));
  }).filter(Boolean);
  lackingBox.replaceChildren(...groups);
  lackingBox.hidden = !groups.length;
}
form.elements.train_cohort.addEventListener("change", showLacking);
form.elements.validation_cohort.addEventListener("change", showLacking);
showLacking();

cancelButton.addEventListener("click", async () => {
  if (!selected) return;
  cancelButton.disabled = true;
  try {
    await api(`/api/task-runs/${selected}/cancel/`, { method: "POST", body: {} });
  } catch (err) {
    showError(formError, err.message);
  } finally {
    cancelButton.disabled = false;
    pollSelected();
  }
});

if (!Plotly) {
  document.getElementById("loss-chart").textContent = "plotly.js could not be loaded; curves are unavailable.";
}
refreshList();
if (selected) select(selected);
