// Shared helpers of PINK's pages. Every page talks to the same JSON API as the CLI
// (/api/v1, docs/api.md) with the session cookie; state-changing calls carry the CSRF
// token. Data from the server is only ever put on the page as text (textContent), never as HTML.

export const CSRF = document.querySelector('meta[name="csrf-token"]')?.content || "";
export const ME = document.body.dataset.user || "";
export const IS_ADMIN = document.body.dataset.admin === "1";
export const TERMINAL = new Set(["SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "LOST"]);

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function toLogin() {
  const back = location.pathname + location.search;
  location.assign("/login?next=" + encodeURIComponent(back));
}

/** Call the JSON API; resolves to the parsed body (null for 204), throws ApiError. */
export async function api(path, { method = "GET", json, headers = {}, signal } = {}) {
  const h = { Accept: "application/json", ...headers };
  if (!["GET", "HEAD"].includes(method)) h["X-CSRF-Token"] = CSRF;
  let body;
  if (json !== undefined) {
    h["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let r;
  try {
    r = await fetch("/api/v1" + path, { method, headers: h, body, credentials: "same-origin", signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "Cannot reach the PINK server. Check your connection and try again.");
  }
  if (r.status === 401 && !path.startsWith("/me/password")) {
    toLogin();
    throw new ApiError(401, "Your session has ended. Please log in again.");
  }
  if (r.status === 204) return null;
  let data = null;
  try { data = await r.json(); } catch { /* not JSON */ }
  if (!r.ok) throw new ApiError(r.status, (data && data.error) || `The server answered ${r.status}.`);
  return data;
}

/** Build an element: el("a", {href: "/x", class: "y"}, "text", child). Strings become text. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

// ----- formatting ---------------------------------------------------------------------------

/** "2.5 GB"; with ``binary`` in powers of 1024 ("16 GiB"), as memory sizes are given. */
export function fmtBytes(n, binary = false) {
  if (n === null || n === undefined || Number.isNaN(n)) return "—";
  const [base, units] = binary ? [1024, ["B", "KiB", "MiB", "GiB", "TiB"]] : [1000, ["B", "KB", "MB", "GB", "TB"]];
  let i = 0;
  let v = Number(n);
  while (v >= base && i < units.length - 1) { v /= base; i++; }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  if (seconds < 10) return `${Math.max(0, seconds).toFixed(1)}s`;
  let s = Math.round(seconds);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return h ? `${d}d ${h}h` : `${d}d`;
  if (h) return m ? `${h}h ${String(m).padStart(2, "0")}m` : `${h}h`;
  if (m) return s ? `${m}m ${String(s).padStart(2, "0")}s` : `${m}m`;
  return `${s}s`;
}

const pad = (n) => String(n).padStart(2, "0");

export function fmtTime(ts) {
  if (!ts) return "—";
  const d = new Date(ts * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtAgo(ts, now = Date.now() / 1000) {
  if (!ts) return "—";
  const s = now - ts;
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return fmtTime(ts).slice(0, 10);
}

export function stateLabel(state) {
  return String(state).replace("_", " ").toLowerCase().replace(/^./, (c) => c.toUpperCase());
}

export function badge(state) {
  return el("span", { class: "badge", "data-state": state }, stateLabel(state));
}

/** Seconds the job has run: from start to end (or now while it runs). */
export function runtimeOf(job, now = Date.now() / 1000) {
  if (!job.started_at) return null;
  return (job.finished_at || (TERMINAL.has(job.state) ? job.updated_at : now)) - job.started_at;
}

export function gpuText(job) {
  if (!job.gpus) return "CPU";
  const idx = job.gpu_indices && job.gpu_indices.length ? ` (#${job.gpu_indices.join(", #")})` : "";
  return `${job.gpus}${idx}`;
}

export function queueText(job) {
  if (job.state === "QUEUED") {
    const pos = job.queue_position ? `#${job.queue_position}` : "queued";
    return job.waiting_reason ? `${pos} · ${job.waiting_reason}` : pos;
  }
  if (job.state === "UPLOADING") return "uploading";
  return "";
}

/** When a queued job starts at the latest, from the time limits of the jobs ahead (an upper
 * bound): "by ~14:32" (short) or the sentence that says so; "" when the server has no estimate. */
export function startsByText(job, short = false, now = Date.now() / 1000) {
  const at = job.estimated_start_at;
  if (job.state !== "QUEUED" || at === null || at === undefined) return "";
  if (at <= now + 1) return short ? "starts now" : "now";
  const d = new Date(at * 1000);
  const today = new Date(now * 1000).toDateString() === d.toDateString();
  const clock = `~${today ? "" : `${d.toLocaleDateString(undefined, { weekday: "short" })} `}${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (short) return `starts by ${clock}`;
  return `by ${clock} at the latest (in ${fmtDuration(at - now)}), if the jobs ahead use their full time limits`;
}

export function jobTitle(job) {
  return job.name || `job ${job.id.slice(-8)}`;
}

// ----- feedback ---------------------------------------------------------------------------

/** Put an alert into a container (replacing what was there); kind: error | ok | info. */
export function alertIn(container, kind, text, ...extra) {
  const node = el("div", { class: `alert alert-${kind}`, role: kind === "error" ? "alert" : "status" }, text, ...extra);
  clear(container, node);
  return node;
}

export function toast(text, kind = "ok") {
  const box = document.getElementById("toasts");
  const node = el("div", { class: `toast toast-${kind}` }, text);
  box.append(node);
  setTimeout(() => node.remove(), 5000);
}

/** Ask for confirmation in the page's modal dialog; resolves true when confirmed. */
export function confirmDialog({ title, body, confirm = "Confirm", cancel = "Keep it" }) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-body").textContent = body;
  document.getElementById("confirm-yes").textContent = confirm;
  document.getElementById("confirm-no").textContent = cancel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    document.getElementById("confirm-no").focus();
  });
}

export async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    if (button) {
      const old = button.textContent;
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = old; }, 1500);
    }
  } catch {
    toast("Copying failed: select the text and copy it by hand.", "error");
  }
}

// ----- live updates -----------------------------------------------------------------------

/** Follow GET /api/v1/events (server-sent events). ``onData(name, payload)`` on each event;
 * the element ``#live`` shows whether the page is live. Returns a function that stops. */
export function liveEvents(query, onData) {
  const indicator = document.getElementById("live");
  const show = (state, text) => {
    if (!indicator) return;
    indicator.dataset.state = state;
    indicator.textContent = text;
  };
  let source = null;
  let stopped = false;
  let failures = 0;
  const open = () => {
    if (stopped || document.hidden) return;
    const es = new EventSource("/api/v1/events" + (query ? "?" + query : ""));
    source = es;
    const handle = (name) => (ev) => {
      failures = 0;
      show("live", "Live");
      try { onData(name, JSON.parse(ev.data)); } catch (e) { console.error(e); }
    };
    es.addEventListener("jobs", handle("jobs"));
    es.addEventListener("job", handle("job"));
    es.addEventListener("problem", (ev) => {
      let msg = "The server has a problem";
      try { msg = JSON.parse(ev.data).error; } catch { /* keep */ }
      show("error", msg);
    });
    es.addEventListener("open", () => show("live", "Live"));
    es.addEventListener("error", async () => {
      if (stopped || es !== source) return;
      failures += 1;
      show("connecting", "Reconnecting…");
      if (es.readyState === EventSource.CLOSED || failures > 3) {
        // EventSource gives up on HTTP errors: find out whether the session ended.
        es.close();
        try { await api("/me"); } catch (e) { if (e.status === 401) return; }
        setTimeout(() => { if (!document.hidden && (!source || source.readyState === EventSource.CLOSED)) open(); },
          Math.min(30000, 1000 * 2 ** Math.min(failures, 5)));
      }
    });
  };
  // Browsers allow few connections per server over HTTP/1.1: a tab in the background gives
  // its stream back and catches up (the first event is a full snapshot) when shown again.
  const onVisibility = () => {
    if (stopped) return;
    if (document.hidden) {
      if (source) source.close();
      source = null;
      show("connecting", "Paused in the background");
    } else if (!source || source.readyState === EventSource.CLOSED) {
      open();
    }
  };
  document.addEventListener("visibilitychange", onVisibility);
  open();
  return () => {
    stopped = true;
    document.removeEventListener("visibilitychange", onVisibility);
    if (source) source.close();
    show("done", "Up to date");
  };
}

/** Format the byte counts put in [data-bytes] by templates. */
for (const node of document.querySelectorAll("[data-bytes]")) {
  node.textContent = fmtBytes(Number(node.dataset.bytes));
}
