// Dashboard: the user's active task runs (live) and, for annotators, the studies to label.
import { api, el } from "./api.js";
import { startRunList } from "./taskruns.js";

startRunList(document.getElementById("active-runs"), { query: "?active=1", emptyText: "Nothing running right now." });

const studies = document.getElementById("studies-list");
if (studies) {
  api("/api/studies/?page_size=10").then((page) => {
    const items = (page.results || []).map((s) =>
      el("li", {}, el("a", { href: `/studies/${s.id}/` }, s.pseudonym), " ",
         el("span", { class: "muted" }, `${s.cohort} · ${s.label_status || "no labels"}`)));
    if (items.length) {
      studies.replaceChildren(...items);
      document.querySelector("#studies-card [data-empty]")?.remove();
    }
  }).catch(() => {});
}
