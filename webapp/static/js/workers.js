// Workers page: GPUs used, free and quarantined (why), load, datasets, image cache, drained; admins
// drain and undrain, quarantine and release GPUs, change the job slots live. Polls every 5 s.
import { IS_ADMIN, TERMINAL, alertIn, api, clear, el, fmtBytes, jobTitle, toast } from "./app.js";

const grid = document.getElementById("workers");
const errorBox = document.getElementById("workers-error");
const summary = document.getElementById("summary");
let timer = null;

function status(w) {
  if (!w.alive) return el("span", { class: "badge", "data-state": "LOST" }, "Down");
  if (w.drained) return el("span", { class: "badge", "data-state": "CANCELLED" }, "Drained");
  return el("span", { class: "badge", "data-state": "SUCCEEDED" }, "Up");
}

function gpuModels(w) {
  const counts = new Map();
  for (const g of w.gpus) {
    const key = `${g.name || "GPU"}${g.memory_mib ? ` · ${Math.round(g.memory_mib / 1024)} GiB` : ""}`;
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  return [...counts].map(([model, n]) => `${n} × ${model}`).join(", ");
}

async function gpuAction(w, index, release) {
  const url = `/workers/${encodeURIComponent(w.name)}/gpus/${index}/quarantine`;
  try {
    if (release) {
      await api(url, { method: "DELETE" });
      toast(`GPU ${index} of ${w.name} released.`);
    } else {
      const reason = window.prompt(`Why quarantine GPU ${index} of ${w.name}? (shown to users)`);
      if (!reason || !reason.trim()) return;
      await api(url, { method: "POST", json: { reason } });
      toast(`GPU ${index} of ${w.name} is quarantined: it gets no new jobs.`);
    }
  } catch (err) {
    alertIn(errorBox, "error", err.message);
    refresh(true);
    return;
  }
  refresh();
}

function gpuBoxes(w) {
  if (!w.gpus.length) return el("p", { class: "muted small" }, "No GPUs: runs CPU-only jobs.");
  const free = new Set(w.gpus_free || []);
  const sick = w.alive ? (w.quarantined || {}) : {};
  return [
    el("p", { class: "small gpu-models" }, gpuModels(w)),
    el("ul", { class: "gpus", "aria-label": `GPUs of ${w.name}` }, w.gpus.map((g) => {
      const why = sick[String(g.index)];
      const isFree = w.alive && free.has(g.index);
      const kind = why ? "quarantined" : (isFree ? "free" : "used");
      return el("li", { class: `gpu ${kind}`, title: why || `${g.name} ${g.uuid || ""}`, dataset: { gpu: g.index } },
        el("span", { class: "gpu-idx" }, `GPU ${g.index}`),
        el("span", { class: "gpu-state" }, why ? "quarantined" : isFree ? "free" : (w.alive ? "in use" : "—")),
        IS_ADMIN && w.alive && !why
          ? el("button", { type: "button", class: "btn btn-small btn-quiet", "aria-label": `Quarantine GPU ${g.index} of ${w.name}`,
            onclick: () => gpuAction(w, g.index, false) }, "Quarantine")
          : null);
    })),
    Object.keys(sick).length
      ? el("ul", { class: "quarantine-list small", "aria-label": `Quarantined GPUs of ${w.name}` },
        Object.entries(sick).sort((a, b) => Number(a[0]) - Number(b[0])).map(([index, why]) => el("li", {},
          el("strong", {}, `GPU ${index} quarantined: `), why,
          IS_ADMIN && why.startsWith("admin ")
            ? [" ", el("button", { type: "button", class: "btn btn-small", "aria-label": `Release GPU ${index} of ${w.name}`,
              onclick: () => gpuAction(w, index, true) }, "Release")]
            : null)))
      : null,
  ];
}

async function setSlots(w, value) {
  const url = `/workers/${encodeURIComponent(w.name)}/slots`;
  try {
    if (value === null) {
      await api(url, { method: "DELETE" });
      toast(`${w.name} is back to its configured job slots.`);
    } else {
      const asked = /^\d+$/.test(value) ? Number(value) : value;  // the server says what is allowed
      const done = await api(url, { method: "PUT", json: { slots: asked } });
      toast(`${w.name} runs at most ${done.slots} ${done.slots === 1 ? "job" : "jobs"} at once (running jobs go on).`);
    }
  } catch (err) {
    alertIn(errorBox, "error", err.message);
    refresh(true);
    return;
  }
  refresh();
}

/** The job slots in force, with the configured number while an admin's live setting differs;
 * admins change them here (no restart: the worker picks the change up within a moment). */
function slotsStat(w) {
  const configured = w.slots_configured;
  const changed = configured && configured !== w.max_parallel_jobs;
  const shown = [String(w.max_parallel_jobs), changed ? el("span", { class: "muted small" }, ` (configured ${configured})`) : null];
  if (!IS_ADMIN || !w.alive) return el("dd", { class: "slots" }, shown);
  const ask = () => {
    const value = window.prompt(`Job slots of ${w.name} (1 to 256; running jobs go on):`, String(w.max_parallel_jobs));
    if (value !== null && value.trim()) setSlots(w, value.trim());
  };
  return el("dd", { class: "slots" }, shown, " ",
    el("button", { type: "button", class: "btn btn-small btn-quiet", "aria-label": `Change job slots of ${w.name}`, onclick: ask },
      "Change"),
    changed ? [" ", el("button", { type: "button", class: "btn btn-small", "aria-label": `Reset job slots of ${w.name}`,
      onclick: () => setSlots(w, null) }, "Reset")] : null);
}

function card(w, mine) {
  const quarantined = w.alive ? Object.keys(w.quarantined || {}).length : 0;
  const used = w.alive ? w.gpus.length - (w.gpus_free || []).length - quarantined : 0;
  const actions = [];
  if (IS_ADMIN) {
    const undo = w.drained;
    actions.push(el("button", {
      type: "button", class: `btn btn-small ${undo ? "" : "btn-quiet"}`,
      "aria-label": `${undo ? "Undrain" : "Drain"} ${w.name}`,
      onclick: async (e) => {
        e.currentTarget.disabled = true;
        try {
          await api(`/workers/${encodeURIComponent(w.name)}/drain${undo ? "?undo=1" : ""}`, { method: "POST" });
          toast(undo ? `${w.name} takes jobs again.` : `${w.name} is drained: it takes no new jobs.`);
        } catch (err) {
          alertIn(errorBox, "error", err.message);
          refresh(true);
          return;
        }
        refresh();
      },
    }, undo ? "Undrain" : "Drain"));
  }
  return el("article", { class: "card worker", "aria-labelledby": `w-${w.name}`, dataset: { worker: w.name } },
    el("div", { class: "card-head" },
      el("h2", { id: `w-${w.name}`, class: "mono" }, w.name), status(w), el("div", { class: "card-tools" }, actions)),
    el("dl", { class: "stats" },
      el("div", {}, el("dt", {}, "GPUs used"), el("dd", {}, `${used} / ${w.gpus.length}`)),
      el("div", {}, el("dt", {}, "Running"), el("dd", {}, String(w.running))),
      el("div", {}, el("dt", {}, "Job slots"), slotsStat(w)),
      el("div", {}, el("dt", {}, "Queued"), el("dd", {}, String(w.queued))),
      el("div", {}, el("dt", {}, "CPUs"), el("dd", {}, String(w.cpus))),
      el("div", {}, el("dt", {}, "Memory"), el("dd", {}, fmtBytes(w.memory_bytes))),
      el("div", {}, el("dt", {}, "Disk free"), el("dd", {}, w.alive ? fmtBytes(w.disk_free_bytes) : "—")),
      el("div", {}, el("dt", {}, "Image cache"), el("dd", {}, w.alive ? fmtBytes(w.image_cache_bytes || 0) : "—"))),
    gpuBoxes(w),
    (w.datasets || []).length
      ? el("p", { class: "small" }, "Datasets: ", w.datasets.map((d, i) => [i ? ", " : "", el("code", {}, d)]))
      : null,
    mine.length
      ? el("div", { class: "mine" }, el("h3", {}, "Your jobs here"),
        el("ul", {}, mine.map((j) => el("li", {},
          el("a", { href: `/jobs/${encodeURIComponent(j.id)}` }, jobTitle(j)), " ",
          el("span", { class: "badge", "data-state": j.state }, j.state.toLowerCase())))))
      : null,
    el("p", { class: "muted small" }, `${(w.images || []).length} ${(w.images || []).length === 1 ? "image" : "images"} cached`));
}

/** Reload the page's data (every 5 s); ``keepMessage``: an action failed, its message stays up
 * until an action succeeds. */
async function refresh(keepMessage = false) {
  clearTimeout(timer);
  try {
    const [{ workers }, { jobs }] = await Promise.all([api("/workers"), api("/jobs?limit=200")]);
    if (!keepMessage) clear(errorBox);
    const active = jobs.filter((j) => !TERMINAL.has(j.state));
    clear(grid, ...workers.map((w) => card(w, active.filter((j) => j.worker === w.name))));
    if (!workers.length) clear(grid, el("div", { class: "card empty" }, el("p", {}, "No worker has registered yet.")));
    const up = workers.filter((w) => w.alive);
    const gpus = up.reduce((n, w) => n + w.gpus.length, 0);
    const free = up.reduce((n, w) => n + (w.drained ? 0 : (w.gpus_free || []).length), 0);
    const sick = up.reduce((n, w) => n + Object.keys(w.quarantined || {}).length, 0);
    summary.textContent = `${up.length} of ${workers.length} up · ${free} of ${gpus} GPUs free`
      + (sick ? ` · ${sick} quarantined.` : ".");
  } catch (e) {
    alertIn(errorBox, "error", e.message);
    keepMessage = false;  // this message is the page's own: the next load that works clears it
  }
  timer = setTimeout(() => refresh(keepMessage), 5000);
}

refresh();
