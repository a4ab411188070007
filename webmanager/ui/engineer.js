// The engineers' and administrators' pages: schedule editor, logic editor (checked before saving), users, plugins, audit.

import { h, message, parseInput, replace, table, time, value } from "./dom.js";

const td = (...children) => h("td", {}, ...children);
const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

// Change one kind of entry in the building configuration as it is now (`change(entries)` -> entries) and check it (or
// apply it) on the server: the server's validation is the only one, so the messages name the entry and field exactly
// as `tandem config apply` does. Only that section goes back and forth (?kinds=), however many points the building
// has. If-Match makes the server refuse (412) if anybody changed the building in between.
async function saveEntries(page, kind, change, apply) {
  const cluster = page.cluster;
  const { data: building, headers } = await cluster.exchange(cluster.current, "GET", `/api/v1/config?kinds=${kind}`);
  building[kind] = change(building[kind] || []);
  const path = `/api/v1/config?kinds=${kind}${apply ? "" : "&check=1"}`;
  return (await cluster.exchange(cluster.current, "POST", path, building, undefined, { "If-Match": headers.get("ETag") })).data;
}

const upsert = (entry) => (entries) =>
  entries.some((e) => e.name === entry.name) ? entries.map((e) => (e.name === entry.name ? entry : e)) : [...entries, entry];
const without = (name) => (entries) => entries.filter((e) => e.name !== name);

function problemList(error) {
  const problems = (error.body && error.body.problems) || [];
  return h("ul", { class: "problems", role: "alert" }, (problems.length ? problems : [error.message]).map((p) => h("li", {}, p)));
}

// An editor card's buttons: check, save and delete its entry; the verdict goes to `verdict`, and after a change is
// committed `saved(text)` draws the editors anew from the configuration.
function editorActions(page, { verdict, build, kind, name, saved }) {
  async function run(change, apply) {
    replace(verdict);
    try {
      const answer = await saveEntries(page, kind, change, apply);
      if (apply) await saved(`Saved: ${answer.changed} change(s) committed.`);
      else replace(verdict, h("p", { class: "message ok", role: "status" }, `Valid: ${answer.changed} change(s) to apply.`));
    } catch (error) {
      replace(verdict, problemList(error));
    }
  }
  const edited = (apply) => {
    let entry;
    try {
      entry = build();
    } catch (error) {
      return replace(verdict, h("ul", { class: "problems", role: "alert" }, h("li", {}, error.message)));
    }
    return run(upsert(entry), apply);
  };
  const canSave = page.can("engineer");
  return h(
    "div",
    { class: "actions" },
    h("button", { type: "button", disabled: !canSave, onclick: () => edited(false) }, "Check"),
    h("button", { type: "button", class: "needs-active", disabled: !canSave, onclick: () => edited(true) }, "Save"),
    h("button", { type: "button", class: "needs-active", disabled: !canSave || !name, onclick: () => confirm(`Delete ${name}?`) && run(without(name), true) }, "Delete"),
  );
}

// Draw one editor card per entry of `kind`, and an empty one for a new entry; again after every saved change (after
// `refresh()`, which fetches what the cards show besides the configuration).
async function editors(page, kind, box, editor, refresh = async () => {}) {
  const draw = async (text) => {
    const [building] = await Promise.all([page.api("GET", `/api/v1/config?kinds=${kind}`), refresh()]);
    replace(box, (building[kind] || []).map((entry) => editor(entry, draw)), editor({}, draw));
    if (text) message(page.root.querySelector(".page-message"), text);
  };
  await draw();
}

// A labelled input of an editor card: [label, input].
const field = (label, id, initial, props = {}) => [h("label", { for: id }, label), h("input", { id, value: initial ?? "", ...props })];

const eventsText = (events) => (events || []).map((e) => `${e.at.slice(0, 5)}=${e.value}`).join(", ");

function parseEvents(text, where) {
  return text
    .split(",")
    .map((part) => part.trim())
    .filter(Boolean)
    .map((part) => {
      const [at, raw] = part.split("=");
      if (raw === undefined) throw new Error(`${where}: "${part}" is not time=value, e.g. 07:00=21`);
      return { at: at.trim(), value: parseInput(raw.trim()) };
    });
}

function exceptionText(exception) {
  const days = exception.date ?? (exception.from === exception.to ? exception.from : `${exception.from}..${exception.to}`);
  return `${exception.name} ${days}: ${eventsText(exception.events)}`;
}

function parseException(line, index) {
  const match = /^\s*(\S+)\s+(\d{4}-\d{2}-\d{2})(?:\.\.(\d{4}-\d{2}-\d{2}))?\s*:\s*(.*)$/.exec(line);
  if (!match) throw new Error(`exception line ${index + 1}: write "name 2026-12-24..2026-12-26: 00:00=15" or "name 2027-01-01: 00:00=15"`);
  const [, name, first, last, events] = match;
  const days = last ? { from: first, to: last } : { date: first };
  return { name, ...days, events: parseEvents(events, `exception ${name}`) };
}

