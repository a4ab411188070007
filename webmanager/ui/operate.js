// The operators' pages: cluster dashboard, points with live values and writing, devices, live alarms, trend charts.

import { h, message, parseInput, replace, seconds, table, time, value } from "./dom.js";

const td = (...children) => h("td", {}, ...children);

async function dashboard(page) {
  const nodes = h("div");
  const history = h("div");
  const line = h("p", { class: "message", role: "status", "aria-live": "polite" });
  page.root.append(nodes, line, h("h3", {}, "Failover history"), history);

  async function transfer(name) {
    if (!confirm(`Make ${name} the active server?`)) return;
    message(line, `Transferring the active role to ${name} …`);
    try {
      const result = await page.api("POST", "/api/v1/cluster/transfer", { to: name });
      message(line, `${result.to} is active (term ${result.term}).`);
    } catch (error) {
      message(line, `Transfer failed: ${error.message}`, true);
    }
  }

  function problems(node) {
    const list = [node.blocked, ...node.plugin_problems.map((p) => `${p.plugin}: ${p.error}`), ...node.failing];
    return list.filter(Boolean).join("; ") || "none";
  }

  page.every(2000, async () => {
    const status = await page.api("GET", "/api/v1/status");
    const rows = status.nodes.map((node) =>
      h(
        "tr",
        { "data-node": node.name },
        h("th", { scope: "row" }, node.name),
        td(node.config_role),
        td(node.reachable ? h("span", { class: `role role-${node.role}` }, node.role) : h("span", { class: "role role-unreachable" }, "unreachable")),
        td(node.reachable ? "yes" : "no"),
        td(node.term ?? "—"),
        td(node.commit_index ?? "—"),
        td(node.lag_entries === null ? "—" : `${node.lag_entries} entries, ${seconds(node.lag_seconds)}`),
        td(seconds(node.last_contact)),
        td(problems(node)),
        td(
          page.can("admin") && node.role === "standby" && node.config_role !== "witness" && node.reachable
            ? h("button", { type: "button", class: "needs-active", onclick: () => transfer(node.name) }, `Make ${node.name} active`)
            : "",
        ),
      ),
    );
    replace(nodes, table(["Node", "Configured as", "Role", "Reachable", "Term", "Commit index", "Lag", "Last contact", "Problems", "Action"], rows, `Cluster ${status.cluster}: active ${status.active ?? "none"}`));
    const events = status.activations.map((a) =>
      h("tr", {}, td(time(a.since)), td(a.node), td(a.previous ?? "(cold start)"), td(a.term), td(a.gap === null ? "—" : seconds(a.gap))),
    );
    replace(history, table(["When", "Active", "After", "Term", "Gap (measured by the new active)"], events));
  });
}

function writeForm(page, point) {
  const input = h("input", { size: 8, "aria-label": `New value for ${point.name}`, class: "write-input" });
  const line = h("span", { class: "message", role: "status" });
  return h(
    "form",
    { class: "write", onsubmit: async (event) => {
      event.preventDefault();
      try {
        const answer = await page.api("PUT", `/api/v1/points/${encodeURIComponent(point.name)}`, { value: parseInput(input.value) });
        message(line, answer.pending ? `sent (write ${answer.seq})` : "set");
        input.value = "";
      } catch (error) {
        message(line, error.message, true);
      }
    } },
    input,
    h("button", { type: "submit", class: "needs-active" }, "Write"),
    line,
  );
}

const PAGE_SIZE = 200;  // points per page: the server filters and pages, the page holds (and subscribes to) only these
// The filter and the `after` of each page up to the one shown ("" for the first): kept when the Points page is drawn
// again, after a move to another server or a visit to another page.
const pointsShown = { search: "", cursors: [""] };

