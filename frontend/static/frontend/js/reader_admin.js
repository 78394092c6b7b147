// Admin list of reader studies and the form that creates one.
import { api, el, showError } from "./api.js";

const tbody = document.querySelector("#rs-table tbody");

async function load() {
  const page = await api("/api/reader-studies/?page_size=200");
  const rows = page.results || page;
  if (!rows.length) {
    tbody.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No reader studies yet.")));
    return;
  }
  tbody.replaceChildren(...rows.map((s) => el("tr", {},
    el("td", {}, el("a", { href: `/reader-studies/${s.id}/` }, s.title)),
    el("td", {}, el("span", { class: "badge" }, s.status)),
    el("td", {}, String(s.n_cases)), el("td", {}, String(s.n_readers)),
    el("td", {}, s.mode === "single" ? "single" : "side by side"),
    el("td", {}, el("a", { href: `/reader-studies/${s.id}/results/` }, "results")))));
}

document.getElementById("rs-create").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  document.getElementById("rs-create-error").replaceChildren();
  try {
    const s = await api("/api/reader-studies/", { method: "POST", body: {
      title: f.title.value, instructions: f.instructions.value, mode: f.mode.value,
      allow_edits: f.allow_edits.checked, with_default_questions: f.with_default_questions.checked } });
    window.location.href = `/reader-studies/${s.id}/`;
  } catch (err) {
    showError(document.getElementById("rs-create-error"), err.message);
  }
});

load().catch((err) => showError(tbody.parentElement.parentElement, err.message));
