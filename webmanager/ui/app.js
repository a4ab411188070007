// The Web Manager's shell: login, the connection line and read-only banner, navigation, and the page router.

import { Cluster } from "./connection.js";
import { h, message, replace } from "./dom.js";
import { OPERATE_PAGES } from "./operate.js";
import { ENGINEER_PAGES } from "./engineer.js";

const ROLES = ["viewer", "operator", "engineer", "admin"];
const PAGES = [...OPERATE_PAGES, ...ENGINEER_PAGES];
const cluster = new Cluster();
const el = (id) => document.getElementById(id);
let me = null;       // {user, role}
let scope = null;    // the shown page's timers and listeners

function can(role) {
  return !!me && ROLES.indexOf(me.role) >= ROLES.indexOf(role);
}

// What a page gets: where to draw, the API of the server the page talks to, and a scope that cleans up after it.
class PageScope {
  constructor(root) {
    this.root = root;
    this.cluster = cluster;
    this.cleanups = [];
    this.can = can;
    this.user = me.user;
  }

  async api(method, path, body) {
    return cluster.api(method, path, body);
  }

  // Run fn now and every `ms` while the page is shown; its errors go to the page's message line (until a run succeeds).
  every(ms, fn) {
    const run = () => fn().then(() => this.recovered(), (error) => this.fail(error));
    run();
    const id = setInterval(run, ms);
    this.cleanups.push(() => clearInterval(id));
  }

  on(type, fn) {
    const listener = (event) => fn(event.detail);
    cluster.addEventListener(type, listener);
    this.cleanups.push(() => cluster.removeEventListener(type, listener));
  }

  fail(error) {
    if (error.status === 401) return sessionEnded();
    const line = this.root.querySelector(".page-message");
    const where = error.body && error.body.active ? ` (the active server is ${error.body.active})` : "";
    if (line) message(line, `${error.message}${where}`, true);
  }

  recovered() {
    const line = this.root.querySelector(".page-message.error");
    if (line) {
      line.classList.remove("error");
      replace(line);
    }
  }

  leave() {
    this.cleanups.forEach((cleanup) => cleanup());
  }
}

function route() {
  if (!me) return;
  const id = location.hash.replace(/^#\//, "") || PAGES[0].id;
  const page = PAGES.find((p) => p.id === id && can(p.role)) || PAGES[0];
  if (scope) scope.leave();
  cluster.subscribe({ points: [], alarms: false });
  const main = el("main");
  const heading = h("h2", { tabindex: "-1" }, page.title);
  replace(main, heading, h("p", { class: "page-message", role: "status", "aria-live": "polite" }));
  scope = new PageScope(main);
  document.title = `${page.title} · Tandem`;
  for (const link of el("nav").querySelectorAll("a")) {
    if (link.dataset.page === page.id) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  page.render(scope).catch((error) => scope.fail(error));
  heading.focus({ preventScroll: true });
}

// On a standby (or while no server is active) every button that would change something is disabled.
function syncReadOnly(root = document) {
  const readOnly = !cluster.isActive;
  for (const button of root.querySelectorAll(".needs-active")) {
    if (readOnly && !button.disabled) {
      button.disabled = true;
      button.dataset.readOnly = "1";  // enabled again when this page's server is active, unless disabled for another reason
    } else if (!readOnly && button.dataset.readOnly) {
      button.disabled = false;
      delete button.dataset.readOnly;
    }
  }
}

new MutationObserver(() => syncReadOnly(el("main"))).observe(document.getElementById("main"), { childList: true, subtree: true });

function showConnection() {
  const role = cluster.role;
  const name = cluster.serverName(cluster.current);
  const line = el("connection");
  const banner = el("banner");
  syncReadOnly();
  if (!role) {
    line.textContent = `Connecting to ${name} …`;
    line.dataset.state = "connecting";
    return;
  }
  line.textContent = `Connected to ${role.node} (${role.role === "active" ? "active" : "standby, read-only"})`;
  line.dataset.state = role.role;
  line.dataset.node = role.node;
  banner.hidden = role.role === "active";
  if (role.role !== "active") {
    const activeUrl = role.active ? cluster.urlOf(role.active) : null;
    replace(
      banner,
      `${role.node} is a standby server: this page is read-only. `,
      activeUrl
        ? ["The active server is ", h("a", { href: `${activeUrl}/`, id: "active-link" }, role.active), "."]
        : "No server is active at the moment.",
    );
  }
}

function showLost(detail) {
  syncReadOnly();
  const line = el("connection");
  line.textContent = `${detail.why}: looking for the active server …`;
  line.dataset.state = "lost";
  el("banner").hidden = false;
  replace(el("banner"), `${detail.why}. Values shown may be old until the active server is found.`);
}

function buildNav() {
  replace(
    el("nav"),
    h("ul", {}, PAGES.filter((p) => can(p.role)).map((p) => h("li", {}, h("a", { href: `#/${p.id}`, "data-page": p.id }, p.title)))),
  );
  el("nav").hidden = false;
}

async function enter() {
  replace(el("whoami"), `${me.user} (${me.role})`);
  el("logout").hidden = false;
  const status = await cluster.learnServers();
  el("cluster-name").textContent = status.cluster;
  buildNav();
  cluster.connect();
  route();
}

function sessionEnded() {
  cluster.close();
  me = null;
  if (scope) scope.leave();
  showLogin("Your session has ended (expired, or the password changed): log in again.");
}

function showLogin(problem) {
  el("nav").hidden = true;
  el("logout").hidden = true;
  const user = h("input", { id: "login-user", name: "user", autocomplete: "username", required: true });
  const password = h("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const line = h("p", { class: "page-message", role: "alert" }, problem || "");
  const form = h(
    "form",
    { class: "login", onsubmit: async (event) => {
      event.preventDefault();
      try {
        me = await cluster.login(user.value, password.value);
        await enter();
      } catch (error) {
        me = null;
        message(line, error.message, true);
      }
    } },
    h("label", { for: "login-user" }, "User"), user,
    h("label", { for: "login-password" }, "Password"), password,
    h("button", { type: "submit" }, "Log in"),
    line,
  );
  replace(el("main"), h("h2", {}, "Log in"), form);
  user.focus();
}

async function start() {
  cluster.addEventListener("role", () => showConnection());
  cluster.addEventListener("server", () => { showConnection(); route(); });
  cluster.addEventListener("lost", (event) => showLost(event.detail));
  cluster.addEventListener("unauthorized", sessionEnded);
  window.addEventListener("hashchange", route);
  el("logout").addEventListener("click", async () => {
    await cluster.logout();
    me = null;
    if (scope) scope.leave();
    showLogin("Logged out.");
  });
  try {
    me = await cluster.request(cluster.home, "GET", "/api/v1/me");
  } catch (error) {
    return showLogin(error.status === 401 ? "" : error.message);
  }
  await enter();
}

start();
