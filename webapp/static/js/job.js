// Job page: details, what it runs with and timeline live through server-sent events, the log
// tail through GET /api/v1/jobs/<id>/logs?follow=1, cancel with confirmation, resubmit of ended jobs
// (with changes: command, environment, GPUs, time limit), delete of ended jobs with confirmation.
import {
  IS_ADMIN, ME, TERMINAL, alertIn, api, badge, clear, confirmDialog, copyText, el, fmtBytes, fmtDuration, fmtTime,
  gpuText, jobTitle, liveEvents, queueText, runtimeOf, startsByText, stateLabel, toast,
} from "./app.js";
import { parseEnv, shellJoin, shellSplit } from "./jobspec.js";

const root = document.getElementById("job-root");
const ID = root.dataset.job;
const facts = document.getElementById("facts");
const specBox = document.getElementById("spec");
const timeline = document.getElementById("timeline");
const output = document.getElementById("output");
const errorBox = document.getElementById("job-error");
const reasonBox = document.getElementById("job-reason");
const cancelBtn = document.getElementById("cancel");
const discardBox = document.getElementById("discard-box");
const discard = document.getElementById("discard");
const resubmitBtn = document.getElementById("resubmit");
const deleteBtn = document.getElementById("delete");
const resubmitDialog = document.getElementById("resubmit-dialog");
const resubmitForm = document.getElementById("resubmit-form");
const logBox = document.getElementById("log");
const logStatus = document.getElementById("log-status");
const logFollow = document.getElementById("log-follow");

const LOG_KEEP = 256 * 1024;  // characters kept on the page; the raw log link has it all
let job = null;
let stopEvents = null;
let logStarted = false;
let showEnvValues = false;

function fact(name, value, cls) {
  return [el("dt", {}, name), el("dd", { class: cls }, value)];
}

function endedAt(j) {
  const last = (j.history || []).at(-1);
  return last && TERMINAL.has(last.state) ? last.at : j.updated_at;
}

const OUTPUT_TEXT = {
  full: "the container's filesystem (.tar.zst)",
  changes: "what the job changed, and a list of what it deleted (.tar.zst)",
  none: "logs only",
};

function outputText(j) {
  const text = j.output && j.output.startsWith("path:") ? `only ${j.output.slice(5)} (.tar.zst)` : OUTPUT_TEXT[j.output] || j.output;
  return j.discard_output ? `${text}, thrown away by the cancel` : text;
}

/** The archive's top entries (changes and path: modes), largest first. */
function entriesList(j) {
  const entries = j.output_entries || [];
  if (!entries.length) return null;
  return el("div", { id: "output-entries" },
    el("p", { class: "muted small" }, "It holds:"),
    el("ul", { class: "entries mono small" }, ...entries.map((e) => el("li", { "data-type": e.type },
      e.name, " ", el("span", { class: "muted" }, e.type === "deleted" ? "(deleted)" : `(${e.type}, ${fmtBytes(e.bytes)})`)))));
}

