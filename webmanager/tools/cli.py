"""The `tandem` client commands (status, get, put, transfer, config, alarms, schedules, logic, trend, token, user) speaking to the nodes' HTTP API."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import getpass
import gzip
import http.client
import json
import os
import ssl
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import tomli_w
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
)
from rich.table import Table

from cluster.config import ConfigError, NodeConfig, TandemConfig, load_config

from .client import TandemClient, TandemError, Unreachable

HTTP_TIMEOUT = 3.0
T = TypeVar("T")
EXPORT_TIMEOUT = 60.0  # a building of 250,000 points is some 40 MB of JSON
APPLY_TIMEOUT = 120.0  # seconds without a word from the active server while it applies a building
UPLOAD_CHUNK = 256 * 2**10


class CliError(Exception):
    """A command failed; the message is printed and the exit code is `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def call_api(config: TandemConfig, api: str, method: str, path: str, body: Any = None, timeout: float = HTTP_TIMEOUT) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body, default=_iso).encode()
    node = next((node for node in config.cluster.nodes if node.api == api), None)
    context = node.client_ssl() if node is not None else None
    request = urllib.request.Request(
        node.url + path if node is not None else f"http://{api}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {config.api_token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            body = response.read()
            return response.status, body.decode() if response.headers.get_content_type() == "text/csv" else json.loads(body)
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except json.JSONDecodeError:
            return exc.code, {"error": exc.reason}


def _iso(value: object) -> str:
    """TOML dates and times (a schedule's `at = 07:00`) travel as ISO 8601 text."""
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


def _any_node(
    config: TandemConfig, method: str, path: str, body: Any = None, servers_only: bool = False, timeout: float = HTTP_TIMEOUT
) -> tuple[int, Any]:
    """Ask the nodes in configuration order; the first that answers does."""
    for node in config.cluster.nodes:
        if servers_only and not node.is_server:
            continue
        try:
            return call_api(config, node.api, method, path, body, timeout)
        except (OSError, json.JSONDecodeError):
            continue
    raise CliError("no node of the cluster answered (is it running? see `tandem status`)", code=2)


def _with_client(config: TandemConfig, timeout: float, call: Callable[[TandemClient], Awaitable[T]]) -> T:
    """Run `call` with a TandemClient of the cluster's nodes (no live feed), whose requests wait `timeout` per server."""

    async def run() -> T:
        async with TandemClient([node.url for node in config.cluster.nodes], config.api_token, ssl=_trusting(config), live=False, request_timeout=timeout) as client:
            return await call(client)

    try:
        return asyncio.run(run())
    except Unreachable:
        raise CliError("no node of the cluster answered (is it running? see `tandem status`)", code=2) from None
    except TandemError as exc:
        raise CliError(str(exc)) from None


def _trusting(config: TandemConfig) -> ssl.SSLContext | bool:
    """A TLS context that trusts every node's certificate (True: the system's trust store, when no node has one)."""
    certificates = [node.tls_cert for node in config.cluster.nodes if node.tls_cert is not None]
    if not certificates:
        return True
    context = ssl.create_default_context()
    for certificate in certificates:
        context.load_verify_locations(cafile=certificate)
    return context


def _active_server(config: TandemConfig) -> NodeConfig:
    name, _ = _with_client(config, HTTP_TIMEOUT, lambda client: client.find_active(HTTP_TIMEOUT))
    return config.node(name)


def _through_active(config: TandemConfig, method: str, path: str, body: Any = None, timeout: float = HTTP_TIMEOUT) -> tuple[int, Any]:
    """Send a request to the active server, following the active role as the Python client does (TandemClient.request)."""
    return _with_client(config, timeout, lambda client: client.request(method, path, body, timeout=HTTP_TIMEOUT))


def _fail_on_error(code: int, answer: Any) -> None:
    if code >= 400:
        raise CliError(answer.get("error", f"HTTP {code}") if isinstance(answer, dict) else f"HTTP {code}")


def cmd_status(config: TandemConfig, args: argparse.Namespace) -> int:
    _, status = _any_node(config, "GET", "/api/v1/status")
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        table = Table(title=f"cluster {status['cluster']}: active = {status['active'] or 'NONE'}")
        for column in ("node", "role", "up", "term", "commit", "applied", "lag", "lag s", "contact s"):
            table.add_column(column)
        for node in status["nodes"]:
            contact = node["last_contact"]
            table.add_row(
                node["name"],
                node["role"],
                "yes" if node["reachable"] else "NO",
                *(str(node[key]) if node[key] is not None else "-" for key in ("term", "commit_index", "applied_index", "lag_entries")),
                f"{node['lag_seconds']:.3f}" if node["lag_seconds"] is not None else "-",
                f"{contact:.3f}" if contact is not None else "-",
            )
        console = Console()
        console.print(table)
        for node in status["nodes"]:
            for problem in node["plugin_problems"]:
                console.print(f"{node['name']}: plugin {problem['plugin']} failed at {problem['stage']}: {problem['error']}", markup=False)
            for failing in node["failing"]:
                console.print(f"{node['name']}: {failing}", markup=False)
            if node["blocked"]:
                console.print(f"{node['name']}: {node['blocked']}", markup=False)
    return 0 if status["active"] else 1


def cmd_get(config: TandemConfig, args: argparse.Namespace) -> int:
    path = f"/api/v1/points/{urllib.request.quote(args.point, safe='')}"
    if args.consistent:
        code, answer = _through_active(config, "GET", path + "?consistent=1")
    else:
        code, answer = _any_node(config, "GET", path, servers_only=True)
    _fail_on_error(code, answer)
    print(json.dumps(answer) if args.json else json.dumps(answer["value"]))
    return 0


def parse_value(text: str) -> Any:
    """A point value from the command line: JSON (21.5, true, null, "text") or else the plain text."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    if isinstance(value, (list, dict)):
        raise CliError(f"value {text!r} must be a number, true/false, null or text, not a list or object", code=2)
    return value


def cmd_put(config: TandemConfig, args: argparse.Namespace) -> int:
    path = f"/api/v1/points/{urllib.request.quote(args.point, safe='')}"
    code, answer = _through_active(config, "PUT", path, {"value": parse_value(args.value)})
    _fail_on_error(code, answer)
    pending = " (committed; the active drives the device and records the read-back)" if answer.get("pending") else ""
    print(f"{answer['name']} = {json.dumps(answer['value'])}{pending}")
    return 0


def cmd_transfer(config: TandemConfig, args: argparse.Namespace) -> int:
    target = config.node(args.to)
    if not target.is_server:
        raise CliError(f"{args.to} is the witness: it votes but never becomes active; transfer to a server", code=2)
    timeout = args.timeout or config.cluster.transfer_timeout
    code, answer = _through_active(config, "POST", "/api/v1/cluster/transfer", {"to": args.to, "timeout": timeout}, timeout + HTTP_TIMEOUT)
    _fail_on_error(code, answer)
    gap = _measure_gap(config, target.api, answer["term"], answer["last_act"])
    gap_text = f"{gap * 1000:.0f} ms" if gap is not None else "unknown"
    print(f"active role moved {answer['from']} -> {answer['to']} (term {answer['term']}); gap in acting: {gap_text}")
    return 0


def _measure_gap(config: TandemConfig, api: str, term: int, last_act: float | None, wait: float = 2.0) -> float | None:
    """New active's first act in its term minus the old active's last act."""
    deadline = time.monotonic() + wait
    while last_act is not None and time.monotonic() < deadline:
        try:
            _, view = call_api(config, api, "GET", "/api/v1/node")
        except OSError:
            view = {}
        acts = view.get("acts") or {}
        if acts.get("term") == term and acts.get("first") is not None:
            return acts["first"] - last_act
        time.sleep(0.02)
    return None


def cmd_config(config: TandemConfig, args: argparse.Namespace) -> int:
    if args.action == "export":
        print(tomli_w.dumps(_from_a_server(config, "/api/v1/config", timeout=EXPORT_TIMEOUT)), end="")
        return 0
    if args.file is None:
        raise CliError("config apply needs the building FILE.toml to apply", code=2)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=Console(stderr=True), transient=True) as progress:
        step = progress.add_task(f"reading {args.file}", total=None)
        try:
            building = tomllib.loads(Path(args.file).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CliError(f"{args.file}: file not found", code=2) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"{args.file}: cannot read: {exc}", code=2) from None
        except tomllib.TOMLDecodeError as exc:
            raise CliError(f"{args.file}: not valid TOML: {exc}", code=2) from None
        lines = (json.dumps({section: entry}, default=_iso) for section, value in building.items() for entry in (value if isinstance(value, list) else [value]))
        body = gzip.compress("\n".join(lines).encode(), compresslevel=1)  # one {section: entry} per line: parsed a line at a time
        active = _active_server(config)
        try:
            code, answer = _apply_building(config, active, body, lambda description, done, total: progress.update(step, description=description, completed=done, total=total))
        except OSError as exc:
            raise CliError(f"the active server {active.name} ({active.api}) did not answer: {exc}") from None
    if code == 400 and isinstance(answer, dict):
        problems = answer.get("problems") or [answer.get("error", "refused")]
        raise CliError("\n".join(f"{args.file}: {problem}" for problem in problems), code=2)
    _fail_on_error(code, answer)
    changed = answer["changed"]
    print(f"{args.file}: {changed} document(s) changed" if changed else f"{args.file}: already applied, nothing changed")
    return 0


def _apply_building(config: TandemConfig, node: NodeConfig, body: bytes, progress: Callable[[str, int | None, int | None], None]) -> tuple[int, Any]:
    """POST a gzipped building to the node's /api/v1/config, showing the upload, then the server's steps as they stream back."""
    host, port = node.api.rsplit(":", 1)
    connection = (
        http.client.HTTPSConnection(host, int(port), timeout=APPLY_TIMEOUT, context=node.client_ssl())
        if node.tls_cert else http.client.HTTPConnection(host, int(port), timeout=APPLY_TIMEOUT)
    )
    headers = {
        "Authorization": f"Bearer {config.api_token}", "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip",
        "Content-Length": str(len(body)), "Accept": "application/x-ndjson",
    }
    connection.putrequest("POST", "/api/v1/config")
    for key, value in headers.items():
        connection.putheader(key, value)
    connection.endheaders()
    for offset in range(0, len(body), UPLOAD_CHUNK):
        connection.send(body[offset : offset + UPLOAD_CHUNK])
        progress("uploading", min(offset + UPLOAD_CHUNK, len(body)), len(body))
    progress("validating on the active server", None, None)
    response = connection.getresponse()
    if response.headers.get_content_type() != "application/x-ndjson":
        return response.status, json.loads(response.read())
    for line in response:
        event = json.loads(line)
        step = event.get("progress")
        if step is None:
            return event.pop("status"), event
        if step["step"] == "committed":
            progress("committing", step["part"], step["parts"])
        elif step["step"] == "planned":
            progress(f"committing {step['changed']:,} document change(s)", 0, step["parts"])
    raise OSError("the answer ended before the outcome")


def _from_a_server(config: TandemConfig, path: str, timeout: float = HTTP_TIMEOUT) -> Any:
    """GET `path` from the first server that answers; CliError unless it answered 2xx."""
    code, answer = _any_node(config, "GET", path, servers_only=True, timeout=timeout)
    _fail_on_error(code, answer)
    return answer


def _listing(items: list[dict[str, Any]], as_json: bool, title: str, columns: tuple[str, ...], row: Callable[[dict], tuple]) -> int:
    """Print `items` as JSON, or as a table of `columns` with the cells `row(item)` for each."""
    if as_json:
        print(json.dumps(items, indent=2))
        return 0
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for item in items:
        table.add_row(*row(item))
    Console().print(table)
    return 0


def cmd_alarms(config: TandemConfig, args: argparse.Namespace) -> int:
    answer = _from_a_server(config, "/api/v1/alarms")
    alarms = answer["alarms"] if args.all else [a for a in answer["alarms"] if a["state"] != "normal" or a["shelved"]]
    title = f"{len(alarms)} alarm(s)" + ("" if args.all else " not normal (--all shows every alarm)")
    columns = ("alarm", "state", "priority", "class", "point", "value", "since", "acknowledged", "shelved until", "message")
    return _listing(alarms, args.json, title, columns, _alarm_row)


def _alarm_row(alarm: dict[str, Any]) -> tuple[str, ...]:
    ack, shelf = alarm["ack"], alarm["shelved"]
    return (
        alarm["name"], alarm["state"], str(alarm["priority"]), alarm["class"], alarm["point"], json.dumps(alarm["value"]),
        _clock(alarm["since"]), f"{ack['user']} {_clock(ack['ts'])}" if ack else "-", _clock(shelf["until"]) if shelf else "-",
        alarm["message"],
    )


def _clock(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts is not None else "-"


def cmd_alarm_action(config: TandemConfig, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"user": args.user, "comment": args.comment}
    if args.command == "shelve":
        body["minutes"] = args.minutes
    path = f"/api/v1/alarms/{urllib.request.quote(args.alarm, safe='')}/{args.command}"
    code, answer = _through_active(config, "POST", path, body)
    _fail_on_error(code, answer)
    shelved = f", shelved until {_clock(answer['shelved']['until'])}" if answer["shelved"] else ""
    print(f"{answer['name']}: {answer['state']}{shelved}")
    return 0


def cmd_schedules(config: TandemConfig, args: argparse.Namespace) -> int:
    schedules = _from_a_server(config, "/api/v1/schedules")["schedules"]
    return _listing(
        schedules, args.json, f"{len(schedules)} schedule(s); times are local to each schedule's time zone",
        ("schedule", "point", "timezone", "due now", "last applied", "next", "problem"),
        lambda s: (s["name"], s["point"], s["timezone"], *(_transition(s[key]) for key in ("due", "applied", "next")), s["problem"] or "-"),
    )


def _transition(transition: dict[str, Any] | None) -> str:
    """A schedule's transition as "value at local time" ("value (default)" before any event; "-" for none)."""
    if transition is None:
        return "-"
    value = json.dumps(transition["value"])
    return f"{value} at {transition['local'].replace('T', ' ')}" if transition["local"] else f"{value} (default)"


def cmd_logic(config: TandemConfig, args: argparse.Namespace) -> int:
    rules = _from_a_server(config, "/api/v1/logic")["rules"]
    columns = ("rule", "output", "last output", "state", "cycle", "problem", "expression")
    return _listing(rules, args.json, f"{len(rules)} logic rule(s)", columns, _rule_row)


def _rule_row(rule: dict[str, Any]) -> tuple[str, ...]:
    waiting = f"waiting for {', '.join(rule['unavailable'])}" if rule["unavailable"] else "-"
    return (
        rule["name"], rule["output"], json.dumps(rule["last_output"]), json.dumps(rule["state"]) if rule["state"] else "-",
        f"{rule['cycle']} s" if rule["cycle"] else "-", f"disabled: {rule['disabled']}" if rule["disabled"] else waiting,
        rule["expression"],
    )


def cmd_trend(config: TandemConfig, args: argparse.Namespace) -> int:
    query = {key: value for key, value in (("from", args.start), ("to", args.end), ("step", args.step)) if value is not None}
    if args.csv:
        query["format"] = "csv"
    path = f"/api/v1/trends/{urllib.request.quote(args.trend, safe='')}?{urllib.parse.urlencode(query)}"
    answer = _from_a_server(config, path)
    if args.csv:
        sys.stdout.write(answer)
        return 0
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    rows = answer.get("buckets") or answer.get("samples") or []
    title = f"{answer['trend']} ({answer['point']}): {len(rows)} {'bucket' if args.step else 'sample'}(s) from {_clock(answer['from'])} to {_clock(answer['to'])}"
    columns = ("min", "max", "avg", "count") if args.step else ("value", "quality")
    cells = lambda row: (_clock(row["ts"]), *(json.dumps(row[column]) if column != "quality" else row[column] for column in columns))  # noqa: E731
    return _listing(rows, False, title, ("time", *columns), cells)


def cmd_token(config: TandemConfig, args: argparse.Namespace) -> int:
    print(config.api_token)
    return 0


def _user_row(user: dict[str, Any]) -> tuple[str, ...]:
    tokens = ", ".join(token["id"] for token in user["tokens"]) or "-"
    return user["name"], user["role"], "set" if user["password_set"] else "-", tokens, user["updated_by"], _clock(user["updated_ts"])


def _new_password(args: argparse.Namespace) -> str:
    """The password for `user add`/`user passwd`: the first line of stdin (--password-stdin) or typed twice."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != password:
        raise CliError("the passwords differ", code=2)
    return password


def cmd_user(config: TandemConfig, args: argparse.Namespace) -> int:
    path = f"/api/v1/users/{urllib.request.quote(args.name or '', safe='')}"
    if args.action == "list":
        users = _from_a_server(config, "/api/v1/users")["users"]
        return _listing(users, False, f"{len(users)} user(s)", ("user", "role", "password", "tokens", "changed by", "changed"), _user_row)
    if args.name is None:
        raise CliError(f"user {args.action} needs the user's NAME", code=2)
    if args.action == "add" and args.role is None:
        raise CliError("user add needs --role (viewer, operator, engineer or admin)", code=2)
    if args.action in ("add", "passwd"):
        body = {"password": _new_password(args), **({"role": args.role} if args.role else {})}
        code, answer = _through_active(config, "PUT", path, body)
        _fail_on_error(code, answer)
        print(f"user {answer['name']}: role {answer['role']}, password {'set' if answer['password_set'] else 'not set'}")
    elif args.action == "role":
        if args.role is None:
            raise CliError("user role needs --role", code=2)
        code, answer = _through_active(config, "PUT", path, {"role": args.role})
        _fail_on_error(code, answer)
        print(f"user {answer['name']}: role {answer['role']}")
    elif args.action == "delete":
        code, answer = _through_active(config, "DELETE", path)
        _fail_on_error(code, answer)
        print(f"user {answer['deleted']} deleted")
    else:  # token
        code, answer = _through_active(config, "POST", f"{path}/tokens")
        _fail_on_error(code, answer)
        print(answer["token"])
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(prog="tandem", description="Tandem hot-standby BMS cluster")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_default = os.environ.get("TANDEM_CONFIG", "tandem.toml")

    def add(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--config", default=config_default, help="cluster TOML file (default: $TANDEM_CONFIG or tandem.toml)")
        sub.set_defaults(handler=handler)
        return sub

    status = add("status", cmd_status, "show every node's role, term, indexes and lag (exit 1 if no active)")
    status.add_argument("--json", action="store_true", help="print JSON")
    get = add("get", cmd_get, "read a point's value")
    get.add_argument("point")
    get.add_argument("--json", action="store_true", help="print value, quality and timestamp as JSON")
    get.add_argument("--consistent", action="store_true", help="read through the active server")
    put = add("put", cmd_put, "write a point's value through the active server")
    put.add_argument("point")
    put.add_argument("value", help="JSON scalar (21.5, true, null) or text")
    transfer = add("transfer", cmd_transfer, "move the active role to another server on purpose")
    transfer.add_argument("--to", required=True, metavar="NODE")
    transfer.add_argument("--timeout", type=float, help="seconds to wait for the target (default: cluster.transfer_timeout)")
    building = add("config", cmd_config, "apply a building configuration (devices, points) or export the current one")
    building.add_argument("action", choices=["apply", "export"])
    building.add_argument("file", nargs="?", metavar="FILE.toml", help="for apply: the building configuration")
    alarms = add("alarms", cmd_alarms, "list the alarms that are not normal (or all of them)")
    alarms.add_argument("--all", action="store_true", help="also list normal alarms")
    alarms.add_argument("--json", action="store_true", help="print JSON")
    for action, help_text in (("ack", "acknowledge an alarm"), ("shelve", "shelve an alarm for a while"), ("unshelve", "end an alarm's shelving")):
        sub = add(action, cmd_alarm_action, help_text)
        sub.add_argument("alarm")
        sub.add_argument("--comment", default="", help="why (kept in the alarm journal)")
        sub.add_argument("--user", default=getpass.getuser(), help="who (default: your login name)")
        if action == "shelve":
            sub.add_argument("--minutes", type=float, required=True, help="how long the alarm stays shelved")
    schedules = add("schedules", cmd_schedules, "list the schedules: the value due now, the transition last applied and the next one")
    schedules.add_argument("--json", action="store_true", help="print JSON")
    logic = add("logic", cmd_logic, "list the logic rules with their state, last output and errors")
    logic.add_argument("--json", action="store_true", help="print JSON")
    trend = add("trend", cmd_trend, "show or export a trend's history (raw samples, or min/max/avg buckets with --step)")
    trend.add_argument("trend", metavar="TREND", help="a trend's name, or a point that has one trend")
    trend.add_argument("--from", dest="start", help="start: ISO 8601 (UTC unless it names an offset) or epoch seconds (default: an hour before --to)")
    trend.add_argument("--to", dest="end", help="end: ISO 8601 or epoch seconds (default: now)")
    trend.add_argument("--step", type=float, help="bucket width in seconds: min, max and average per bucket")
    output = trend.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="print CSV")
    output.add_argument("--json", action="store_true", help="print JSON")
    add("token", cmd_token, "print the cluster's API bearer token (role admin) for scripts")
    user = add("user", cmd_user, "manage Web Manager users: add, passwd, role, delete, list, token (prints a new API token once)")
    user.add_argument("action", choices=["add", "passwd", "role", "delete", "list", "token"])
    user.add_argument("name", nargs="?", metavar="NAME")
    user.add_argument("--role", choices=["viewer", "operator", "engineer", "admin"], help="for add (required) and role")
    user.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin instead of prompting")
    return parser, add


def run_command(args: argparse.Namespace) -> int:
    """Load the configuration and run a parsed command, turning failures into a message and an exit code."""
    try:
        config = load_config(args.config)
        return args.handler(config, args)
    except ConfigError as exc:
        print(f"tandem {args.command}: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"tandem {args.command}: {exc}", file=sys.stderr)
        return exc.code
