// The Web Manager's link to the cluster: it knows every server, talks to one of them, follows the active server across
// a failover and resubscribes the live feed by itself (the browser counterpart of webmanager/tools/client.py).

const FIND_INTERVAL_MS = 200;      // between rounds of asking every server who is active, while none is known
const ASK_TIMEOUT_MS = 1000;       // per question to one server while looking for the active
const PING_INTERVAL_MS = 250;      // the live feed is pinged this often ...
const PING_TIMEOUT_MS = 1000;      // ... and given up when nothing came for this long: a server that vanished without
                                   // closing the connection (power cut, cable, SIGSTOP) is left within 1.25 s
const REQUEST_TIMEOUT_MS = 10000;
const SESSION_KEY = "tandem.session";   // the session as a bearer token, for the other servers' origins
const SERVERS_KEY = "tandem.servers";   // [{name, url}] of the cluster's servers

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body || {};
  }
}

function cookie(name) {
  const found = document.cookie.split("; ").find((part) => part.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

export class Cluster extends EventTarget {
  constructor() {
    super();
    this.home = location.origin;           // the server that served this page: the cookie and CSRF token are its own
    this.current = location.origin;        // the server the page talks to now
    this.servers = JSON.parse(localStorage.getItem(SERVERS_KEY) || "[]");
    this.follow = false;                   // follow the active server (once the page talked to an active one)
    this.role = null;                      // the last role message: {node, role, active, active_api}
    this.subscription = { points: [], alarms: false };
    this.ws = null;
    this.searching = false;
    this.lastPong = 0;
    this.pinger = null;
  }

  get session() {
    return localStorage.getItem(SESSION_KEY);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // ---- REST ----

  // The server's answer to one request, with this page's credentials for that server: the session cookie (and the
  // CSRF token) on the page's own server, the session as a bearer on the others.
  fetchFrom(base, method, path, body, timeout = REQUEST_TIMEOUT_MS, extra = {}) {
    const same = base === this.home;
    const headers = { ...extra };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (same && method !== "GET") headers["X-CSRF-Token"] = cookie("tandem_csrf");
    if (!same && this.session) headers.Authorization = "Bearer " + this.session;
    return fetch(base + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: same ? "same-origin" : "omit",
      signal: AbortSignal.timeout(timeout),
    });
  }

  // One JSON request to the server at `base`: {data, headers} of its answer, or an ApiError.
  async exchange(base, method, path, body, timeout = REQUEST_TIMEOUT_MS, extra = {}) {
    const response = await this.fetchFrom(base, method, path, body, timeout, extra);
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) throw new ApiError(response.status, (data && data.error) || response.statusText, data);
    return { data, headers: response.headers };
  }

  // Save what GET `path` answers as a file named `filename` (through fetch, so it works on any server of the cluster).
  async download(path, filename) {
    const response = await this.fetchFrom(this.current, "GET", path);
    if (!response.ok) throw new ApiError(response.status, response.statusText, null);
    const url = URL.createObjectURL(await response.blob());
    const link = Object.assign(document.createElement("a"), { href: url, download: filename });
    link.click();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  async request(base, method, path, body, timeout = REQUEST_TIMEOUT_MS) {
    return (await this.exchange(base, method, path, body, timeout)).data;
  }

  api(method, path, body) {
    return this.request(this.current, method, path, body);
  }

  async login(user, password) {
    const answer = await this.request(this.home, "POST", "/api/v1/login", { user, password });
    localStorage.setItem(SESSION_KEY, answer.session);
    return answer;
  }

  async logout() {
    localStorage.removeItem(SESSION_KEY);
    this.close();
    await this.request(this.home, "POST", "/api/v1/logout").catch(() => null);
  }

  // Learn every server's address from the cluster status (kept for the next visit).
  async learnServers() {
    const status = await this.api("GET", "/api/v1/status");
    this.servers = status.nodes.filter((n) => n.config_role !== "witness").map((n) => ({ name: n.name, url: n.url }));
    localStorage.setItem(SERVERS_KEY, JSON.stringify(this.servers));
    return status;
  }

  serverName(url) {
    const server = this.servers.find((s) => s.url === url);
    return server ? server.name : url;
  }

  urlOf(name) {
    const server = this.servers.find((s) => s.name === name);
    return server ? server.url : null;
  }

  get isActive() {
    return !!this.role && this.role.role === "active";
  }

  // ---- the live feed ----

  subscribe(subscription) {
    this.subscription = { points: subscription.points || [], alarms: !!subscription.alarms };
    this.send({ subscribe: this.subscription });
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  connect() {
    this.close();
    const url = new URL("/api/v1/live", this.current.replace(/^http/, "ws"));
    if (this.current !== this.home && this.session) url.searchParams.set("token", this.session);
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.lastPong = Date.now();
      ws.send(JSON.stringify({ subscribe: this.subscription }));
      this.pinger = setInterval(() => this.ping(ws), PING_INTERVAL_MS);
    };
    ws.onmessage = (event) => this.receive(JSON.parse(event.data));
    ws.onclose = () => {
      if (this.ws === ws) this.lost();
    };
  }

  close() {
    clearInterval(this.pinger);
    this.pinger = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close();
  }

  ping(ws) {
    if (Date.now() - this.lastPong > PING_TIMEOUT_MS) {
      ws.close();
      if (this.ws === ws) this.lost();
      return;
    }
    ws.send(JSON.stringify({ ping: Date.now() }));
  }

  receive(message) {
    this.lastPong = Date.now();
    if (message.type === "role") {
      this.role = message;
      if (message.role === "active") this.follow = true;
      this.emit("role", message);
      if (this.follow && message.role !== "active") {  // the role moved away (a transfer, a lost lease): follow it
        const activeUrl = message.active && message.active !== message.node ? this.urlOf(message.active) : null;
        if (activeUrl) this.moveTo(activeUrl);
        else this.lost(`${message.node} is no longer active`);
      }
    } else if (message.type === "points") {
      this.emit("points", message);
    } else if (message.type === "alarms") {
      this.emit("alarms", message);
    }
  }

  moveTo(url) {
    this.current = url;
    this.role = null;
    this.emit("server", { url, name: this.serverName(url) });
    this.connect();
  }

  // The connection to the current server is gone (or it is no longer active): ask every server, until one says it is
  // active, and move there.
  async lost(why = `Connection to ${this.serverName(this.current)} lost`) {
    this.close();
    this.role = null;
    this.emit("lost", { why });
    if (this.searching) return;
    this.searching = true;
    try {
      for (;;) {
        const answers = this.servers.map((server) =>
          this.request(server.url, "GET", "/api/v1/node", undefined, ASK_TIMEOUT_MS).then((view) => ({ server, view })),
        );
        // the first server to say it is active wins, without waiting for one that does not answer
        const active = await Promise.any(answers.map((p) => p.then((a) => (a.view.role === "active" ? a : Promise.reject())))).catch(() => null);
        if (active) return this.moveTo(active.server.url);
        const settled = await Promise.allSettled(answers);
        if (settled.some((a) => a.status === "rejected" && a.reason.status === 401)) return this.emit("unauthorized");
        const standing = settled.find((a) => a.status === "fulfilled" && a.value.server.url === this.current);
        if (standing && !this.follow) return this.moveTo(this.current);  // a read-only page stays on its standby
        await new Promise((resolve) => setTimeout(resolve, FIND_INTERVAL_MS));
      }
    } finally {
      this.searching = false;
    }
  }
}