function renderFacts() {
  const runtime = runtimeOf(job);
  const rows = [
    fact("User", job.user),
    fact("Worker", job.worker || "—", "mono"),
    fact("GPUs", job.gpus ? gpuText(job) : "none (CPU only)"),
    fact("Time limit", fmtDuration(job.timeout_s)),
    fact("Output", outputText(job)),
    fact("Priority", String(job.priority)),
    fact("Image", el("span", { class: "mono", title: job.image_id || null }, job.image_id ? job.image_id.slice(0, 19) + "…" : "—")),
    // The image's own size (its worker counts it when the job starts), and what was sent for this job.
    fact("Image size", fmtBytes(job.image_size || null)),
    fact("Uploaded", job.image_bytes ? fmtBytes(job.image_bytes)
      : (job.image_id && job.state !== "UPLOADING" ? "nothing (its worker held the image)" : "—")),
    fact("Exit code", job.exit_code === null || job.exit_code === undefined ? "—" : String(job.exit_code),
      job.exit_code ? "bad" : ""),
    fact("Runtime", fmtDuration(runtime)),
    fact("GPU time", job.gpus ? fmtDuration(job.gpu_seconds) : "—"),
    ...gpuUseFacts(job),
    fact("Submitted", fmtTime(job.created_at)),
    fact("Started", fmtTime(job.started_at)),
    fact("Ended", fmtTime(job.finished_at || (TERMINAL.has(job.state) ? endedAt(job) : null))),
  ];
  if (job.state === "QUEUED" || job.state === "UPLOADING") rows.splice(2, 0, fact("Queue", queueText(job)));
  if (job.state === "QUEUED") {
    rows.splice(3, 0, fact("Starts", startsByText(job)
      || "unknown (the worker is down or drained, or the job waits for something no time limit frees)"));
  }
  if (job.array_id) {
    rows.push(fact("Array", el("span", {}, `index ${job.array_index} of ${job.array_size} in `,
      el("a", { href: `/arrays/${encodeURIComponent(job.array_id)}`, class: "mono", id: "job-array-link" }, job.array_id))));
  }
  if (job.resubmit_of) {
    rows.push(fact("Resubmit of", el("a", { href: `/jobs/${encodeURIComponent(job.resubmit_of)}`, class: "mono" }, job.resubmit_of)));
  }
  rows.push(...endFacts(job));
  clear(facts, ...rows.flat());
}

/** The GPU samples of its run (its worker's NVML), when it has them. */
function gpuUseFacts(job) {
  if (job.gpu_util_mean === null || job.gpu_util_mean === undefined) return [];
  return [
    fact("GPU utilisation", `mean ${job.gpu_util_mean}%, max ${job.gpu_util_max}%`, "job-gpu-util"),
    fact("GPU memory peak", fmtBytes(job.gpu_mem_peak_bytes, true), "job-gpu-mem"),
  ];
}

/** What happens when the job ends: its retry chain (retry of X, retried as Y) and notifications. */
function endFacts(job) {
  const link = (id) => el("a", { href: `/jobs/${encodeURIComponent(id)}`, class: "mono" }, id);
  const rows = [];
  if (job.retry_of) rows.push(fact("Retry of", link(job.retry_of)));
  if (job.retried_by) rows.push(fact("Retried as", link(job.retried_by)));
  else if (job.retry_note) rows.push(fact("Retry", job.retry_note));
  if (job.retry_lost) rows.push(fact("Retries if lost", String(job.retry_lost)));
  const wants = [job.notify ? "e-mail" : "", job.webhook || ""].filter(Boolean);
  if (wants.length) {
    const when = job.notified_at ? `sent ${fmtTime(job.notified_at)}` : "when it ends";
    rows.push(fact("Notify", `${wants.join(", ")} (${when})${job.notify_note ? ": " + job.notify_note : ""}`));
  }
  return rows;
}

/** The job's variables: names, and the values to its owner on request (the API shows others "***"). */
function envFact(env) {
  if (!env.length) return "none of its own (only PINK's)";
  const owner = job.user === ME;
  const list = el("ul", { class: "env-list", id: "env-list" }, env.map(([name, value]) =>
    el("li", {}, el("code", { class: "break" }, owner && showEnvValues ? `${name}=${value}` : name))));
  const toggle = owner
    ? el("button", {
      type: "button", class: "btn btn-small", id: "env-toggle", "aria-pressed": String(showEnvValues),
      onclick: () => { showEnvValues = !showEnvValues; renderSpec(); document.getElementById("env-toggle").focus(); },
    }, showEnvValues ? "Hide values" : "Show values")
    : el("span", { class: "muted small" }, "The values are the owner's only.");
  return [list, toggle];
}

