// Users page (admins): list and create users.
import { alertIn, api, clear, el, fmtTime } from "./app.js";

const body = document.getElementById("users-body");

async function load() {
  try {
    const { users } = await api("/users");
    clear(body, ...users.map((u) => el("tr", { dataset: { user: u.name } },
      el("td", { "data-label": "Name" }, el("strong", {}, u.name)),
      el("td", { "data-label": "Role" }, u.admin ? el("span", { class: "tag" }, "admin") : "user"),
      el("td", { "data-label": "Created" }, fmtTime(u.created_at)))));
  } catch (e) {
    alertIn(document.getElementById("users-error"), "error", e.message);
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
