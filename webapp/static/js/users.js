// Users page (admins): list, create, disable/enable and delete users; see and revoke their tokens.
import { ME, alertIn, api, clear, confirmDialog, el, fmtTime, toast } from "./app.js";

const body = document.getElementById("users-body");
const usersError = document.getElementById("users-error");
let shownTokensOf = "";

function button(text, label, onclick, danger = false) {
  return el("button", { type: "button", class: `btn btn-small ${danger ? "btn-quiet-danger" : "btn-quiet"}`,
    "aria-label": label, onclick }, text);
}

async function load() {
  try {
    const { users } = await api("/users");
    clear(body, ...users.map((u) => el("tr", { dataset: { user: u.name } },
      el("td", { "data-label": "Name" }, el("strong", {}, u.name)),
      el("td", { "data-label": "Role" }, u.admin ? el("span", { class: "tag" }, "admin") : "user",
        u.disabled ? el("span", { class: "tag tag-bad" }, "disabled") : ""),
      el("td", { "data-label": "Created" }, fmtTime(u.created_at)),
      el("td", { class: "right" },
        button("Tokens", `Tokens of ${u.name}`, () => showTokens(u.name)),
        u.name === ME ? "" : button(u.disabled ? "Enable" : "Disable", `${u.disabled ? "Enable" : "Disable"} ${u.name}`,
          () => setDisabled(u, !u.disabled), !u.disabled),
        u.name === ME ? "" : button("Delete", `Delete ${u.name}`, () => remove(u), true)))));
  } catch (e) {
    alertIn(usersError, "error", e.message);
  }
}

async function setDisabled(u, disabled) {
  if (disabled && !await confirmDialog({
    title: `Disable ${u.name}?`,
    body: "They are logged out everywhere at once and their tokens stop working until you enable them again.",
    confirm: "Disable", cancel: "Keep them in",
  })) return;
  try {
    await api(`/users/${encodeURIComponent(u.name)}`, { method: "PATCH", json: { disabled } });
    toast(`${u.name} ${disabled ? "disabled" : "enabled"}.`);
    load();
  } catch (e) {
    alertIn(usersError, "error", e.message);
  }
}

async function remove(u) {
  if (!await confirmDialog({
    title: `Delete ${u.name}?`,
    body: "The account, its tokens and sessions are deleted; its jobs stay. This cannot be undone.",
    confirm: "Delete", cancel: "Keep it",
  })) return;
  try {
    await api(`/users/${encodeURIComponent(u.name)}`, { method: "DELETE" });
    toast(`${u.name} deleted.`);
    if (shownTokensOf === u.name) document.getElementById("user-tokens").hidden = true;
    load();
  } catch (e) {
    alertIn(usersError, "error", e.message);
  }
}

async function showTokens(name) {
  shownTokensOf = name;
  const box = document.getElementById("user-tokens");
  try {
    const { tokens } = await api(`/users/${encodeURIComponent(name)}/tokens`);
    document.getElementById("user-tokens-title").textContent = `Tokens of ${name}`;
    clear(document.getElementById("user-tokens-body"), ...tokens.map((t) => el("tr", { dataset: { token: t.id } },
      el("td", { "data-label": "Label" }, t.name || "(no label)"),
      el("td", { "data-label": "Id", class: "mono small" }, t.id),
      el("td", { "data-label": "Expires" }, t.expires_at ? fmtTime(t.expires_at) : "never"),
      el("td", { class: "right" }, button("Revoke", `Revoke token ${t.name || t.id} of ${name}`, async () => {
        try {
          await api(`/users/${encodeURIComponent(name)}/tokens/${encodeURIComponent(t.id)}`, { method: "DELETE" });
          toast("Token revoked.");
          showTokens(name);
        } catch (e) {
          alertIn(usersError, "error", e.message);
        }
      }, true)))));
    document.getElementById("user-tokens-table").hidden = tokens.length === 0;
    document.getElementById("user-tokens-empty").hidden = tokens.length > 0;
    box.hidden = false;
  } catch (e) {
    alertIn(usersError, "error", e.message);
  }
}

document.getElementById("user-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = document.getElementById("user-result");
  const name = document.getElementById("new-username");
  const password = document.getElementById("new-user-password");
  const admin = document.getElementById("new-user-admin");
  try {
    const { user } = await api("/users", { method: "POST", json: { username: name.value.trim(), password: password.value, admin: admin.checked } });
    alertIn(out, "ok", `Created ${user.admin ? "administrator" : "user"} ${user.name}. Tell them their password by a safe channel.`);
    name.value = password.value = "";
    admin.checked = false;
    load();
  } catch (e) {
    alertIn(out, "error", e.message);
  }
});

load();
