// Account page: API tokens for the CLI (list, create, revoke), the job-end e-mail setting and the password.
import { ME, alertIn, api, clear, confirmDialog, copyText, el, fmtTime, toast } from "./app.js";

const body = document.getElementById("tokens-body");
const table = document.getElementById("tokens-table");
const emptyNote = document.getElementById("tokens-empty");
const tokensError = document.getElementById("tokens-error");

async function loadTokens() {
  try {
    const { tokens } = await api("/tokens");
    tokens.sort((a, b) => b.created_at - a.created_at);
    clear(body, ...tokens.map((t) => el("tr", { dataset: { token: t.id } },
      el("td", { "data-label": "Label" }, t.name || "(no label)"),
      el("td", { "data-label": "Id", class: "mono small" }, t.id),
      el("td", { "data-label": "Created" }, fmtTime(t.created_at)),
      el("td", { class: "right" }, el("button", {
        type: "button", class: "btn btn-small btn-quiet-danger", "aria-label": `Revoke token ${t.name || t.id}`,
        onclick: () => revoke(t),
      }, "Revoke")))));
    table.hidden = tokens.length === 0;
    emptyNote.hidden = tokens.length > 0;
  } catch (e) {
    alertIn(tokensError, "error", e.message);
  }
}

async function revoke(t) {
  const ok = await confirmDialog({
    title: `Revoke “${t.name || t.id}”?`,
    body: "Programs that use this token are logged out at once. This cannot be undone.",
    confirm: "Revoke", cancel: "Keep it",
  });
  if (!ok) return;
  try {
    await api(`/tokens/${encodeURIComponent(t.id)}`, { method: "DELETE" });
    toast("Token revoked.");
  } catch (e) {
    alertIn(tokensError, "error", e.message);
  }
  loadTokens();
}

document.getElementById("site-url").textContent = location.origin;
document.getElementById("token-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const label = document.getElementById("token-label");
  const password = document.getElementById("token-password");
  clear(tokensError);
  try {
    // Minting a long-lived credential asks for the password again, as `pink login` does.
    const data = await api("/tokens", { method: "POST", json: { username: ME, password: password.value, name: label.value } });
    document.getElementById("token-secret").textContent = data.token;
    document.getElementById("token-new").hidden = false;
    password.value = "";
    label.value = "";
    loadTokens();
  } catch (e) {
    alertIn(tokensError, "error", e.status === 401 ? "That password is wrong." : e.message);
    password.focus();
  }
});
document.getElementById("token-copy").addEventListener("click", (e) =>
  copyText(document.getElementById("token-secret").textContent, e.currentTarget));

document.getElementById("password-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = document.getElementById("password-result");
  const old = document.getElementById("old-password");
  const a = document.getElementById("new-password");
  const b = document.getElementById("new-password2");
  if (a.value !== b.value) { alertIn(out, "error", "The two new passwords differ."); b.focus(); return; }
  if (a.value.length < 8) { alertIn(out, "error", "The new password needs at least 8 characters."); a.focus(); return; }
  try {
    await api("/me/password", { method: "POST", json: { old_password: old.value, new_password: a.value } });
    alertIn(out, "ok", "Password changed.");
    old.value = a.value = b.value = "";
  } catch (e) {
    alertIn(out, "error", e.message.replace(/^./, (c) => c.toUpperCase()) + ".");
  }
});

loadTokens();

const notifyEmail = document.getElementById("notify-email");
const notifyAll = document.getElementById("notify-all");
const notifyOut = document.getElementById("notify-result");

async function loadNotify() {
  try {
    const me = await api("/me");
    notifyEmail.value = me.email || "";
    notifyAll.checked = Boolean(me.notify_all);
    if (!me.email_enabled) {
      document.getElementById("notify-status").textContent = "This PINK sends no e-mail: its operator configured no mail relay.";
      for (const input of document.querySelectorAll("#notify-form input, #notify-form button")) input.disabled = true;
    }
  } catch (e) {
    alertIn(notifyOut, "error", e.message);
  }
}

document.getElementById("notify-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  clear(notifyOut);
  try {
    const me = await api("/me", { method: "PATCH", json: { email: notifyEmail.value.trim(), notify_all: notifyAll.checked } });
    alertIn(notifyOut, "ok", me.email ? `Saved: job-end e-mail goes to ${me.email}${me.notify_all ? " for every job" : ""}.` : "Saved: no job-end e-mail.");
  } catch (e) {
    alertIn(notifyOut, "error", e.message.replace(/^./, (c) => c.toUpperCase()) + ".");
  }
});
loadNotify();