async function schedules(page) {
  const state = h("div");
  const box = h("div");
  page.root.append(state, h("h3", {}, "Edit"), box);
  page.every(5000, async () => {
    const { schedules: list } = await page.api("GET", "/api/v1/schedules");
    const rows = list.map((s) =>
      h("tr", {}, h("th", { scope: "row" }, s.name), td(s.point), td(s.timezone), td(s.applied ? `${value(s.applied.value)} since ${s.applied.local}` : "—"), td(s.next ? `${value(s.next.value)} at ${s.next.local}` : "—"), td(s.problem ?? "")),
    );
    replace(state, table(["Schedule", "Point", "Time zone", "Now", "Next", "Problem"], rows));
  });
  function editor(entry, saved) {
    const key = entry.name || "new";
    const [nameLabel, name] = field("Name", `sched-${key}-name`, entry.name, { required: true, readonly: !!entry.name });
    const [pointLabel, point] = field("Point", `sched-${key}-point`, entry.point);
    const [zoneLabel, zone] = field("Time zone", `sched-${key}-tz`, entry.timezone || Intl.DateTimeFormat().resolvedOptions().timeZone);
    const [defaultLabel, fallback] = field("Default value", `sched-${key}-default`, entry.default);
    const days = DAYS.map((day) => field(day, `sched-${key}-${day}`, eventsText((entry.weekly || {})[day]), { size: 50, placeholder: "07:00=21, 18:00=17" }));
    const exceptions = h("textarea", { id: `sched-${key}-exceptions`, rows: 3, cols: 60 }, (entry.exceptions || []).map(exceptionText).join("\n"));
    const verdict = h("div");
    const build = () => {
      if (!name.value.trim()) throw new Error("the schedule needs a name");
      const weekly = Object.fromEntries(DAYS.map((day, i) => [day, parseEvents(days[i][1].value, day)]));
      const lines = exceptions.value.split("\n").filter((line) => line.trim());
      const result = { name: name.value.trim(), point: point.value.trim(), timezone: zone.value.trim(), weekly, exceptions: lines.map(parseException) };
      if (fallback.value.trim() !== "") result.default = parseInput(fallback.value);
      return result;
    };
    return h(
      "fieldset",
      { class: "editor", "data-schedule": entry.name || "" },
      h("legend", {}, entry.name || "New schedule"),
      h("div", { class: "grid" }, nameLabel, name, pointLabel, point, zoneLabel, zone, defaultLabel, fallback, days.flat(),
        h("label", { for: `sched-${key}-exceptions` }, "Exceptions, one per line: name day[..day]: time=value, ..."), exceptions),
      editorActions(page, { verdict, build, kind: "schedules", name: entry.name, saved }),
      verdict,
    );
  }

  await editors(page, "schedules", box, editor);
}

async function logic(page) {
  const box = h("div");
  page.root.append(h("p", { class: "hint" }, 'Read points with p("name"); blocks: on_delay, off_delay, latch, counter, hysteresis.'), box);
  let states = new Map();

  function editor(entry, saved) {
    const key = entry.name || "new";
    const [nameLabel, name] = field("Name", `logic-${key}-name`, entry.name, { readonly: !!entry.name, required: true });
    const [outputLabel, output] = field("Output point", `logic-${key}-output`, entry.output);
    const expression = h("textarea", { id: `logic-${key}-expression`, rows: 2, cols: 70, spellcheck: "false" }, entry.expression ?? "");
    const [cycleLabel, cycle] = field("Cycle (s, optional)", `logic-${key}-cycle`, entry.cycle, { size: 6, placeholder: "seconds" });
    const verdict = h("div");
    const rule = states.get(entry.name);
    const status = rule
      ? h("p", { class: rule.disabled ? "message error" : "hint" }, rule.disabled ? `Disabled: ${rule.disabled}` : `Last output: ${value(rule.last_output)}${rule.unavailable.length ? `; waiting for ${rule.unavailable.join(", ")}` : ""}`)
      : null;
    const build = () => {
      if (!name.value.trim()) throw new Error("the rule needs a name");
      const result = { ...entry, name: name.value.trim(), output: output.value.trim(), expression: expression.value };
      if (cycle.value.trim()) result.cycle = Number(cycle.value);
      else delete result.cycle;
      return result;
    };
    return h(
      "fieldset",
      { class: "editor", "data-rule": entry.name || "" },
      h("legend", {}, entry.name || "New rule"),
      h("div", { class: "grid" },
        nameLabel, name,
        outputLabel, output,
        h("label", { for: `logic-${key}-expression` }, "Expression"), expression,
        cycleLabel, cycle),
      status,
      editorActions(page, { verdict, build, kind: "logic", name: entry.name, saved }),
      verdict,
    );
  }

  await editors(page, "logic", box, editor, async () => {
    const { rules } = await page.api("GET", "/api/v1/logic");
    states = new Map(rules.map((r) => [r.name, r]));
  });
}

