// Study list: filters apply as soon as a select changes (the form also works without JavaScript), and the
// "Label next" card: the five studies without approved labels where the active model is least sure of the
// vessels (GET /api/label-priorities/), each linked to its workspace, and how many studies have no prediction.
import { api, el } from "./api.js";

const form = document.getElementById("study-filters");
if (form) {
  for (const select of form.querySelectorAll("select")) {
    select.addEventListener("change", () => form.requestSubmit());
  }
}

const TOP = 5;
const card = document.getElementById("label-next");

function mm3(value) {
  return Number(value || 0).toLocaleString(undefined, { maximumFractionDigits: 0 });
}

function renderPriorities(body, data) {
  const ranked = data.ranked || [];
  const missing = data.without_prediction || [];
  const model = data.model_version || {};
  const parts = [el("p", { class: "small" }, "Ranked by model ", el("strong", {}, model.name || `#${model.id}`),
    ranked.length > TOP ? ` · top ${TOP} of ${ranked.length} predicted studies` : "")];
  if (ranked.length) {
    parts.push(el("table", { class: "data", dataset: { testid: "label-next-table" } },
      el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "Study"), el("th", {}, "Cohort"),
        el("th", { class: "num", title: "mean binary entropy of the vessel probability, 0 (sure) to 1 bit (a coin flip)" }, "Mean entropy (bits)"),
        el("th", { class: "num", title: "volume of the voxels where the model is unsure" }, "Uncertain (mm³)"))),
      el("tbody", {}, ...ranked.slice(0, TOP).map((r, i) => el("tr", { dataset: { studyId: r.study_id } },
        el("td", { class: "muted" }, String(i + 1)),
        el("td", {}, el("a", { href: `/studies/${r.study_id}/` }, r.pseudonym)),
        el("td", {}, el("span", { class: `badge cohort-${r.cohort}` }, r.cohort)),
        el("td", { class: "num" }, r.mean_entropy_bits === null || r.mean_entropy_bits === undefined ? "–" : Number(r.mean_entropy_bits).toFixed(2)),
        el("td", { class: "num" }, mm3(r.uncertain_mm3)))))));
  } else {
    parts.push(el("p", { class: "muted" }, "No study without approved labels has a prediction of this model yet."));
  }
  parts.push(el("p", { class: "small muted foot", dataset: { testid: "label-next-missing" } },
    missing.length
      ? `${missing.length} stud${missing.length === 1 ? "y has" : "ies have"} no prediction of this model: run inference on ${missing.length === 1 ? "it" : "them"} to rank ${missing.length === 1 ? "it" : "them"}.`
      : "Every study without approved labels has a prediction."));
  body.replaceChildren(...parts);
  if (data.measure) document.getElementById("label-next-measure").textContent = `Measure: ${data.measure}.`;
  card.dataset.ready = "1";
}

async function loadPriorities() {
  const body = document.getElementById("label-next-body");
  try {
    renderPriorities(body, await api("/api/label-priorities/"));
  } catch (err) {
    const noModel = err.status === 400 && /no active model/i.test(err.message);
    body.replaceChildren(el("p", { class: noModel ? "muted" : "flash error", dataset: { testid: "label-next-none" } },
      noModel ? "No active model: train or activate one to rank studies." : `The ranking could not be loaded: ${err.message}`));
    card.dataset.ready = "1";
  }
}

if (card) loadPriorities();
