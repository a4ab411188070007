"""Users, roles and authentication on real node processes: 401/403, CSRF, login lock-out, secrets never returned or logged,
sessions across a failover, the first admin created once, password changes ending sessions, user tokens."""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import subprocess
import sys
from http.cookies import SimpleCookie
from typing import Any, NamedTuple

import pytest
from conftest import module_cluster, report, self_signed
from driver_kit import until

from cluster.state import ProcessImage, Rejected
from webmanager import users
from webmanager.tools.cli import call_api
from webmanager.tools.client import TandemClient
from webmanager.tools.launcher import LocalCluster, wait_for, write_config
from webmanager.user_api import PASSWORD_LINE

BUILDING = {
    "points": [{"name": "room.temp"}, {"name": "room.setpoint", "writable": True}],
    "alarms": [{"name": "room.temp.high", "point": "room.temp", "type": "high", "limit": 30}],
}


class Reply(NamedTuple):
    status: int
    headers: http.client.HTTPMessage
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def call(
    cluster: LocalCluster, node: str, method: str, path: str, body: Any = None, *, token: str | None = None,
    cookie: str | None = None, csrf: str | None = None, source: str = "127.0.0.1", headers: dict[str, str] | None = None,
) -> Reply:
    """One HTTP request to `node`, with exactly the credentials (and extra headers) given, from the loopback address `source`."""
    host, port = cluster[node].spec.api.rsplit(":", 1)
    headers = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if cookie is not None:
        headers["Cookie"] = f"tandem_session={cookie}"
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    connection = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(source, 0))
    try:
        connection.request(method, path, None if body is None else json.dumps(body), headers)
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read().decode())
    finally:
        connection.close()


class Session(NamedTuple):
    cookie: str
    csrf: str
    reply: Reply


def login(cluster: LocalCluster, node: str, user: str, password: str, source: str = "127.0.0.1") -> Session:
    reply = call(cluster, node, "POST", "/api/v1/login", {"user": user, "password": password}, source=source)
    assert reply.status == 200, reply
    cookies = SimpleCookie()
    for header in reply.headers.get_all("Set-Cookie"):
        cookies.load(header)
    return Session(cookies["tandem_session"].value, cookies["tandem_csrf"].value, reply)


def admin(cluster: LocalCluster, method: str, path: str, body: Any = None, node: str = "main") -> tuple[int, Any]:
    """A request with the cluster token (role admin), as the CLI makes it."""
    return call_api(cluster.config, cluster[node].spec.api, method, path, body)


def add_user(cluster: LocalCluster, name: str, role: str, password: str | None = None) -> None:
    code, answer = admin(cluster, "PUT", f"/api/v1/users/{name}", {"role": role, **({"password": password} if password else {})})
    assert code in (200, 201), answer


def new_token(cluster: LocalCluster, name: str) -> str:
    code, answer = admin(cluster, "POST", f"/api/v1/users/{name}/tokens")
    assert code == 201, answer
    return answer["token"]


def initial_password(cluster: LocalCluster) -> str:
    """The first admin's one-time password, printed by whichever server created it."""
    def printed() -> str | None:
        lines = [line for node in cluster.nodes for line in cluster.log(node).splitlines() if line.startswith(PASSWORD_LINE)]
        return lines[0][len(PASSWORD_LINE):].strip() if lines else None

    return wait_for(printed, 15, "a server to print the first admin's password")


def apply_building(cluster: LocalCluster) -> None:
    """Apply BUILDING on main, retrying while a start-up hand-over briefly makes it standby (409)."""
    wait_for(lambda: admin(cluster, "POST", "/api/v1/config", BUILDING)[0] == 200, 10, "main to apply the building")


def replicated(cluster: LocalCluster, node: str = "backup") -> None:
    """Wait until `node` has applied everything main committed."""
    wait_for(lambda: cluster.caught_up(node, "main"), 10, f"{node} to catch up with main")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with module_cluster(tmp_path_factory.mktemp("auth")) as cluster:
        apply_building(cluster)
        yield cluster


def test_unauthenticated_requests_get_401(cluster):
    for method, path in (("GET", "/api/v1/me"), ("GET", "/api/v1/points/room.temp"), ("POST", "/api/v1/config"), ("GET", "/api/v1/users")):
        assert call(cluster, "main", method, path).status == 401
    assert call(cluster, "main", "GET", "/api/v1/me", token="wrong").status == 401
    assert call(cluster, "main", "GET", "/api/v1/me", cookie="forged.cookie").status == 401
    assert call(cluster, "witness", "GET", "/api/v1/status").status == 401


