// PACS page: browse a DICOMweb server's studies and series (QIDO-RS through /api/dicomweb/), select series,
// retrieve them into the normal ingest task (WADO-RS) and follow its run with the task-run progress bar; send a
// study's DLA series / an approved label version back (STOW-RS). Every error shows the server's words (server
// down, credentials refused, study gone, nothing selected).
import { api, el } from "./api.js";
import { plainError, runRow } from "./taskruns.js";

const searchForm = document.getElementById("pacs-search");
const searchStatus = document.getElementById("pacs-search-status");
const studiesBox = document.getElementById("pacs-studies");
const seriesCard = document.getElementById("pacs-series-card");
const seriesTitle = document.getElementById("pacs-series-study");
const seriesStatus = document.getElementById("pacs-series-status");
const seriesBox = document.getElementById("pacs-series");
const retrieveForm = document.getElementById("pacs-retrieve");
const retrieveStatus = document.getElementById("pacs-retrieve-status");
const retrieveRun = document.getElementById("pacs-retrieve-run");
const selectionCount = document.getElementById("pacs-selection-count");
const targetStudy = document.getElementById("pacs-target-study");
const sendForm = document.getElementById("pacs-send");
const sendStatus = document.getElementById("pacs-send-status");
const sendRun = document.getElementById("pacs-send-run");
const sendStudy = document.getElementById("pacs-send-study");
const sendVersion = document.getElementById("pacs-send-version");
const approved = JSON.parse(document.getElementById("pacs-approved-versions").textContent || "{}");

// what is being browsed: the server and study the series table shows
let current = { server: null, study: null };

function flash(box, text, kind = "") {
  const role = kind === "error" ? "alert" : "status";
  box.replaceChildren(el("div", { class: `flash ${kind}`.trim(), role }, ...[text].flat()));
}

function dicomDate(value) {
  return (value || "").replaceAll("-", "");
}

function shownDate(value) {
  const v = String(value || "");
  return /^\d{8}$/.test(v) ? `${v.slice(0, 4)}-${v.slice(4, 6)}-${v.slice(6)}` : v;
}

function count(value) {
  return value === null || value === undefined ? "?" : String(value);
}

// ------------------------------------------------------------------------------------------------ studies

function studyFilters(data) {
  const filters = {};
  for (const key of ["patient_name", "patient_id", "modality"]) {
    const value = String(data.get(key) || "").trim();
    if (value) filters[key] = value;
  }
  const from = dicomDate(data.get("date_from")), to = dicomDate(data.get("date_to"));
  if (from && to && from > to) throw new Error("The study date range ends before it starts.");
  if (from || to) filters.study_date = from === to ? from : `${from}-${to}`;
  return filters;
}

function studiesTable(server, studies) {
  if (!studies.length) return el("p", { class: "muted", "data-testid": "pacs-no-studies" },
    "No study on this server matches these filters.");
  const rows = studies.map((s) => {
    const open = () => loadSeries(server, s);
    return el("tr", { class: "clickable", dataset: { studyUid: s.study_uid }, onclick: open },
      el("td", {}, el("strong", {}, s.patient_name || "(no name)"), el("div", { class: "muted small" }, s.patient_id)),
      el("td", {}, shownDate(s.study_date)),
      el("td", {}, s.description || el("span", { class: "muted" }, "(no description)"),
        s.accession_number ? el("div", { class: "muted small" }, `accession ${s.accession_number}`) : null),
      el("td", {}, (s.modalities || []).join(", ")),
      el("td", { class: "num" }, count(s.series_count)),
      el("td", { class: "num" }, count(s.instance_count)),
      el("td", {}, s.imported_as ? el("span", { class: "imported" }, `imported as ${s.imported_as}`) : ""),
      el("td", {}, el("button", { type: "button", class: "link", "data-testid": "pacs-open-study",
        onclick: (event) => { event.stopPropagation(); open(); } }, "Series →")));
  });
  return el("table", { class: "data", "data-testid": "pacs-study-table" },
    el("thead", {}, el("tr", {}, ...["Patient", "Date", "Description", "Modalities", "Series", "Instances", "Here", ""]
      .map((h, i) => el("th", { class: i === 4 || i === 5 ? "num" : "" }, h)))),
    el("tbody", {}, ...rows));
}

searchForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(searchForm);
  const server = data.get("server");
  let filters;
  try { filters = studyFilters(data); } catch (err) { flash(searchStatus, err.message, "error"); return; }
  const button = searchForm.querySelector("button[type=submit]");
  button.disabled = true;
  if (current.server !== server) { // the series shown belong to another server's study
    current = { server: null, study: null };
    seriesCard.hidden = true;
  }
  flash(searchStatus, `Searching ${server}…`);
  try {
    const studies = await api(`/api/dicomweb/${encodeURIComponent(server)}/studies/`, { method: "POST", body: filters });
    searchStatus.replaceChildren(el("p", { class: "muted small" },
      `${studies.length} stud${studies.length === 1 ? "y" : "ies"} on ${server}${studies.length >= 100 ? " (the first 100: narrow the filters)" : ""}.`));
    studiesBox.replaceChildren(studiesTable(server, studies));
  } catch (err) {
    studiesBox.replaceChildren();
    flash(searchStatus, err.message, "error");
  } finally {
    button.disabled = false;
  }
});

