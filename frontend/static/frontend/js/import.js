// Import page: upload with a byte progress bar (XMLHttpRequest), then follow the ingest task run live.
import { api, el, statusText } from "./api.js";
import { plainError, runRow } from "./taskruns.js";

const form = document.getElementById("import-form");
const status = document.getElementById("upload-status");
const bar = document.getElementById("upload-progress");
const runBox = document.getElementById("import-run");

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

function setStatus(text, kind = "") {
  status.replaceChildren(el("div", { class: `flash ${kind}`, role: kind === "error" ? "alert" : "status" }, text));
}

function upload(data) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/studies/import/");
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (event) => {
      if (!event.lengthComputable) return;
      const pct = Math.round((100 * event.loaded) / event.total);
      bar.firstElementChild.style.width = `${pct}%`;
      bar.setAttribute("aria-valuenow", pct);
      setStatus(`Uploading… ${pct}%`);
    };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { body = null; }
      if (xhr.status === 202) resolve(body);
      else reject(new Error((body && body.detail) || statusText(xhr.status, xhr.statusText)));
    };
    xhr.onerror = () => reject(new Error("The upload was interrupted; nothing was stored. Try again."));
    xhr.send(data);
  });
}

async function follow(run) {
  runBox.replaceChildren(runRow(run));
  if (run.state === "queued" || run.state === "running") {
    setTimeout(async () => follow(await api(`/api/task-runs/${run.id}/`)), 500);
    return;
  }
  if (run.state === "succeeded") {
    const link = el("a", { href: `/studies/${run.result.study_id}/`, "data-testid": "study-link" },
      `Open ${run.result.pseudonym}`);
    status.replaceChildren(el("div", { class: "flash success" }, `Imported ${run.result.volume_ids.length} volume(s). `, link));
  } else {
    setStatus(`Import ${run.state}: ${plainError(run.error || run.message)}`, "error");
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  for (const key of ["study", "pseudonym", "role"]) if (!data.get(key)) data.delete(key);
  // a new import: the previous one's outcome, run row and bar are cleared
  runBox.replaceChildren();
  bar.firstElementChild.style.width = "0%";
  bar.setAttribute("aria-valuenow", 0);
  setStatus("Uploading…");
  bar.hidden = false;
  form.querySelector("button").disabled = true;
  try {
    const run = await upload(data);
    setStatus("Uploaded; importing…");
    follow(run);
  } catch (err) {
    bar.hidden = true; // nothing was stored: no half-full bar left behind
    setStatus(err.message, "error");
  } finally {
    form.querySelector("button").disabled = false;
  }
});