def test_the_cluster_token_is_the_admin_service_identity(cluster):
    assert admin(cluster, "GET", "/api/v1/me") == (200, {"user": "cluster", "role": "admin", "via": "cluster"})


def test_a_viewer_reads_but_cannot_write(cluster):
    add_user(cluster, "vera", "viewer")
    token = new_token(cluster, "vera")
    assert call(cluster, "main", "GET", "/api/v1/points/room.setpoint", token=token).status in (200, 404)
    assert call(cluster, "main", "GET", "/api/v1/status", token=token).status == 200
    refused = call(cluster, "main", "PUT", "/api/v1/points/room.setpoint", {"value": 20}, token=token)
    assert refused.status == 403 and refused.json()["role"] == "operator" and "operator" in refused.json()["error"]
    assert call(cluster, "main", "GET", "/api/v1/audit", token=token).status == 403


def test_an_operator_acknowledges_alarms_but_cannot_apply_configuration(cluster):
    add_user(cluster, "otto", "operator")
    token = new_token(cluster, "otto")
    report(cluster, {"room.temp": 35.0})
    alarm = lambda: next(a for a in admin(cluster, "GET", "/api/v1/alarms")[1]["alarms"] if a["name"] == "room.temp.high")  # noqa: E731
    wait_for(lambda: alarm()["state"] == "active-unacked", 10, "the alarm to be raised")
    spoofed = call(cluster, "main", "POST", "/api/v1/alarms/room.temp.high/ack", {"user": "somebody"}, token=token)
    assert spoofed.status == 403
    acked = call(cluster, "main", "POST", "/api/v1/alarms/room.temp.high/ack", {"comment": "on it"}, token=token)
    assert acked.status == 200 and acked.json()["ack"]["user"] == "otto"
    refused = call(cluster, "main", "POST", "/api/v1/config", BUILDING, token=token)
    assert refused.status == 403 and refused.json()["role"] == "engineer"
    assert call(cluster, "main", "POST", "/api/v1/cluster/transfer", {"to": "backup"}, token=token).status == 403
    written = call(cluster, "main", "PUT", "/api/v1/points/room.setpoint", {"value": 21.5}, token=token)
    assert written.status == 200 and written.json()["source"] == "user:otto"
    trail = admin(cluster, "GET", "/api/v1/audit")[1]["entries"]
    assert {"user": "otto", "action": "alarms", "target": "room.temp.high"}.items() <= trail[-2].items()
    assert {"user": "otto", "action": "write", "target": "room.setpoint"}.items() <= trail[-1].items()
    assert any(entry["user"] == "cluster" and entry["target"] == "alarms/room.temp.high" for entry in trail)  # the building, by the cluster token


def test_a_session_needs_its_csrf_token_to_change_state(cluster):
    add_user(cluster, "erin", "engineer", "erin-password-1")
    session = login(cluster, "main", "erin", "erin-password-1")
    cookies = "\n".join(session.reply.headers.get_all("Set-Cookie"))
    assert "HttpOnly" in cookies.split("tandem_csrf")[0] and "SameSite=Strict" in cookies and "Secure" not in cookies  # no TLS here
    assert session.reply.json()["csrf"] == session.csrf
    me = call(cluster, "main", "GET", "/api/v1/me", cookie=session.cookie)
    assert me.status == 200 and me.json()["user"] == "erin" and me.json()["via"] == "session"
    write = ("PUT", "/api/v1/points/room.setpoint", {"value": 19.0})
    assert call(cluster, "main", *write, cookie=session.cookie).status == 403
    assert call(cluster, "main", *write, cookie=session.cookie, csrf=session.csrf[::-1]).status == 403
    accepted = call(cluster, "main", *write, cookie=session.cookie, csrf=session.csrf)
    assert accepted.status == 200 and accepted.json()["source"] == "user:erin"
    assert call(cluster, "main", "POST", "/api/v1/config", BUILDING, cookie=session.cookie, csrf=session.csrf).status == 200
    logout = call(cluster, "main", "POST", "/api/v1/logout", cookie=session.cookie)
    assert logout.status == 200 and all("Max-Age=0" in header for header in logout.headers.get_all("Set-Cookie"))