// ------------------------------------------------------------------------------------------------ series

function selected() {
  return [...seriesBox.querySelectorAll("input[name=series]:checked")].map((box) => box.value);
}

function updateSelection() {
  const n = selected().length;
  selectionCount.textContent = n ? `${n} series selected` : "no series selected";
  for (const row of seriesBox.querySelectorAll("tbody tr")) {
    row.classList.toggle("selected", row.querySelector("input[name=series]").checked);
  }
  const all = seriesBox.querySelector("input[name=all-series]");
  if (all) {
    const boxes = seriesBox.querySelectorAll("input[name=series]");
    all.checked = boxes.length > 0 && n === boxes.length;
    all.indeterminate = n > 0 && n < boxes.length;
  }
}

function seriesTable(series) {
  if (!series.length) return el("p", { class: "muted" }, "This study has no series on the server.");
  const rows = series.map((s) => {
    const box = el("input", { type: "checkbox", name: "series", value: s.series_uid,
      "aria-label": `select series ${s.number ?? ""} ${s.description}`.trim(), onchange: updateSelection });
    const hereCell = s.imported_as
      ? el("span", { class: "imported small" }, `imported: ${s.imported_as.role} of `,
        s.imported_as.study_id
          ? el("a", { href: `/studies/${s.imported_as.study_id}/`, onclick: (event) => event.stopPropagation() },
            s.imported_as.study)
          : s.imported_as.study)
      : "";
    return el("tr", { class: "clickable", dataset: { seriesUid: s.series_uid },
      onclick: (event) => { if (event.target !== box) { box.checked = !box.checked; updateSelection(); } } },
      el("td", { class: "check" }, box),
      el("td", { class: "num" }, s.number ?? ""),
      el("td", {}, s.description || el("span", { class: "muted" }, "(no description)")),
      el("td", {}, s.modality),
      el("td", {}, shownDate(s.date)),
      el("td", {}, s.body_part || ""),
      el("td", { class: "num" }, count(s.instance_count)),
      el("td", {}, hereCell));
  });
  const all = el("input", { type: "checkbox", name: "all-series", "aria-label": "select all series",
    onchange: (event) => {
      for (const box of seriesBox.querySelectorAll("input[name=series]")) box.checked = event.target.checked;
      updateSelection();
    } });
  return el("table", { class: "data", "data-testid": "pacs-series-table" },
    el("thead", {}, el("tr", {}, el("th", { class: "check" }, all),
      ...["#", "Description", "Modality", "Date", "Body part", "Instances", "Here"]
        .map((h, i) => el("th", { class: i === 0 || i === 5 ? "num" : "" }, h)))),
    el("tbody", {}, ...rows));
}

async function loadSeries(server, study) {
  current = { server, study };
  for (const row of studiesBox.querySelectorAll("tbody tr")) {
    row.classList.toggle("selected", row.dataset.studyUid === study.study_uid);
  }
  seriesCard.hidden = false;
  seriesTitle.textContent = `${study.patient_name || "(no name)"} · ${shownDate(study.study_date)} · ${study.description || ""} (on ${server})`;
  seriesBox.replaceChildren();
  retrieveStatus.replaceChildren();
  flash(seriesStatus, "Loading the series…");
  try {
    const series = await api(`/api/dicomweb/${encodeURIComponent(server)}/series/`,
      { method: "POST", body: { study_uid: study.study_uid } });
    seriesStatus.replaceChildren();
    seriesBox.replaceChildren(seriesTable(series));
  } catch (err) {
    flash(seriesStatus, err.message, "error");
  }
  updateSelection();
  seriesCard.scrollIntoView({ block: "nearest" });
}

// ------------------------------------------------------------------------------------------------ retrieve

function follow(run, box, statusBox, { done }) {
  box.replaceChildren(runRow(run));
  if (run.state === "queued" || run.state === "running") {
    setTimeout(async () => {
      try {
        follow(await api(`/api/task-runs/${run.id}/`), box, statusBox, { done });
      } catch (err) {
        flash(statusBox, `Could not follow task #${run.id}: ${err.message}`, "error");
      }
    }, 500);
    return;
  }
  if (run.state === "succeeded") done(run);
  else flash(statusBox, `Task ${run.state}: ${plainError(run.error || run.message)}`, "error");
}

// a study the retrieve created becomes a choice of both study menus (as a target and to send results from)
function addStudyOption(id, pseudonym) {
  if (!id || !pseudonym) return;
  for (const select of [targetStudy, sendStudy]) {
    if ([...select.options].some((o) => o.value === String(id))) continue;
    const option = el("option", { value: id }, pseudonym);
    if (select === sendStudy) option.dataset.hasDla = "0";
    select.append(option);
  }
}