async function points(page) {
  const filter = h("input", { id: "point-filter", type: "search", placeholder: "name contains …", value: pointsShown.search });
  const count = h("p", { id: "point-count", role: "status" });
  const previous = h("button", { type: "button", disabled: true, onclick: () => turn(-1) }, "Previous page");
  const next = h("button", { type: "button", disabled: true, onclick: () => turn(1) }, "Next page");
  const list = h("div");
  const rows = new Map();  // point name -> {value, quality, ts} cells
  let following = null;  // the `after` of the page behind the shown one (null: it is the last)
  let loads = 0;  // only the latest request draws
  page.root.append(h("label", { for: "point-filter" }, "Filter points "), filter, count, h("div", { class: "pager" }, previous, next), list);

  async function load() {
    const ticket = ++loads;
    const query = new URLSearchParams({ limit: PAGE_SIZE, search: pointsShown.search });
    if (pointsShown.cursors.at(-1)) query.set("after", pointsShown.cursors.at(-1));
    const data = await page.api("GET", `/api/v1/points?${query}`);
    if (ticket !== loads) return;
    rows.clear();
    const body = data.points.map((point) => {
      const cells = { value: td(value(point.value)), quality: td(point.quality), ts: td(time(point.timestamp)) };
      cells.value.className = "value";
      rows.set(point.name, cells);
      const writable = point.writable && page.can("operator");
      return h("tr", { "data-point": point.name }, h("th", { scope: "row" }, point.name), cells.value, cells.quality, cells.ts, td(point.device ?? "virtual"), td(writable ? writeForm(page, point) : ""));
    });
    replace(list, table(["Point", "Value", "Quality", "Time", "Device", "Write"], body));
    const first = (pointsShown.cursors.length - 1) * PAGE_SIZE;
    count.textContent = data.points.length ? `Points ${first + 1}–${first + data.points.length} of ${data.total}` : "No points match";
    following = data.next;
    previous.disabled = pointsShown.cursors.length < 2;
    next.disabled = following === null;
    page.cluster.subscribe({ points: data.points.map((point) => point.name) });
  }

  function turn(step) {
    if (step > 0) pointsShown.cursors.push(following);
    else pointsShown.cursors.pop();
    previous.disabled = next.disabled = true;  // until this page is drawn
    load().catch((error) => page.fail(error));
  }

  page.on("points", (update) => {
    for (const point of update.values) {
      const cells = rows.get(point.name);
      if (!cells) continue;
      cells.value.textContent = value(point.value);
      cells.quality.textContent = point.quality;
      cells.ts.textContent = time(point.ts);
      cells.value.classList.remove("changed");
      void cells.value.offsetWidth;  // restart the highlight
      cells.value.classList.add("changed");
    }
  });
  let timer = null;
  filter.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      Object.assign(pointsShown, { search: filter.value, cursors: [""] });
      load().catch((error) => page.fail(error));
    }, 300);
  });
  await load();
}

async function devices(page) {
  const list = h("div");
  page.root.append(list);
  page.every(3000, async () => {
    const data = await page.api("GET", "/api/v1/devices");
    const rows = data.devices.map((device) => {
      const address = device.address ?? (device.host ? `${device.host}:${device.port}` : "");
      const good = device.qualities.good || 0;
      const state = device.error || device.running === false ? "failing"
        : device.points && !good ? "no communication"
        : good < device.points ? "partly failing"
        : device.running === null ? "unknown" : "running";
      const qualities = Object.entries(device.qualities).map(([quality, count]) => `${count} ${quality}`).join(", ");
      return h("tr", { "data-device": device.name }, h("th", { scope: "row" }, device.name), td(device.driver), td(address), td(device.points), td(qualities),
        td(h("span", { class: `health health-${state.replace(/ /g, "-")}` }, state)), td(device.error ?? ""));
    });
    const source = data.health_from ? `drivers as the active server ${data.health_from} runs them` : "drivers unknown: no active server answered";
    replace(list, table(["Device", "Driver", "Address", "Points", "Point qualities", "State", "Driver error"], rows, source));
  });
}

const URGENT = (alarm) => [alarm.state === "normal", alarm.priority, alarm.name];