def test_the_session_as_a_bearer_works_on_every_server_without_csrf(cluster):
    """What the UI does after a failover: the other server's origin gets no cookie, so the page sends the session it got
    at login as a bearer token (which a browser never sends by itself, so no CSRF token is needed)."""
    add_user(cluster, "sam", "operator", "sam-password-1")
    session = login(cluster, "main", "sam", "sam-password-1")
    bearer = session.reply.json()["session"]
    assert bearer == session.cookie
    replicated(cluster)
    me = call(cluster, "backup", "GET", "/api/v1/me", token=bearer)
    assert me.status == 200 and (me.json()["user"], me.json()["via"]) == ("sam", "session-token")
    written = call(cluster, "main", "PUT", "/api/v1/points/room.setpoint", {"value": 18.5}, token=bearer)
    assert written.status == 200 and written.json()["source"] == "user:sam"
    forged = call(cluster, "main", "GET", "/api/v1/me", token=bearer[:-2] + ("AA" if bearer[-2:] != "AA" else "BB"))
    assert forged.status == 401 and "expired" in forged.json()["error"]


def test_only_the_clusters_own_servers_may_call_across_origins(cluster):
    main_url, backup_url = (node.url for node in cluster.config.cluster.nodes[:2])
    preflight = {"Origin": main_url, "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "authorization, content-type"}
    answer = call(cluster, "backup", "OPTIONS", "/api/v1/points/room.setpoint", headers=preflight)
    assert answer.status == 204 and answer.headers["Access-Control-Allow-Origin"] == main_url
    assert "Authorization" in answer.headers["Access-Control-Allow-Headers"] and "PUT" in answer.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in answer.headers  # no cookies across origins
    read = call(cluster, "main", "GET", "/api/v1/me", token=cluster.config.api_token, headers={"Origin": backup_url})
    assert read.status == 200 and read.headers["Access-Control-Allow-Origin"] == backup_url
    refused = call(cluster, "main", "GET", "/api/v1/me", headers={"Origin": backup_url})  # errors carry it too: the page reads them
    assert refused.status == 401 and refused.headers["Access-Control-Allow-Origin"] == backup_url
    for origin in ("http://evil.example", cluster.config.node("witness").url):  # not a server whose UI could follow
        foreign = call(cluster, "main", "OPTIONS", "/api/v1/points/room.setpoint", headers={**preflight, "Origin": origin})
        assert foreign.status == 401 and "Access-Control-Allow-Origin" not in foreign.headers
        answer = call(cluster, "main", "GET", "/api/v1/me", token=cluster.config.api_token, headers={"Origin": origin})
        assert answer.status == 200 and "Access-Control-Allow-Origin" not in answer.headers


def test_the_ui_is_served_without_login_under_a_strict_content_security_policy(cluster):
    page = call(cluster, "main", "GET", "/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html") and "/ui/app.js" in page.text
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    backup_url = cluster.config.node("backup").url
    assert f"{backup_url} {backup_url.replace('http', 'ws', 1)}" in policy  # the page may follow a failover there
    script = call(cluster, "main", "GET", "/ui/connection.js")
    assert script.status == 200 and "javascript" in script.headers["Content-Type"] and "class Cluster" in script.text
    assert (script.headers["X-Content-Type-Options"], script.headers["Cache-Control"]) == ("nosniff", "no-cache")
    assert call(cluster, "main", "GET", "/ui/vendor/uPlot.iife.min.js").status == 200
    for escape in ("/ui/../api.py", "/ui/%2e%2e/api.py", "/ui/..%2fapi.py"):  # never a file outside webmanager/ui
        answer = call(cluster, "main", "GET", escape)
        assert answer.status in (401, 403, 404) and "import" not in answer.text, escape
    assert call(cluster, "witness", "GET", "/").status == 404  # the witness serves status only


def test_failed_logins_lock_out_the_user_and_the_address(cluster):
    add_user(cluster, "luke", "viewer", "luke-password-1")
    for _ in range(5):
        assert call(cluster, "main", "POST", "/api/v1/login", {"user": "luke", "password": "guess-guess"}, source="127.0.0.2").status == 401
    for source in ("127.0.0.2", "127.0.0.3"):  # the right password is refused while locked, from any address
        locked = call(cluster, "main", "POST", "/api/v1/login", {"user": "luke", "password": "luke-password-1"}, source=source)
        assert locked.status == 429 and 800 < int(locked.headers["Retry-After"]) <= 900
    add_user(cluster, "lena", "viewer", "lena-password-1")
    assert call(cluster, "main", "POST", "/api/v1/login", {"user": "lena", "password": "lena-password-1"}, source="127.0.0.2").status == 429
    login(cluster, "main", "lena", "lena-password-1", source="127.0.0.4")  # another address, another user: not locked
    replicated(cluster)
    login(cluster, "backup", "luke", "luke-password-1")  # lock-outs are kept per server


def test_passwords_and_tokens_are_never_returned_or_logged(cluster):
    password, changed = "Sesame-Open-4711", "Sesame-Close-0815"
    code, created = admin(cluster, "PUT", "/api/v1/users/pat", {"role": "operator", "password": password})
    code2, updated = admin(cluster, "PUT", "/api/v1/users/pat", {"password": changed})
    assert (code, code2) == (201, 200) and created["password_set"] is True
    token = new_token(cluster, "pat")
    session = login(cluster, "main", "pat", changed)
    bodies = [json.dumps(created), json.dumps(updated), session.reply.text, json.dumps(admin(cluster, "GET", "/api/v1/users")[1]),
              json.dumps(admin(cluster, "GET", "/api/v1/audit")[1]), call(cluster, "main", "GET", "/api/v1/me", token=token).text]
    bad = call(cluster, "main", "POST", "/api/v1/login", {"user": "pat", "password": password}, source="127.0.0.5")
    assert bad.status == 401
    bodies.append(bad.text)
    secret = token.split("_", 2)[2]  # tdm_<id>_<secret>: the secret itself may hold "_"
    for body in bodies:
        assert password not in body and changed not in body and secret not in body and "$argon2" not in body and "sha256" not in body
    replicated(cluster)
    for node in cluster.nodes:
        log = cluster.log(node)
        assert password not in log and changed not in log and secret not in log and "$argon2" not in log


def test_the_first_admin_is_created_once_with_a_printed_password(cluster):
    printed = lambda: [line for node in cluster.nodes for line in cluster.log(node).splitlines() if PASSWORD_LINE in line]  # noqa: E731
    lines = wait_for(printed, 30, "the first admin's password to be printed (hashed at low priority)")
    replicated(cluster)
    assert printed() == lines and len(lines) == 1 and lines[0].startswith(PASSWORD_LINE)
    password = lines[0][len(PASSWORD_LINE):].strip()
    users = {user["name"]: user for user in admin(cluster, "GET", "/api/v1/users")[1]["users"]}
    assert users["admin"]["role"] == "admin" and users["admin"]["updated_by"] == "tandem"
    session = login(cluster, "main", "admin", password)
    assert call(cluster, "main", "GET", "/api/v1/users", cookie=session.cookie).status == 200


def test_of_two_first_admins_planned_at_once_only_one_applies():
    image, password = ProcessImage(), users.one_time_password()
    first, second = (users.first_admin(image, users.hash_password(password)) for _ in range(2))  # e.g. an active role that flapped
    assert image.apply(first) == 1
    assert isinstance(image.apply(second), Rejected)
    assert users.verify_password(users.find(image, "admin"), password) and users.first_admin(image, "unused") is None


def test_a_password_change_ends_the_old_sessions(cluster):
    add_user(cluster, "pia", "operator", "pia-password-1")
    old = login(cluster, "main", "pia", "pia-password-1")
    assert call(cluster, "main", "GET", "/api/v1/me", cookie=old.cookie).status == 200
    add_user(cluster, "pia", "operator", "pia-password-2")
    assert call(cluster, "main", "GET", "/api/v1/me", cookie=old.cookie).status == 401
    new = login(cluster, "main", "pia", "pia-password-2")
    assert call(cluster, "main", "GET", "/api/v1/me", cookie=new.cookie).status == 200
    assert admin(cluster, "PUT", "/api/v1/users/pia", {"role": "viewer"})[0] == 200  # a role change keeps the session ...
    me = call(cluster, "main", "GET", "/api/v1/me", cookie=new.cookie)
    assert me.status == 200 and me.json()["role"] == "viewer"  # ... with the new role at once


def test_user_tokens_work_until_the_user_is_deleted(cluster):
    add_user(cluster, "tom", "engineer", "tom-password-1")
    token, session = new_token(cluster, "tom"), login(cluster, "main", "tom", "tom-password-1")
    assert call(cluster, "main", "GET", "/api/v1/me", token=token).json() == {"user": "tom", "role": "engineer", "via": "token"}
    replicated(cluster)
    assert call(cluster, "backup", "GET", "/api/v1/me", token=token).status == 200  # every server knows the tokens
    assert call(cluster, "main", "GET", "/api/v1/me", token="tdm_00000000_" + token.split("_", 2)[2]).status == 401
    assert admin(cluster, "DELETE", "/api/v1/users/tom") == (200, {"deleted": "tom"})
    assert call(cluster, "main", "GET", "/api/v1/me", token=token).status == 401
    assert call(cluster, "main", "GET", "/api/v1/me", cookie=session.cookie).status == 401
    assert admin(cluster, "DELETE", "/api/v1/users/tom")[0] == 404


def test_the_cli_manages_users(cluster):
    def tandem(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "webmanager.tools.main", "user", *args, "--config", str(cluster.config.path)]
        return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60)

    added = tandem("add", "cleo", "--role", "operator", "--password-stdin", stdin="cleo-password-1\n")
    assert added.returncode == 0 and "role operator" in added.stdout, added.stderr
    assert tandem("passwd", "cleo", "--password-stdin", stdin="cleo-password-2\n").returncode == 0
    login(cluster, "main", "cleo", "cleo-password-2")
    token = tandem("token", "cleo").stdout.strip()
    assert call(cluster, "main", "GET", "/api/v1/me", token=token).json()["user"] == "cleo"
    listed = tandem("list")
    assert listed.returncode == 0 and "cleo" in listed.stdout and "operator" in listed.stdout and token.split("_", 2)[2] not in listed.stdout
    assert tandem("add", "x", "--role", "viewer", "--password-stdin", stdin="short\n").returncode == 1  # too short: refused


