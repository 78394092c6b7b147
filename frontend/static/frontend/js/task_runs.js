// Task-run page: every visible run with live progress; admins can start a worker self-test.
import { api } from "./api.js";
import { startRunList } from "./taskruns.js";

const list = startRunList(document.getElementById("runs"), { emptyText: "No task runs yet." });
const form = document.getElementById("selftest-form");
if (form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try { await api("/api/task-runs/selftest/", { method: "POST", body: { steps: 10, step_s: 0.3 } }); }
    catch (err) { alert(err.message); }
    list.refresh();
  });
}