async function alarms(page) {
  const list = h("div");
  const line = h("p", { class: "message", role: "status", "aria-live": "polite" });
  const known = new Map();
  page.root.append(line, list);

  async function act(name, action, body = {}) {
    try {
      await page.api("POST", `/api/v1/alarms/${encodeURIComponent(name)}/${action}`, body);
      message(line, `${name}: ${action} done`);
    } catch (error) {
      message(line, `${name}: ${error.message}`, true);
    }
  }

  function actions(alarm) {
    if (!page.can("operator")) return "";
    const buttons = [];
    if (alarm.state.endsWith("-unacked")) buttons.push(h("button", { type: "button", class: "needs-active", onclick: () => act(alarm.name, "ack") }, `Acknowledge ${alarm.name}`));
    if (alarm.shelved) buttons.push(h("button", { type: "button", class: "needs-active", onclick: () => act(alarm.name, "unshelve") }, "Unshelve"));
    else buttons.push(h("button", { type: "button", class: "needs-active", onclick: () => act(alarm.name, "shelve", { minutes: 60 }) }, "Shelve 1 h"));
    return buttons;
  }

  function render() {
    const sorted = [...known.values()].sort((a, b) => {
      const [x, y] = [URGENT(a), URGENT(b)];
      return x < y ? -1 : x > y ? 1 : 0;
    });
    const rows = sorted.map((alarm) =>
      h(
        "tr",
        { "data-alarm": alarm.name, "data-state": alarm.state },
        td(alarm.priority),
        h("th", { scope: "row" }, alarm.name),
        td(h("span", { class: `state state-${alarm.state}` }, alarm.state)),
        td(alarm.message),
        td(value(alarm.value)),
        td(time(alarm.since)),
        td(alarm.ack ? `${alarm.ack.user}, ${time(alarm.ack.ts)}` : ""),
        td(alarm.shelved ? `until ${time(alarm.shelved.until)} (${alarm.shelved.user})` : ""),
        td(actions(alarm)),
      ),
    );
    replace(list, table(["Priority", "Alarm", "State", "Message", "Value", "Since", "Acknowledged", "Shelved", "Actions"], rows));
  }

  page.on("alarms", (update) => {
    if (update.snapshot) known.clear();
    for (const alarm of update.alarms) known.set(alarm.name, alarm);
    render();
  });
  page.cluster.subscribe({ alarms: true });
}

const FIT = "fit";  // the default range: from the trend's oldest sample up to now, FIT_MIN to FIT_MAX seconds
const FIT_MIN = 60, FIT_MAX = 86400;
const RANGES = [["since the first sample (up to 24 h)", FIT], ["15 min", 900], ["1 h", 3600], ["24 h", 86400], ["7 days", 604800]];
const RAW_LIMIT_SECONDS = 3600;  // wider ranges are drawn from min/max/avg buckets
const BUCKETS = 600;

