// Model registry page: models (activate / download for admins), inference launcher, weights upload, and the
// training and inference runs with live progress bars.
import { api, el, showError } from "./api.js";
import { startRunList } from "./taskruns.js";

const card = document.getElementById("models-card");
const isAdmin = card.dataset.admin === "1";
const tbody = document.querySelector("#models-table tbody");
const modelSelect = document.querySelector("#infer-form select[name=model_version]");
const trainRuns = document.getElementById("train-runs");
const inferRuns = document.getElementById("infer-runs");
const inferList = startRunList(inferRuns, { query: "?kind=infer", emptyText: "No inference runs yet." });
if (trainRuns) startRunList(trainRuns, { query: "?kind=train", emptyText: "No training runs yet." });

function fmtDate(iso) {
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function pct(value) {
  return typeof value === "number" ? `${(value * 100).toFixed(1)} %` : "—";
}

async function activate(model) {
  document.getElementById("models-error").replaceChildren();
  try {
    await api(`/api/models/${model.id}/activate/`, { method: "POST", body: {} });
  } catch (err) {
    showError(document.getElementById("models-error"), err.message);
  }
  loadModels();
}

function row(model) {
  const actions = el("div", { class: "actions" });
  if (isAdmin) {
    if (!model.is_active) actions.append(el("button", { class: "link", onclick: () => activate(model) }, "Activate"));
    actions.append(el("a", { href: `/api/models/${model.id}/download/`, download: "" }, "Download"));
  }
  if (model.training_run) actions.append(el("a", { href: `/models/train/?run=${model.training_run}` }, "Curves"));
  return el("tr", { id: `model-${model.id}`, dataset: { id: model.id, active: model.is_active } },
    el("td", {}, `#${model.id}`),
    el("td", {}, el("strong", {}, model.name), model.notes ? el("div", { class: "muted small" }, model.notes) : null),
    el("td", {}, model.is_active ? el("span", { class: "badge active" }, "active") : el("span", { class: "muted" }, "—")),
    el("td", {}, model.source),
    el("td", { class: "muted small", title: `sha256 ${model.sha256}` }, model.fingerprint),
    el("td", {}, pct(model.final_metrics.val_error)),
    el("td", {}, model.summary.iterations ?? "—"),
    el("td", {}, fmtDate(model.created_at), el("div", { class: "muted small" }, model.created_by || "")),
    el("td", {}, actions));
}

async function loadModels() {
  try {
    const page = await api("/api/models/?page_size=100");
    const models = page.results || [];
    tbody.replaceChildren(...(models.length ? models.map(row)
      : [el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No models yet: train one or import weights."))]));
    modelSelect.replaceChildren(...models.map((m) =>
      el("option", { value: m.id, selected: m.is_active ? "selected" : null }, `#${m.id} ${m.name}${m.is_active ? " (active)" : ""}`)));
  } catch (err) {
    showError(document.getElementById("models-error"), `Could not load models: ${err.message}`);
  }
}

document.getElementById("infer-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const errorBox = document.getElementById("infer-error");
  errorBox.replaceChildren();
  const body = { model_version: form.model_version.value ? Number(form.model_version.value) : null };
  if (form.study.value) body.study = Number(form.study.value);
  else body.cohort = form.cohort.value;
  body.candidate_min_hu = form.candidate_min_hu.value === "" ? null : Number(form.candidate_min_hu.value);
  if (form.prior_strength.value !== "") body.prior_strength = Number(form.prior_strength.value);
  if (form.bone_prior_strength.value !== "") body.bone_prior_strength = Number(form.bone_prior_strength.value);
  body.mirror = form.mirror.checked;
  try {
    await api("/api/inference/", { method: "POST", body });
    inferList.refresh();
  } catch (err) {
    showError(errorBox, err.message);
  }
});

const uploadForm = document.getElementById("upload-form");
if (uploadForm) {
  uploadForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const errorBox = document.getElementById("upload-error");
    errorBox.replaceChildren();
    const data = new FormData(uploadForm);
    if (!data.get("preset")) data.delete("preset");
    data.set("activate", uploadForm.activate.checked ? "true" : "false");
    try {
      const model = await api("/api/models/upload/", { method: "POST", body: data });
      uploadForm.reset();
      errorBox.replaceChildren(el("div", { class: "flash success" }, `Imported model #${model.id} (${model.fingerprint}).`));
      loadModels();
    } catch (err) {
      showError(errorBox, err.message);
    }
  });
}

loadModels();