function renderSpec() {
  const code = (text) => el("code", { class: "break" }, text);
  const ep = job.entrypoint;
  const rows = [
    fact("Command", job.command ? code(shellJoin(job.command)) : "the image's"),
    fact("Entrypoint", ep ? (ep.length ? code(shellJoin(ep)) : "none (the image's is cleared)") : "the image's"),
    fact("Working directory", job.workdir ? code(job.workdir) : "the image's"),
    fact("Datasets", (job.datasets || []).length
      ? job.datasets.map((d) => el("span", { class: "block" }, code(d), " at ", code(`/data/${d}`)))
      : "none"),
    fact("Input", job.input ? el("span", {}, el("code", { class: "break", id: "job-input" }, job.input), " at ", code("/in")) : "none"),
    fact("CPUs", job.cpus ? String(job.cpus) : "no limit"),
    fact("Memory", job.memory_bytes ? fmtBytes(job.memory_bytes, true) : "no limit"),
    fact("Shared memory", job.shm_bytes ? fmtBytes(job.shm_bytes, true) : "64 MiB (docker's default)"),
    fact("Environment", envFact(Object.entries(job.env || {}))),
  ];
  clear(specBox, ...rows.flat());
}

function renderTimeline() {
  const items = (job.history || []).map((h, i, all) => {
    const next = all[i + 1];
    const until = next ? next.at : (TERMINAL.has(h.state) ? null : Date.now() / 1000);
    return el("li", { class: "tl-item", dataset: { state: h.state } },
      el("span", { class: "tl-dot", "aria-hidden": "true" }),
      el("div", { class: "tl-body" },
        el("div", { class: "tl-head" }, badge(h.state),
          el("time", { datetime: new Date(h.at * 1000).toISOString(), title: fmtTime(h.at) },
            // The date once; later entries of the same day show the time only.
            i > 0 && fmtTime(h.at).slice(0, 10) === fmtTime(all[i - 1].at).slice(0, 10) ? fmtTime(h.at).slice(11) : fmtTime(h.at)),
          until ? el("span", { class: "muted small" }, `for ${fmtDuration(until - h.at)}`) : null),
        h.reason ? el("p", { class: "tl-reason" }, h.reason) : null));
  });
  clear(timeline, ...items);
}

function renderOutput() {
  if (!TERMINAL.has(job.state)) {
    clear(output, el("p", { class: "muted" }, job.output === "none"
      ? "This job keeps no files; its log is below."
      : `Its output, ${outputText(job)}, can be downloaded here when the job ends.`));
    return;
  }
  if (!job.output_bytes) {
    clear(output, el("p", { class: "muted" }, job.output === "none" ? "This job kept no files (logs only)."
      : job.discard_output ? "Its cancel threw its files away: there is no archive." : "This job left no archive."));
    return;
  }
  if (job.output_expires_at && job.output_expires_at < Date.now() / 1000) {
    clear(output, el("p", { class: "muted", id: "expires" },
      `The worker deleted this job's archive and log on ${fmtTime(job.output_expires_at)}.`));
    return;
  }
  const href = `/api/v1/jobs/${encodeURIComponent(job.id)}/output`;
  const copy = el("button", { type: "button", class: "btn btn-small", onclick: (e) => copyText(job.output_sha256, e.currentTarget) }, "Copy");
  clear(output,
    el("div", { class: "download" },
      el("a", { class: "btn btn-primary", href, download: `pink-${job.id}.tar.zst`, id: "download" },
        `Download pink-${job.id}.tar.zst`),
      el("span", { class: "muted" }, fmtBytes(job.output_bytes))),
    el("div", { class: "copy-row" }, el("span", { class: "muted small" }, "SHA-256"),
      el("code", { class: "mono small break", id: "sha256" }, job.output_sha256), copy),
    el("p", { class: "muted small" }, `A zstd-compressed tar of ${outputText(job).replace(" (.tar.zst)", "")}: `,
      el("code", {}, `zstd -dc pink-${job.id}.tar.zst | tar -x`), "."),
    entriesList(job),
    job.output_expires_at ? el("p", { class: "muted small", id: "expires" },
      `The worker keeps it until ${fmtTime(job.output_expires_at)}.`) : null);
}