async function trends(page) {
  let { trends: list } = await page.api("GET", "/api/v1/trends");
  if (!list.length) {
    page.root.append(h("p", {}, "No trends are configured."));
    return;
  }
  const select = h("select", { id: "trend-select" }, list.map((t) => h("option", { value: t.name }, t.name)));
  const range = h("select", { id: "trend-range" }, RANGES.map(([label, choice]) => h("option", { value: choice }, label)));
  const first = () => list.find((t) => t.name === select.value)?.first ?? null;  // the selected trend's oldest sample
  const span = (now) => {  // the seconds the chosen range shows up to now
    if (range.value !== FIT) return Number(range.value);
    return first() === null ? 3600 : Math.min(FIT_MAX, Math.max(FIT_MIN, now - first()));
  };
  const chartBox = h("div", { class: "chart", role: "img", "aria-label": "trend chart" });
  let csvPath = null;  // the shown range as CSV
  const csv = h("button", { type: "button", onclick: () => csvPath && page.cluster.download(csvPath, `${select.value}.csv`).catch((error) => page.fail(error)) }, "Download CSV");
  const note = h("p", { class: "hint" }, "Drag across the chart to zoom in; double-click to zoom out.");
  page.root.append(h("label", { for: "trend-select" }, "Trend "), select, " ", h("label", { for: "trend-range" }, "Range "), range, " ", csv, note, chartBox);
  let chart = null;
  let window_ = null;  // [from, to] shown; null: the chosen range up to now

  async function fetchSeries(from, to) {
    const name = encodeURIComponent(select.value);
    const raw = to - from <= RAW_LIMIT_SECONDS;
    const step = raw ? "" : `&step=${Math.max(1, Math.round((to - from) / BUCKETS))}`;
    csvPath = `/api/v1/trends/${name}?from=${from}&to=${to}&format=csv`;
    const data = await page.api("GET", `/api/v1/trends/${name}?from=${from}&to=${to}${step}`);
    if (raw) return [data.samples.map((s) => s.ts), data.samples.map((s) => (typeof s.value === "number" ? s.value : Number(s.value)))];
    return [data.buckets.map((b) => b.ts), data.buckets.map((b) => b.avg), data.buckets.map((b) => b.min), data.buckets.map((b) => b.max)];
  }

  async function draw() {
    const to = window_ ? window_[1] : Date.now() / 1000;
    const from = window_ ? window_[0] : to - span(to);
    const data = await fetchSeries(from, to);
    chartBox.dataset.from = String(from);
    chartBox.dataset.span = String(to - from);  // the seconds shown (smaller after a zoom)
    // a sample holds until the next one (values change in steps), so raw samples are drawn as steps
    const line = data.length > 2 ? {} : { paths: uPlot.paths.stepped({ align: 1 }) };
    const series = [{}, { label: select.value, stroke: "#1d5fa8", width: 2, ...line }];
    if (data.length > 2) series.push({ label: "min", stroke: "#8aa9c9", dash: [4, 4] }, { label: "max", stroke: "#c98a8a", dash: [4, 4] });
    if (chart && chart.series.length === series.length) {
      chart.setData(data, false);
      chart.setScale("x", { min: from, max: to });
      return;
    }
    if (chart) chart.destroy();
    const options = {
      width: Math.max(320, chartBox.clientWidth || 800),
      height: 360,
      series,
      scales: { x: { time: true } },
      cursor: { drag: { x: true, y: false, setScale: false } },  // a selection fetches its range anew (finer data)
      hooks: {
        setSelect: [(u) => {
          if (u.select.width < 5) return;
          window_ = [u.posToVal(u.select.left, "x"), u.posToVal(u.select.left + u.select.width, "x")];
          u.setSelect({ left: 0, width: 0 }, false);
          draw().catch((error) => page.fail(error));
        }],
      },
    };
    chart = new uPlot(options, data, chartBox);
    chart.setScale("x", { min: from, max: to });  // the whole range asked for, not just where samples are
    chartBox.dataset.points = String(data[0].length);
    chart.over.addEventListener("dblclick", () => {
      window_ = null;
      draw().catch((error) => page.fail(error));
    });
  }

  const reset = () => {
    window_ = null;
    if (chart) chart.destroy();
    chart = null;
    draw().catch((error) => page.fail(error));
  };
  select.addEventListener("change", reset);
  range.addEventListener("change", reset);
  page.every(5000, async () => {
    if (range.value === FIT && first() === null) ({ trends: list } = await page.api("GET", "/api/v1/trends"));  // no samples yet: ask again
    if (!window_) await draw();
    chartBox.dataset.points = String(chart ? chart.data[0].length : 0);
  });
  page.cleanups.push(() => chart && chart.destroy());
}

export const OPERATE_PAGES = [
  { id: "dashboard", title: "Cluster", role: "viewer", render: dashboard },
  { id: "points", title: "Points", role: "viewer", render: points },
  { id: "devices", title: "Devices", role: "viewer", render: devices },
  { id: "alarms", title: "Alarms", role: "viewer", render: alarms },
  { id: "trends", title: "Trends", role: "viewer", render: trends },
];
