"""load_config: the demo file loads, paths resolve against the file's folder, and every bad file gives a
ConfigError that names the file, the offending key and what is wrong."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cluster.config import ConfigError, Role, load_config

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "config" / "demo.toml"
SECRET = "0123456789abcdef-test-secret"


def valid_document() -> dict[str, Any]:
    return {
        "cluster": {
            "name": "test",
            "secret": SECRET,
            "failback": "auto",
            "timers": {"heartbeat": 0.05, "election_min": 0.3, "election_max": 0.6},
            "nodes": [
                {"name": name, "role": name, "raft": f"127.0.0.1:{7101 + i}", "api": f"127.0.0.1:{8101 + i}", "data_dir": f"var/{name}"}
                for i, name in enumerate(("main", "backup", "witness"))
            ],
        }
    }


def _scalar(value: Any) -> str:
    return json.dumps(value)  # TOML basic strings, numbers and booleans read the same for these simple values


def render(document: dict[str, Any]) -> str:
    """Write a document of tables, sub-tables and arrays of tables (two levels, as ours are) as TOML."""
    lines: list[str] = []
    for top, table in document.items():
        lines.append(f"[{top}]")
        subtables = {k: v for k, v in table.items() if isinstance(v, dict)}
        arrays = {k: v for k, v in table.items() if isinstance(v, list)}
        lines += [f"{k} = {_scalar(v)}" for k, v in table.items() if k not in subtables and k not in arrays]
        for name, sub in subtables.items():
            lines.append(f"[{top}.{name}]")
            lines += [f"{k} = {_scalar(v)}" for k, v in sub.items()]
        for name, items in arrays.items():
            for item in items:
                lines.append(f"[[{top}.{name}]]")
                lines += [f"{k} = {_scalar(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def write(directory: Path, document: dict[str, Any], name: str = "cluster.toml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(render(document))
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


# ---- good files ----


def test_demo_config_loads_with_main_backup_and_witness() -> None:
    config = load_config(DEMO)
    assert [node.name for node in config.cluster.nodes] == ["main", "backup", "witness"]
    assert config.by_role(Role.MAIN).name == "main"
    assert config.by_role(Role.BACKUP).name == "backup"
    assert config.by_role(Role.WITNESS).name == "witness"
    assert [node.is_server for node in config.cluster.nodes] == [True, True, False]
    assert config.path == DEMO
    # data_dir = "var/main" is relative to config/, not to the current directory
    assert config.node("main").data_dir == DEMO.parent / "var" / "main"
    timers = config.cluster.timers
    assert timers.heartbeat < timers.election_min < timers.election_max


def test_relative_paths_resolve_against_the_files_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = valid_document()
    cluster = document["cluster"]
    del cluster["secret"]
    cluster["secret_file"] = "keys/secret.txt"
    absolute = tmp_path / "elsewhere" / "witness-data"
    cluster["nodes"][2]["data_dir"] = str(absolute)
    folder = tmp_path / "etc" / "tandem"
    write(folder, document)
    (folder / "keys").mkdir()
    (folder / "keys" / "secret.txt").write_text(f"  {SECRET}\n")
    # load through a relative path from an unrelated working directory
    monkeypatch.chdir(tmp_path / "etc")
    config = load_config("tandem/cluster.toml")
    assert config.path == folder / "cluster.toml"
    assert config.path.is_absolute()
    assert config.node("main").data_dir == folder / "var" / "main"
    assert config.node("backup").data_dir == folder / "var" / "backup"
    assert config.node("witness").data_dir == absolute
    assert config.secret == SECRET  # read from the file next to the config, surrounding whitespace stripped


def test_api_token_is_stable_for_a_secret_and_differs_between_secrets(tmp_path: Path) -> None:
    first = load_config(write(tmp_path / "a", valid_document()))
    again = load_config(write(tmp_path / "b", valid_document()))
    other_document = valid_document()
    other_document["cluster"]["secret"] = SECRET + "-other"
    other = load_config(write(tmp_path / "c", other_document))
    assert re.fullmatch(r"[0-9a-f]{64}", first.api_token)
    assert first.api_token == again.api_token
    assert other.api_token != first.api_token
    assert first.raft_password != first.api_token  # the two derived secrets are independent
    assert SECRET not in first.api_token


# ---- unreadable files ----


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "cluster.toml"
    message = config_error(path)
    assert str(path) in message
    assert "file not found" in message


def test_directory_instead_of_file(tmp_path: Path) -> None:
    message = config_error(tmp_path)
    assert str(tmp_path) in message
    assert "cannot read" in message


@pytest.mark.parametrize(
    "text, where",
    [
        ("[cluster\nname = 'x'\n", "line 1"),
        ("[cluster]\nname = \"x\"\nsecret = \"unterminated\n", "line 3"),
        ("[cluster]\nname = \"x\"\nname = \"y\"\n", "line 3"),  # a key given twice
    ],
    ids=["unclosed-table", "unterminated-string", "repeated-key"],
)
def test_invalid_toml(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    message = config_error(path)
    assert str(path) in message
    assert "not valid TOML" in message
    assert where in message


# ---- invalid content: (mutation of a valid document, key the message must name, what it must say) ----


def _set(*keys: str | int, value: Any) -> Callable[[dict], None]:
    def mutate(document: dict) -> None:
        target = document["cluster"]
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return mutate


def _delete(*keys: str | int) -> Callable[[dict], None]:
    def mutate(document: dict) -> None:
        target = document["cluster"]
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return mutate


def _both(*mutations: Callable[[dict], None]) -> Callable[[dict], None]:
    def mutate(document: dict) -> None:
        for mutation in mutations:
            mutation(document)

    return mutate


def _top_level(document: dict) -> None:
    document["database"] = {"url": "sqlite://"}


INVALID = [
    pytest.param(_top_level, "database", "unknown top-level key", id="unknown-top-level-key"),
    pytest.param(_set("colour", value="red"), "cluster.colour", "Extra inputs are not permitted", id="unknown-cluster-key"),
    pytest.param(_set("timers", "heartbeet", value=0.05), "cluster.timers.heartbeet", "Extra inputs are not permitted", id="unknown-timer-key"),
    pytest.param(_set("nodes", 2, "port", value=1), "cluster.nodes[2].port", "Extra inputs are not permitted", id="unknown-node-key"),
    pytest.param(_delete("nodes", 0, "api"), "cluster.nodes[0].api", "Field required", id="node-without-api"),
    pytest.param(_delete("name"), "cluster.name", "Field required", id="cluster-without-name"),
    pytest.param(_set("nodes", 1, "role", value="main"), "cluster.nodes", "exactly one main, one backup and one witness", id="two-mains"),
    pytest.param(_set("nodes", 2, "role", value="backup"), "cluster.nodes", "exactly one main, one backup and one witness", id="no-witness"),
    pytest.param(_delete("nodes", 2), "cluster.nodes", "exactly one main, one backup and one witness", id="two-nodes"),
    pytest.param(_set("nodes", 0, "role", value="primary"), "cluster.nodes[0].role", "'main', 'backup' or 'witness'", id="unknown-role"),
    pytest.param(_set("nodes", 0, "name", value="main node"), "cluster.nodes[0].name", "pattern", id="name-with-space"),
    pytest.param(_set("nodes", 1, "name", value="main"), "cluster.nodes[1].name", "'main' repeats cluster.nodes[0].name", id="duplicate-names"),
    pytest.param(_set("nodes", 1, "raft", value="127.0.0.1:7101"), "cluster.nodes[1].raft", "'127.0.0.1:7101' repeats cluster.nodes[0].raft", id="duplicate-raft"),
    pytest.param(_set("nodes", 2, "api", value="127.0.0.1:8102"), "cluster.nodes[2].api", "'127.0.0.1:8102' repeats cluster.nodes[1].api", id="duplicate-api"),
    pytest.param(
        _set("nodes", 1, "data_dir", value="var/main"),
        "cluster.nodes[1].data_dir",
        "'var/main' repeats cluster.nodes[0].data_dir on the same host",
        id="duplicate-data-dir-on-one-host",
    ),
    pytest.param(_set("nodes", 1, "raft", value="localhost"), "cluster.nodes[1].raft", "expected 'host:port', got 'localhost'", id="address-without-port"),
    pytest.param(_set("nodes", 1, "raft", value="1.2.3.4:99999"), "cluster.nodes[1].raft", "from 1 to 65535, got '99999'", id="port-out-of-range"),
    pytest.param(_set("nodes", 1, "raft", value="host:port"), "cluster.nodes[1].raft", "from 1 to 65535, got 'port'", id="port-not-a-number"),
    pytest.param(_set("nodes", 2, "api", value=":8080"), "cluster.nodes[2].api", "expected 'host:port'", id="address-without-host"),
    pytest.param(_set("nodes", 0, "api", value="bad/host:80"), "cluster.nodes[0].api", "neither an IP address nor a host name", id="bad-host-name"),
    pytest.param(_set("secret", value="short"), "cluster.secret", "at least 16 characters", id="secret-too-short"),
    pytest.param(_set("secret_file", value="secret.txt"), "secret_file", "exactly one of 'secret' or 'secret_file'", id="secret-and-secret-file"),
    pytest.param(_delete("secret"), "secret_file", "exactly one of 'secret' or 'secret_file'", id="no-secret"),
    pytest.param(
        _both(_delete("secret"), _set("secret_file", value="missing-secret.txt")),
        "cluster.secret_file",
        "cannot read",
        id="secret-file-missing",
    ),
    pytest.param(_set("failback", value="sometimes"), "cluster.failback", "'auto' or 'manual'", id="failback-sometimes"),
    pytest.param(_set("failback_holdoff", value=-1.0), "cluster.failback_holdoff", "greater than 0", id="negative-holdoff"),
    pytest.param(_set("transfer_timeout", value=0), "cluster.transfer_timeout", "greater than 0", id="zero-transfer-timeout"),
    pytest.param(_set("snapshot_entries", value=10), "cluster.snapshot_entries", "greater than or equal to 100", id="tiny-snapshot-entries"),
    pytest.param(_set("timers", "election_max", value=0.3), "cluster.timers", "election_max must be more than election_min", id="election-max-equal-min"),
    pytest.param(_set("timers", "election_max", value=0.2), "cluster.timers", "election_max must be more than election_min", id="election-max-below-min"),
    pytest.param(
        _set("timers", value={"heartbeat": 0.1, "election_min": 0.3, "election_max": 0.6}),
        "cluster.timers",
        "election_min must be more than 3 x heartbeat",
        id="election-min-equal-3-heartbeats",
    ),
    pytest.param(
        _set("timers", value={"heartbeat": 0.1, "election_min": 0.25, "election_max": 0.6}),
        "cluster.timers",
        "election_min must be more than 3 x heartbeat",
        id="election-min-below-3-heartbeats",
    ),
    pytest.param(_set("timers", "heartbeat", value=-0.05), "cluster.timers.heartbeat", "greater than 0", id="negative-heartbeat"),
]


@pytest.mark.parametrize("mutate, key, says", INVALID)
def test_invalid_config_names_file_key_and_problem(tmp_path: Path, mutate: Callable[[dict], None], key: str, says: str) -> None:
    document = valid_document()
    load_config(write(tmp_path / "valid", copy.deepcopy(document)))  # the unmutated document is fine
    mutate(document)
    path = write(tmp_path / "invalid", document)
    message = config_error(path)
    assert message.startswith(str(path)), message
    assert key in message, message
    assert says in message, message


@pytest.mark.parametrize(
    "content, says",
    [
        (b"too-short\n", "fewer than 16 characters"),
        (b"   \n\n", "fewer than 16 characters"),
        (b"\xff\xfe" + b"x" * 30, "not UTF-8"),
    ],
    ids=["short", "blank", "not-utf8"],
)
def test_bad_secret_file_content(tmp_path: Path, content: bytes, says: str) -> None:
    document = valid_document()
    del document["cluster"]["secret"]
    document["cluster"]["secret_file"] = "secret.txt"
    path = write(tmp_path, document)
    (tmp_path / "secret.txt").write_bytes(content)
    message = config_error(path)
    assert message.startswith(str(path)), message
    assert "cluster.secret_file" in message
    assert str(tmp_path / "secret.txt") in message
    assert says in message


def test_same_data_dir_on_different_hosts_is_fine(tmp_path: Path) -> None:
    document = valid_document()
    for i, node in enumerate(document["cluster"]["nodes"]):
        node["raft"] = f"10.0.0.{i + 1}:7000"
        node["api"] = f"10.0.0.{i + 1}:8000"
        node["data_dir"] = "/var/lib/tandem"
    config = load_config(write(tmp_path, document))
    assert {str(node.data_dir) for node in config.cluster.nodes} == {"/var/lib/tandem"}