function render() {
  document.title = `${jobTitle(job)} · PINK`;
  document.getElementById("job-name").textContent = jobTitle(job);
  clear(document.getElementById("job-state"), badge(job.state));
  renderFacts();
  renderSpec();
  renderTimeline();
  renderOutput();
  const ended = TERMINAL.has(job.state);
  cancelBtn.hidden = ended;
  discardBox.hidden = job.state !== "RUNNING" || job.output === "none";
  resubmitBtn.hidden = !(ended && job.image_id && job.user === ME);
  deleteBtn.hidden = !(ended && (job.user === ME || IS_ADMIN));
  const reason = job.reason || (job.state === "QUEUED" ? job.waiting_reason : "");
  reasonBox.hidden = !reason;
  reasonBox.className = `alert ${ended && job.state !== "SUCCEEDED" ? "alert-error" : "alert-info"}`;
  reasonBox.textContent = reason || "";
  if (ended && stopEvents) { stopEvents(); stopEvents = null; }
  if (!logStarted && !["UPLOADING", "QUEUED"].includes(job.state)) { logStarted = true; followLog(); }
  if (!logStarted) logStatus.textContent = "The log starts when the job does.";
}

// ----- log tail -------------------------------------------------------------------------------

function appendLog(text) {
  logBox.append(document.createTextNode(text));
  if (logBox.textContent.length > LOG_KEEP * 1.5) {
    const keep = logBox.textContent.slice(-LOG_KEEP);
    logBox.textContent = "…(earlier lines: open the raw log)\n" + keep.slice(keep.indexOf("\n") + 1);
  }
  if (logFollow.checked) logBox.scrollTop = logBox.scrollHeight;
}

async function followLog() {
  let offset = 0;
  const decoder = new TextDecoder();
  for (let attempt = 0; attempt < 1000; attempt++) {
    if (!job) return;  // deleted meanwhile
    const ended = TERMINAL.has(job.state);
    logStatus.textContent = ended ? "Loading the log…" : "Following the log as it grows…";
    try {
      const r = await fetch(`/api/v1/jobs/${encodeURIComponent(ID)}/logs?offset=${offset}${ended ? "" : "&follow=1"}`,
        { credentials: "same-origin" });
      if (!r.ok) {
        let msg = `The server answered ${r.status}.`;
        try { msg = (await r.json()).error || msg; } catch { /* keep */ }
        if (r.status === 410) { logStatus.textContent = msg; return; }  // deleted: retrying cannot help
        throw new Error(msg);
      }
      const reader = r.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        offset += value.length;
        appendLog(decoder.decode(value, { stream: true }));
      }
      appendLog(decoder.decode());
      if (ended || TERMINAL.has(job.state)) {
        const latest = await api(`/jobs/${encodeURIComponent(ID)}`).catch(() => null);
        if (latest && latest.job) job = latest.job;
        if (!ended) continue;  // one last read from where we are, now that it has ended
        logStatus.textContent = offset ? `End of the log (${fmtBytes(offset)}).` : "The job wrote nothing to its log.";
        return;
      }
    } catch (e) {
      logStatus.textContent = `Log interrupted: ${e.message} Retrying…`;
      await new Promise((res) => setTimeout(res, 2000));
    }
  }
}

// ----- actions --------------------------------------------------------------------------------

cancelBtn.addEventListener("click", async () => {
  const ok = await confirmDialog({
    title: `Cancel ${jobTitle(job)}?`,
    body: job.state !== "RUNNING" ? "The job will not run. This cannot be undone."
      : "The container is stopped (SIGTERM, then SIGKILL after a grace period). This cannot be undone. "
        + (discard.checked ? "What it wrote is thrown away." : "What it wrote so far is kept as its output."),
    confirm: "Cancel job",
    cancel: "Keep it running",
  });
  if (!ok) return;
  cancelBtn.disabled = true;
  try {
    const query = discard.checked && !discardBox.hidden ? "?discard=1" : "";
    const data = await api(`/jobs/${encodeURIComponent(ID)}/cancel${query}`, { method: "POST" });
    job = data.job;
    render();
    toast(job.state === "EXPORTING" ? "Stopping the job: what it wrote is kept as its output." : "Job cancelled.");
  } catch (e) {
    alertIn(errorBox, "error", `Could not cancel: ${e.message}`);
  } finally {
    cancelBtn.disabled = false;
  }
});

