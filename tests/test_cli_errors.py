"""The real `tandem` command (python -m webmanager.tools.main) on bad input: a clear message and a non-zero exit."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.config import load_config
from webmanager.tools.launcher import wait_for, write_config

TIMEOUT = 30


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TANDEM_CONFIG"}
    env.update(extra)
    return env


def tandem(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webmanager.tools.main", *args],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def split(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    """A valid three-node loopback config whose nodes are not running (ports free at creation)."""
    return write_config(tmp_path / "cluster")


@pytest.fixture
def silent_listeners(config_path: Path) -> Iterator[list[socket.socket]]:
    """Listening sockets on every node's API port that never accept: any connection attempt stays queued."""
    sockets = []
    try:
        for node in load_config(config_path).cluster.nodes:
            sock = socket.socket()
            sock.bind(split(node.api))
            sock.listen(8)
            sock.setblocking(False)
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def assert_never_contacted(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        try:
            connection, peer = sock.accept()
        except BlockingIOError:
            continue
        connection.close()
        raise AssertionError(f"the CLI connected to {sock.getsockname()} from {peer}")


# ---- configuration problems ----


@pytest.mark.parametrize("command", [["status"], ["get", "p"], ["put", "p", "1"], ["token"], ["transfer", "--to", "backup"], ["run", "--node", "main"]])
def test_missing_config_file_exits_2_naming_it(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "missing.toml"
    result = tandem(*command, "--config", str(missing), cwd=tmp_path)
    assert result.returncode == 2, result
    assert str(missing) in result.stderr
    assert "file not found" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_default_config_comes_from_tandem_config_variable(tmp_path: Path) -> None:
    missing = tmp_path / "from-env.toml"
    result = tandem("status", cwd=tmp_path, env=clean_env(TANDEM_CONFIG=str(missing)))
    assert result.returncode == 2, result
    assert str(missing) in result.stderr
    # without the variable the default is ./tandem.toml
    result = tandem("status", cwd=tmp_path)
    assert result.returncode == 2, result
    assert "tandem.toml: file not found" in result.stderr


@pytest.mark.parametrize("command", [["status"], ["run", "--node", "main"]])
def test_invalid_toml_exits_2(tmp_path: Path, command: list[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster\nname = 'x'\n")
    result = tandem(*command, "--config", str(bad), cwd=tmp_path)
    assert result.returncode == 2, result
    assert "configuration error" in result.stderr
    assert f"{bad}: not valid TOML" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_config_value_exits_2_naming_the_key(tmp_path: Path, config_path: Path) -> None:
    text = config_path.read_text().replace('failback = "auto"', 'failback = "sometimes"')
    assert "sometimes" in text
    config_path.write_text(text)
    result = tandem("status", "--config", str(config_path), cwd=tmp_path)
    assert result.returncode == 2, result
    assert f"{config_path}: cluster.failback" in result.stderr


@pytest.mark.parametrize("command", [["run", "--node", "nosuch"], ["transfer", "--to", "nosuch"]])
def test_unknown_node_exits_2_listing_known_nodes(tmp_path: Path, config_path: Path, command: list[str]) -> None:
    result = tandem(*command, "--config", str(config_path), cwd=tmp_path)
    assert result.returncode == 2, result
    assert "'nosuch'" in result.stderr
    assert "known: main, backup, witness" in result.stderr
    assert "Traceback" not in result.stderr


# ---- argument errors (argparse) ----


@pytest.mark.parametrize(
    "command, says",
    [
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["run"], "required: --node"),
        (["transfer"], "required: --to"),
        (["get"], "required: point"),
        (["put", "p"], "required: value"),
        (["status", "--verbose"], "unrecognized arguments: --verbose"),
        (["transfer", "--to", "backup", "--timeout", "soon"], "invalid float value: 'soon'"),
        (["run", "--node", "main", "--log-level", "LOUD"], "invalid choice: 'LOUD'"),
    ],
    ids=["no-command", "unknown-command", "run-without-node", "transfer-without-to", "get-without-point", "put-without-value", "unknown-option", "bad-timeout", "bad-log-level"],
)
def test_bad_arguments_exit_2_with_usage(tmp_path: Path, command: list[str], says: str) -> None:
    result = tandem(*command, cwd=tmp_path)
    assert result.returncode == 2, result
    assert "usage: tandem" in result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr


# ---- token ----


def test_token_prints_the_api_token(tmp_path: Path, config_path: Path) -> None:
    result = tandem("token", "--config", str(config_path), cwd=tmp_path)
    assert result.returncode == 0, result
    token = result.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", token), result.stdout
    assert token == load_config(config_path).api_token
    other = write_config(tmp_path / "other")  # a fresh random secret gives another token
    assert tandem("token", "--config", str(other), cwd=tmp_path).stdout.strip() != token


# ---- nodes not running ----


@pytest.mark.parametrize(
    "command",
    [["status"], ["status", "--json"], ["get", "ahu-1/temp"], ["get", "--consistent", "ahu-1/temp"], ["put", "ahu-1/setpoint", "21.5"], ["put", "ahu-1/mode", "auto"], ["transfer", "--to", "backup"]],
    ids=["status", "status-json", "get", "get-consistent", "put-number", "put-text", "transfer"],
)
def test_no_node_running_exits_2(tmp_path: Path, config_path: Path, command: list[str]) -> None:
    result = tandem(*command, "--config", str(config_path), cwd=tmp_path)
    assert result.returncode == 2, result
    assert re.search(r"no node .* answered", result.stderr), result.stderr
    assert result.stderr.startswith(f"tandem {command[0]}: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# ---- refused before contacting anything ----


def test_transfer_to_witness_is_refused_without_contacting_nodes(tmp_path: Path, config_path: Path, silent_listeners: list[socket.socket]) -> None:
    result = tandem("transfer", "--to", "witness", "--config", str(config_path), cwd=tmp_path)
    assert result.returncode == 2, result
    assert "witness" in result.stderr
    assert "never becomes active" in result.stderr
    assert_never_contacted(silent_listeners)


@pytest.mark.parametrize("value", ["[1,2]", '{"a": 1}', "[]"])
def test_put_refuses_list_or_object_without_contacting_nodes(tmp_path: Path, config_path: Path, silent_listeners: list[socket.socket], value: str) -> None:
    result = tandem("put", "p", value, "--config", str(config_path), cwd=tmp_path)
    assert result.returncode == 2, result
    assert repr(value) in result.stderr
    assert "not a list or object" in result.stderr
    assert_never_contacted(silent_listeners)


def test_silent_listeners_do_see_a_cli_that_connects(tmp_path: Path, config_path: Path, silent_listeners: list[socket.socket]) -> None:
    """Control for the two tests above: a command that does contact nodes is noticed (it times out on the silent port)."""
    result = tandem("get", "p", "--config", str(config_path), cwd=tmp_path)
    assert result.returncode == 2, result
    with pytest.raises(AssertionError, match="the CLI connected"):
        assert_never_contacted(silent_listeners)


# ---- `tandem run` when its ports are taken ----


def run_node_with_port_taken(tmp_path: Path, config_path: Path, key: str) -> tuple[int, str, str]:
    config = load_config(config_path)
    address = getattr(config.node("main"), key)
    blocker = socket.socket()
    blocker.bind(split(address))
    blocker.listen(1)
    out_path, err_path = tmp_path / "run.out", tmp_path / "run.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "webmanager.tools.main", "run", "--config", str(config_path), "--node", "main"],
            cwd=tmp_path,
            env=clean_env(),
            stdout=out,
            stderr=err,
        )
    try:
        wait_for(lambda: process.poll() is not None, TIMEOUT, f"`tandem run` to give up on the taken {key} port {address}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        blocker.close()
    return process.returncode, err_path.read_text(errors="replace"), address


def test_run_with_raft_port_taken_exits_with_clear_message(tmp_path: Path, config_path: Path) -> None:
    code, stderr, address = run_node_with_port_taken(tmp_path, config_path, "raft")
    assert code == 2, stderr
    assert "tandem run: main refuses to start" in stderr
    assert f"cannot listen on {address}" in stderr
    assert "Traceback" not in stderr


def test_run_with_api_port_taken_exits_with_clear_message(tmp_path: Path, config_path: Path) -> None:
    code, stderr, address = run_node_with_port_taken(tmp_path, config_path, "api")
    assert code == 2, stderr
    assert f"tandem run: cannot serve the API on {address}" in stderr
    assert "Traceback" not in stderr
