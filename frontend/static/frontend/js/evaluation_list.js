// Evaluations page: the launch form posts to /api/evaluations/; a refusal shows the server's message (it lists
// the studies lacking predictions or approved labels); success opens the report page, which shows progress.
import { api, showError } from "./api.js";

const form = document.getElementById("eval-form");
const errorBox = document.getElementById("eval-error");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  errorBox.replaceChildren();
  const data = new FormData(form);
  const body = {
    cohorts: data.getAll("cohorts"),
    reference: data.get("reference"),
    ci_method: data.get("ci_method"),
    bright_hu: Number(data.get("bright_hu")),
    min_cluster_voxels: Number(data.get("min_cluster_voxels")),
    allow_missing: data.get("allow_missing") === "on",
  };
  if (data.get("model_version")) body.model_version = Number(data.get("model_version"));
  const button = document.getElementById("eval-launch");
  button.disabled = true;
  try {
    const evaluation = await api("/api/evaluations/", { method: "POST", body });
    window.location.assign(evaluation.report_url);
  } catch (err) {
    showError(errorBox, err.message);
    button.disabled = false;
  }
});
