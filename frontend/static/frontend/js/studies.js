// Study list: filters apply as soon as a select changes (the form also works without JavaScript).
const form = document.getElementById("study-filters");
if (form) {
  for (const select of form.querySelectorAll("select")) {
    select.addEventListener("change", () => form.requestSubmit());
  }
}