async function users(page) {
  const list = h("div");
  const line = h("p", { class: "message", role: "status", "aria-live": "polite" });
  const name = h("input", { id: "user-name", required: true, autocomplete: "off" });
  const role = h("select", { id: "user-role" }, ["viewer", "operator", "engineer", "admin"].map((r) => h("option", { value: r }, r)));
  const password = h("input", { id: "user-password", type: "password", autocomplete: "new-password", placeholder: "unchanged if empty" });

  async function load() {
    const data = await page.api("GET", "/api/v1/users");
    const rows = data.users.map((user) =>
      h("tr", { "data-user": user.name },
        h("th", { scope: "row" }, user.name), td(user.role), td(user.password_set ? "yes" : "no"), td(user.tokens.length),
        td(`${user.updated_by ?? ""} ${time(user.updated_ts)}`),
        td(
          h("button", { type: "button", class: "needs-active", onclick: () => token(user.name) }, "New API token"),
          " ",
          h("button", { type: "button", class: "needs-active", disabled: user.name === page.user, onclick: () => remove(user.name) }, "Delete"),
        )),
    );
    replace(list, table(["User", "Role", "Password set", "API tokens", "Last changed", "Actions"], rows));
  }

  async function attempt(work, done) {
    try {
      const answer = await work();
      message(line, done(answer));
      await load();
    } catch (error) {
      message(line, error.message, true);
    }
  }

  const token = (user) => attempt(() => page.api("POST", `/api/v1/users/${encodeURIComponent(user)}/tokens`), (a) => `API token for ${user} (shown this once): ${a.token}`);
  const remove = (user) => confirm(`Delete user ${user}?`) && attempt(() => page.api("DELETE", `/api/v1/users/${encodeURIComponent(user)}`), () => `${user} deleted`);
  const form = h(
    "form",
    { class: "grid", onsubmit: (event) => {
      event.preventDefault();
      const body = { role: role.value, ...(password.value ? { password: password.value } : {}) };
      attempt(() => page.api("PUT", `/api/v1/users/${encodeURIComponent(name.value.trim())}`, body), () => `${name.value} saved`).then(() => (password.value = ""));
    } },
    h("label", { for: "user-name" }, "User"), name,
    h("label", { for: "user-role" }, "Role"), role,
    h("label", { for: "user-password" }, "Password"), password,
    h("span"), h("button", { type: "submit", class: "needs-active" }, "Add or change user"),
  );
  page.root.append(line, list, h("h3", {}, "Add or change a user"), form);
  await load();
}

async function plugins(page) {
  const data = await page.api("GET", "/api/v1/plugins");
  const loaded = new Set(data.loaded);
  const rows = data.required.map((name) => h("tr", {}, h("th", { scope: "row" }, name), td(loaded.has(name) ? "loaded" : "not loaded")));
  const registered = ["drivers", "functions", "notifiers"].flatMap((kind) => data[kind].map((spec) => h("tr", {}, td(kind.slice(0, -1)), h("th", { scope: "row" }, spec.name), td(spec.plugin))));
  const problems = data.problems.map((p) => h("tr", {}, h("th", { scope: "row" }, p.plugin), td(p.stage), td(p.error)));
  page.root.append(
    table(["Plugin", "State"], rows, `Plugins of ${data.node}`),
    table(["Kind", "Name", "Registered by"], registered, "What they registered"),
    problems.length ? table(["Plugin", "Stage", "Error"], problems, "Problems") : h("p", {}, "No plugin problems."),
  );
}

const AUDIT_SHOWN = 500;

async function audit(page) {
  const filter = h("input", { id: "audit-filter", type: "search", placeholder: "user, action or target contains …" });
  const list = h("div");
  page.root.append(h("label", { for: "audit-filter" }, "Filter "), filter, list);
  let entries = [];
  const render = () => {
    const needle = filter.value.toLowerCase();
    const shown = entries.filter((e) => !needle || `${e.user} ${e.action} ${e.target} ${e.detail}`.toLowerCase().includes(needle)).slice(-AUDIT_SHOWN).reverse();
    replace(list, table(["When", "User", "Action", "Target", "Detail"], shown.map((e) => h("tr", {}, td(time(e.ts)), td(e.user), td(e.action), td(e.target), td(e.detail)))));
  };
  filter.addEventListener("input", render);
  page.every(5000, async () => {
    const after = entries.length ? entries[entries.length - 1].seq : 0;
    const data = await page.api("GET", `/api/v1/audit?after=${after}&limit=10000`);
    if (data.entries.length || !entries.length) {
      entries = entries.concat(data.entries);
      render();
    }
  });
}

export const ENGINEER_PAGES = [
  { id: "schedules", title: "Schedules", role: "viewer", render: schedules },
  { id: "logic", title: "Logic", role: "viewer", render: logic },
  { id: "users", title: "Users", role: "admin", render: users },
  { id: "plugins", title: "Plugins", role: "viewer", render: plugins },
  { id: "audit", title: "Audit log", role: "engineer", render: audit },
];