def test_a_session_from_main_works_on_the_backup_after_a_failover(make_cluster):
    cluster = make_cluster()
    cluster.wait_active(name="main")
    password = initial_password(cluster)
    session = login(cluster, "main", "admin", password)
    apply_building(cluster)
    replicated(cluster)
    cluster["main"].kill()
    cluster.wait_active(name="backup")
    me = call(cluster, "backup", "GET", "/api/v1/me", cookie=session.cookie)
    assert me.status == 200 and me.json()["user"] == "admin"
    written = call(cluster, "backup", "PUT", "/api/v1/points/room.setpoint", {"value": 22.0}, cookie=session.cookie, csrf=session.csrf)
    assert written.status == 200 and written.json()["source"] == "user:admin"
    login(cluster, "backup", "admin", password)
    logs = [cluster.log(node) for node in cluster.nodes]
    assert sum(log.count(PASSWORD_LINE) for log in logs) == 1  # the backup's activation created no second admin


def test_with_tls_the_api_speaks_https_and_the_session_cookie_is_secure(tmp_path):
    path = write_config(tmp_path / "tls")
    cert, key = self_signed(tmp_path)
    text = "".join(
        line + (f'tls_cert = "{cert}"\ntls_key = "{key}"\n' if line.startswith("data_dir") else "") for line in path.read_text().splitlines(True)
    )
    path.write_text(text)
    cluster = LocalCluster(path)
    cluster.start()
    try:
        cluster.wait_active(name="main")  # the node views travel over https, trusting the node's certificate
        password = initial_password(cluster)
        host, port = cluster["main"].spec.api.rsplit(":", 1)
        connection = http.client.HTTPSConnection(host, int(port), timeout=10, context=ssl.create_default_context(cafile=cert))
        connection.request("POST", "/api/v1/login", json.dumps({"user": "admin", "password": password}), {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200
        assert all("Secure" in header and "SameSite=Strict" in header for header in response.headers.get_all("Set-Cookie"))
        connection.close()
        plain = http.client.HTTPConnection(host, int(port), timeout=10)
        with pytest.raises((ConnectionError, http.client.BadStatusLine)):
            plain.request("GET", "/api/v1/node")
            plain.getresponse()
        asyncio.run(follow_over_tls(cluster, cert))
    finally:
        cluster.stop()


async def follow_over_tls(cluster: LocalCluster, cert: str) -> None:
    """The Python client over https: it finds the active, subscribes and writes, verifying the nodes' certificate."""
    servers = [node.url for node in cluster.config.cluster.nodes]
    received: list[dict] = []
    context = ssl.create_default_context(cafile=cert)
    async with TandemClient(servers, cluster.config.api_token, on_message=received.append, ssl=context) as client:
        await client.subscribe(points=["tls.point"])
        assert (await client.write("tls.point", 5))["value"] == 5
        await until(lambda: any(v["value"] == 5 for m in received if m["type"] == "points" for v in m["values"]), "the value over wss", 10)
        assert client.connected_to == cluster.config.node("main").url and client.active == "main"
