// Usage page (admins): GET /api/v1/usage as two tables, per user and per day, with totals; fair
// share (GET /api/v1/fairshare) and per-user GPU quotas (PUT/DELETE /api/v1/users/<name>/quota).
import { alertIn, api, clear, el, fmtBytes, toast } from "./app.js";

const form = document.getElementById("usage-form");
const since = document.getElementById("usage-since");
const until = document.getElementById("usage-until");
const who = document.getElementById("usage-user");
const errorBox = document.getElementById("usage-error");

const day = (d) => d.toISOString().slice(0, 10);
const hours = (s) => (s / 3600).toFixed(s && s < 36 ? 3 : 1);
const states = (m) => Object.entries(m).sort().map(([k, n]) => `${k.toLowerCase().replace("_", " ")} ${n}`).join(", ");

function row(first, u, total = false) {
  const cell = total ? "th" : "td";
  return el("tr", { class: total ? "total" : "" },
    el(cell, { "data-label": "", scope: total ? "row" : undefined }, first),
    el("td", { class: "num", "data-label": "Jobs" }, String(u.jobs)),
    el("td", { "data-label": "By end" }, states(u.states)),
    el("td", { class: "num", "data-label": "GPU-hours" }, hours(u.gpu_seconds)),
    el("td", { class: "num", "data-label": "CPU-hours" }, hours(u.cpu_seconds)),
    el("td", { class: "num", "data-label": "In" }, fmtBytes(u.bytes_in)),
    el("td", { class: "num", "data-label": "Out" }, fmtBytes(u.bytes_out)));
}

function fill(id, rows, key, total) {
  const table = document.getElementById(id);
  clear(table.tBodies[0], ...(rows.length ? rows.map((u) => row(u[key], u))
    : [el("tr", {}, el("td", { colspan: "7", class: "muted" }, "No jobs ended in this window."))]));
  clear(table.tFoot, row("Total", total, true));
}

async function load() {
  const q = new URLSearchParams({ since: since.value, until: until.value });
  if (who.value.trim()) q.set("user", who.value.trim());
  clear(errorBox);
  try {
    const answer = await api(`/usage?${q}`);
    fill("usage-by-user", answer.by_user, "user", answer.total);
    fill("usage-by-day", answer.by_day, "day", answer.total);
  } catch (e) {
    alertIn(errorBox, "error", e.message);
  }
}

const quotaForm = document.getElementById("quota-form");
const quotaUser = document.getElementById("quota-user");
const quotaGpus = document.getElementById("quota-gpus");
const quotaError = document.getElementById("quota-error");

async function loadShares() {
  try {
    const answer = await api("/fairshare");
    document.getElementById("share-policy").textContent = (answer.half_life_days
      ? `Among jobs of equal priority, users with less usage go first: GPU-hours (a CPU-hour counts ${answer.cpu_weight}) halve in weight every ${answer.half_life_days} days; running jobs count as they run.`
      : "Fair share by usage is off: users with fewer running jobs go first.")
      + ` Default GPU quota: ${answer.default_gpu_quota || "no limit"}.`;
    const body = document.getElementById("share-table").tBodies[0];
    clear(body, ...(answer.users.length ? answer.users.map((u) => el("tr", {},
      el("td", { "data-label": "User" }, u.user),
      el("td", { class: "num", "data-label": "Usage" }, u.usage_gpu_hours.toFixed(1)),
      el("td", { class: "num", "data-label": "GPUs held" }, String(u.gpus_held)),
      el("td", { class: "num", "data-label": "GPU quota" }, u.gpu_quota ? String(u.gpu_quota) : "no limit"),
      el("td", { "data-label": "Set by" }, u.quota_set_by || "default")))
      : [el("tr", {}, el("td", { colspan: "5", class: "muted" }, "No recent usage, no GPUs held, no quotas set."))]));
  } catch (e) {
    alertIn(quotaError, "error", e.message);
  }
}

async function changeQuota(reset) {
  const name = quotaUser.value.trim();
  clear(quotaError);
  if (!name) { alertIn(quotaError, "error", "Give the user's name."); return; }
  try {
    const path = `/users/${encodeURIComponent(name)}/quota`;
    const answer = reset ? await api(path, { method: "DELETE" })
      : await api(path, { method: "PUT", json: { gpus: Number(quotaGpus.value || 0) } });
    toast(`GPU quota of ${answer.user}: ${answer.gpu_quota || "no limit"}. Workers apply it within a minute.`);
    loadShares();
  } catch (e) {
    alertIn(quotaError, "error", e.message);
  }
}

quotaForm.addEventListener("submit", (e) => { e.preventDefault(); changeQuota(false); });
document.getElementById("quota-reset").addEventListener("click", () => changeQuota(true));
loadShares();

const now = new Date();
until.value = day(now);
since.value = day(new Date(now.getTime() - 29 * 86400e3));
form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
load();