// pseudonym, cohort and injection site belong to a new study; an existing study keeps its own
function syncTarget() {
  for (const label of retrieveForm.querySelectorAll(".new-study-only")) label.hidden = Boolean(targetStudy.value);
}
targetStudy.addEventListener("change", syncTarget);
syncTarget();

retrieveForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const series = selected();
  if (!current.study) { flash(retrieveStatus, "Choose a study in the search results first.", "error"); return; }
  if (!series.length) {
    flash(retrieveStatus, "Nothing selected: tick the series to retrieve (the box in the header selects all).", "error");
    return;
  }
  const data = new FormData(retrieveForm);
  const role = data.get("role");
  if (role && series.length > 1) {
    flash(retrieveStatus, `One role (${role}) was chosen for ${series.length} series: select one series per role, or leave the role to be inferred from the DICOM tags.`, "error");
    return;
  }
  const body = {
    study_uid: current.study.study_uid,
    series_uids: series,
    cohort: data.get("cohort"),
    injection_site: data.get("injection_site"),
  };
  if (data.get("study")) body.study = Number(data.get("study"));
  else if (data.get("pseudonym")) body.pseudonym = data.get("pseudonym");
  if (role) body.role = role;
  const button = retrieveForm.querySelector("button[type=submit]");
  button.disabled = true;
  retrieveRun.replaceChildren();
  flash(retrieveStatus, `Starting the retrieve of ${series.length} series from ${current.server}…`);
  const { server, study } = current;
  try {
    const run = await api(`/api/dicomweb/${encodeURIComponent(server)}/retrieve/`, { method: "POST", body });
    flash(retrieveStatus, "Retrieving and importing…");
    follow(run, retrieveRun, retrieveStatus, {
      done: (finished) => {
        const result = finished.result || {};
        const link = el("a", { href: `/studies/${result.study_id}/`, "data-testid": "pacs-study-link" },
          `Open ${result.pseudonym}`);
        const skipped = (result.skipped || []).length ? ` Skipped ${result.skipped.length} file(s).` : "";
        flash(retrieveStatus, [`Imported ${(result.volume_ids || []).length} volume(s).${skipped} `, link], "success");
        addStudyOption(result.study_id, result.pseudonym);
        const row = studiesBox.querySelector(`tr[data-study-uid="${CSS.escape(study.study_uid)}"]`);
        if (row && result.pseudonym) {
          row.cells[6].replaceChildren(el("span", { class: "imported" }, `imported as ${result.pseudonym}`));
        }
        if (current.study === study) {
          api(`/api/dicomweb/${encodeURIComponent(server)}/series/`, { method: "POST", body: { study_uid: study.study_uid } })
            .then((rows) => { seriesBox.replaceChildren(seriesTable(rows)); updateSelection(); })
            .catch(() => {});
        }
      },
    });
  } catch (err) {
    flash(retrieveStatus, err.message, "error");
  } finally {
    button.disabled = false;
  }
});

// ------------------------------------------------------------------------------------------------ send back

function syncVersions() {
  const versions = approved[sendStudy.value] || [];
  sendVersion.replaceChildren(el("option", { value: "" }, versions.length ? "none" : "none approved"),
    ...versions.map((v) => el("option", { value: v.id }, `v${v.number}${v.message ? `: ${v.message}` : ""}`)));
  const option = sendStudy.selectedOptions[0];
  const dla = sendForm.querySelector("input[name=include_dla]");
  if (option && option.value) dla.checked = option.dataset.hasDla === "1";
}
sendStudy.addEventListener("change", syncVersions);
syncVersions();

sendForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(sendForm);
  const includeDla = data.get("include_dla") === "on";
  if (!data.get("study")) { flash(sendStatus, "Choose the study whose results to send.", "error"); return; }
  if (!includeDla && !data.get("label_version")) {
    flash(sendStatus, "Nothing to send: tick the 3D-DLA series and/or choose an approved label version.", "error");
    return;
  }
  const body = { study: Number(data.get("study")), include_dla: includeDla };
  if (data.get("label_version")) body.label_version = Number(data.get("label_version"));
  const server = data.get("server");
  const button = sendForm.querySelector("button[type=submit]");
  button.disabled = true;
  sendRun.replaceChildren();
  flash(sendStatus, `Sending to ${server}…`);
  try {
    const run = await api(`/api/dicomweb/${encodeURIComponent(server)}/send/`, { method: "POST", body });
    follow(run, sendRun, sendStatus, {
      done: (finished) => {
        const r = finished.result || {};
        flash(sendStatus, `${server} stored ${r.verified ?? r.instances} instance(s) (checked by querying it again).`, "success");
      },
    });
  } catch (err) {
    flash(sendStatus, err.message, "error");
  } finally {
    button.disabled = false;
  }
});
