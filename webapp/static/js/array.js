// Array page: a job array's counts per state and its jobs by index (GET /api/v1/arrays/<id>,
// polled while a job has not ended), and one button that cancels every job that has not ended.
import {
  TERMINAL, alertIn, api, badge, clear, confirmDialog, el, fmtDuration, queueText, runtimeOf, toast,
} from "./app.js";
import { countsText } from "./arrays.js";

const ID = document.getElementById("array-root").dataset.array;
const body = document.getElementById("array-body");
const summary = document.getElementById("array-summary");
const nameBox = document.getElementById("array-name");
const errorBox = document.getElementById("array-error");
const cancelBtn = document.getElementById("cancel-array");
let array = null;
let timer = null;

function render() {
  nameBox.textContent = `${array.name || "Job array"} · ${array.size} jobs`;
  const limit = array.limit ? `, at most ${array.limit} at once` : "";
  summary.textContent = `${countsText(array.counts)}${limit} · on ${array.workers.join(", ")}`;
  cancelBtn.hidden = array.ended;
  clear(body, ...array.jobs.map((job) => {
    const runtime = runtimeOf(job);
    return el("tr", { dataset: { id: job.id, state: job.state } },
      el("td", { class: "num", "data-label": "Index" }, String(job.array_index)),
      el("th", { scope: "row", "data-label": "Job" },
        el("a", { href: `/jobs/${encodeURIComponent(job.id)}`, class: "job-link mono" }, job.id)),
      el("td", { "data-label": "State" }, badge(job.state)),
      el("td", { class: "mono small", "data-label": "Worker" }, job.worker || "—"),
      el("td", { class: "queue", "data-label": "Queue" }, queueText(job) || "—"),
      el("td", { class: "num", "data-label": "Runtime" }, runtime === null ? "—" : fmtDuration(runtime)),
      el("td", { class: "num", "data-label": "Exit" }, job.exit_code === null ? "—" : String(job.exit_code)));
  }));
}

async function load() {
  clearTimeout(timer);
  try {
    array = (await api(`/arrays/${encodeURIComponent(ID)}`)).array;
    clear(errorBox);
    render();
  } catch (e) {
    alertIn(errorBox, "error", `Could not load the array: ${e.message}`);
  }
  if (!array || !array.ended) timer = setTimeout(load, 2000);
}

cancelBtn.addEventListener("click", async () => {
  const left = array.jobs.filter((j) => !TERMINAL.has(j.state)).length;
  const ok = await confirmDialog({
    title: `Cancel ${left} job${left === 1 ? "" : "s"} of this array?`,
    body: "Every job of it that has not ended is cancelled; running ones are stopped. Jobs that ended stay as they are. This cannot be undone.",
    confirm: "Cancel array",
    cancel: "Keep it",
  });
  if (!ok) return;
  cancelBtn.disabled = true;
  try {
    const data = await api(`/arrays/${encodeURIComponent(ID)}/cancel`, { method: "POST" });
    toast(`Cancelled ${data.cancelled.length} job${data.cancelled.length === 1 ? "" : "s"}.`);
    await load();
  } catch (e) {
    alertIn(errorBox, "error", `Could not cancel: ${e.message}`);
  } finally {
    cancelBtn.disabled = false;
  }
});

load();