resubmitBtn.addEventListener("click", () => {
  // Prefilled with what the job ran with; the changes go as the resubmit's JSON body.
  document.getElementById("rs-command").value = job.command ? shellJoin(job.command) : "";
  document.getElementById("rs-env").value = Object.entries(job.env || {}).map(([k, v]) => `${k}=${v}`).join("\n");
  document.getElementById("rs-gpus").value = String(job.gpus);
  document.getElementById("rs-timeout").value = String(job.timeout_s);
  clear(document.getElementById("resubmit-error"));
  resubmitDialog.showModal();
  document.getElementById("rs-command").focus();
});

function resubmitChanges() {
  const line = document.getElementById("rs-command").value.trim();
  const gpus = Number(document.getElementById("rs-gpus").value);
  const timeout = Number(document.getElementById("rs-timeout").value);
  if (!Number.isInteger(gpus) || gpus < 0 || gpus > 64) throw new Error("GPUs must be a whole number from 0 to 64.");
  if (!Number.isInteger(timeout) || timeout < 1 || timeout > 7 * 86400) {
    throw new Error("The time limit must be between 1 second and 7 days (604800 seconds).");
  }
  return {
    command: line ? shellSplit(line) : null,
    env: parseEnv(document.getElementById("rs-env").value),
    gpus,
    timeout,
  };
}

document.getElementById("rs-cancel").addEventListener("click", () => resubmitDialog.close());

// Enter in a field submits too (the Resubmit button is the form's only submit button).
resubmitForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  const box = document.getElementById("resubmit-error");
  const button = document.getElementById("rs-submit");
  button.disabled = true;
  try {
    const data = await api(`/jobs/${encodeURIComponent(ID)}/resubmit`, { method: "POST", json: resubmitChanges() });
    location.assign(`/jobs/${encodeURIComponent(data.job.id)}`);
  } catch (err) {
    alertIn(box, "error", `Could not resubmit: ${err.message}`);
    button.disabled = false;
  }
});

deleteBtn.addEventListener("click", async () => {
  const ok = await confirmDialog({
    title: `Delete ${jobTitle(job)}?`,
    body: "Its record, output archive and log are deleted for good; downloads of it stop working. This cannot be undone.",
    confirm: "Delete job",
    cancel: "Keep it",
  });
  if (!ok) return;
  deleteBtn.disabled = true;
  try {
    const data = await api(`/jobs/${encodeURIComponent(ID)}`, { method: "DELETE" });
    showDeleted(`You deleted job ${ID}. Its output and log are being removed from worker ${data.deleted.worker}.`);
  } catch (e) {
    alertIn(errorBox, "error", `Could not delete: ${e.message}`);
    deleteBtn.disabled = false;
  }
});

/** The page of a job that no longer exists: the reason, and the way back. */
function showDeleted(text) {
  if (stopEvents) { stopEvents(); stopEvents = null; }
  job = null;
  document.getElementById("job-actions").hidden = true;
  document.querySelector(".grid-job").hidden = true;
  reasonBox.hidden = true;
  document.getElementById("live").textContent = "Deleted";
  alertIn(errorBox, "info", text, " ", el("a", { href: "/jobs" }, "Back to your jobs"));
}

// ----- start ----------------------------------------------------------------------------------

async function start() {
  try {
    job = (await api(`/jobs/${encodeURIComponent(ID)}`)).job;
  } catch (e) {
    if (e.status === 410) { showDeleted(`${e.message}.`); return; }
    alertIn(errorBox, "error", e.status === 404 ? `There is no job ${ID} (or it is not yours).` : e.message);
    document.getElementById("live").textContent = "";
    return;
  }
  render();
  if (!TERMINAL.has(job.state)) {
    stopEvents = liveEvents(`job=${encodeURIComponent(ID)}`, (name, data) => {
      if (name !== "job" || !data.job) return;
      clear(errorBox);
      job = data.job;
      render();
    });
  } else {
    const live = document.getElementById("live");
    live.dataset.state = "done";
    live.textContent = `${stateLabel(job.state)} ${fmtTime(job.finished_at || job.updated_at)}`;
  }
}

// Runtimes and the time in the current state tick without a round trip.
setInterval(() => {
  if (!job || TERMINAL.has(job.state)) return;
  renderTimeline();
  if (job.started_at) renderFacts();
}, 1000);
start();
