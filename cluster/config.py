"""Cluster configuration: one TOML file shared by all nodes, validated with errors naming file and key."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import ssl
import tomllib
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

logger = logging.getLogger(__name__)


class ConfigError(Exception):
    """A configuration file is unreadable or invalid; the message names the file and the key."""


def _check_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected 'host:port', got {value!r}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port must be a number from 1 to 65535, got {port!r}")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if not host.replace("-", "").replace(".", "").isalnum():
            raise ValueError(f"{host!r} is neither an IP address nor a host name") from None
    return value


Address = Annotated[str, AfterValidator(_check_address)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
Seconds = Annotated[float, Field(gt=0)]


class Role(str, Enum):
    """What a node is configured to be."""

    MAIN = "main"
    BACKUP = "backup"
    WITNESS = "witness"


class Standing(str, Enum):
    """What a node is doing now (its status, role events, metrics and live-feed messages name it so)."""

    ACTIVE = "active"
    STANDBY = "standby"
    WITNESS = "witness"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeConfig(_Strict):
    name: Name
    role: Role
    raft: Address
    api: Address
    data_dir: Path
    tls_cert: Path | None = None  # PEM certificate (chain) for HTTPS on `api`; with tls_key
    tls_key: Path | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> NodeConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key, or neither")
        return self

    @property
    def url(self) -> str:
        """The base URL of the node's API: https when it has a certificate."""
        return f"{'https' if self.tls_cert else 'http'}://{self.api}"

    def client_ssl(self) -> ssl.SSLContext | None:
        """For clients of a node with TLS: a context trusting its certificate (self-signed or a CA's chain); else None."""
        return ssl.create_default_context(cafile=self.tls_cert) if self.tls_cert else None

    def server_ssl(self) -> ssl.SSLContext | None:
        """The node's own HTTPS context, or None without TLS."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_cert, self.tls_key)
        return context

    @property
    def is_server(self) -> bool:
        return self.role is not Role.WITNESS


class Timers(_Strict):
    """Raft and role timers in seconds (see README, "Timers")."""

    heartbeat: Seconds = 0.05
    election_min: Seconds = 0.3
    election_max: Seconds = 0.6
    witness_election_factor: Annotated[float, Field(ge=1.0)] = 2.0
    tick: Seconds = 0.01
    connection_timeout: Seconds = 1.0
    connection_retry: Seconds = 0.1
    lease_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.8
    act_margin: Seconds = 0.02
    lifesign_interval: Seconds = 0.1

    @model_validator(mode="after")
    def _consistent(self) -> Timers:
        if self.election_min <= 3 * self.heartbeat:
            raise ValueError("election_min must be more than 3 x heartbeat")
        if self.election_max <= self.election_min:
            raise ValueError("election_max must be more than election_min")
        if self.tick * 4 > self.heartbeat:
            raise ValueError("tick must be at most heartbeat / 4")
        if self.connection_timeout < self.election_max:
            raise ValueError("connection_timeout must be at least election_max")
        if self.act_margin >= self.election_min * (1 - self.lease_ratio):
            raise ValueError("act_margin must be less than election_min x (1 - lease_ratio)")
        return self

    @property
    def lease(self) -> float:
        """How long a majority acknowledgement keeps the active's lease valid."""
        return self.election_min * self.lease_ratio


class ClusterSection(_Strict):
    name: Name
    secret: Annotated[str, Field(min_length=16)] | None = None
    secret_file: Path | None = None
    failback: Literal["auto", "manual"] = "auto"
    failback_holdoff: Seconds = 2.0
    transfer_timeout: Seconds = 3.0
    fsync: bool = True
    snapshot_entries: Annotated[int, Field(ge=100)] = 20_000
    plugins: list[Name] | None = None  # the plugin set every server must load; None: all built-in plugins
    batch_interval: Annotated[float, Field(gt=0, le=5)] = 0.05  # seconds between log entries carrying driver readings
    journal_days: Annotated[float, Field(gt=0)] = 365.0  # the BMS functions' journals (alarms, schedules, logic) keep this long
    timers: Timers = Timers()
    nodes: list[NodeConfig]

    @model_validator(mode="after")
    def _consistent(self) -> ClusterSection:
        if (self.secret is None) == (self.secret_file is None):
            raise ValueError("set exactly one of 'secret' or 'secret_file'")
        roles = sorted(node.role.value for node in self.nodes)
        if roles != ["backup", "main", "witness"]:
            raise ValueError(f"cluster.nodes: need exactly one main, one backup and one witness node, got roles {roles}")
        for key in ("name", "raft", "api", "data_dir"):
            # data_dir only clashes between nodes on the same host (same path on three machines is normal)
            values = [
                (node.raft.rpartition(":")[0] if key == "data_dir" else "", str(getattr(node, key))) for node in self.nodes
            ]
            for i, value in enumerate(values):
                if values.index(value) < i:
                    where = " on the same host" if key == "data_dir" else ""
                    raise ValueError(
                        f"cluster.nodes[{i}].{key} {value[1]!r} repeats cluster.nodes[{values.index(value)}].{key}{where};"
                        f" node {key} must be unique{where}"
                    )
        return self


class TandemConfig(_Strict):
    cluster: ClusterSection
    path: Path
    secret: str

    def node(self, name: str) -> NodeConfig:
        for node in self.cluster.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.cluster.nodes)
        raise ConfigError(f"{self.path}: no node named {name!r} in [[cluster.nodes]] (known: {known})")

    def by_role(self, role: Role) -> NodeConfig:
        return next(node for node in self.cluster.nodes if node.role is role)

    @property
    def api_token(self) -> str:
        """Bearer token for the HTTP API, derived from the cluster secret."""
        return hmac.new(self.secret.encode(), b"tandem api token v1", hashlib.sha256).hexdigest()

    @property
    def session_key(self) -> bytes:
        """Key signing the Web Manager's session cookies, derived from the cluster secret (every server accepts them)."""
        return hmac.new(self.secret.encode(), b"tandem session key v1", hashlib.sha256).digest()

    @property
    def raft_password(self) -> str:
        """Password for pysyncobj's encrypted sync link, derived from the cluster secret."""
        return hmac.new(self.secret.encode(), b"tandem raft link v1", hashlib.sha256).hexdigest()


def _location(error: dict) -> str:
    parts: list[str] = []
    for item in error["loc"]:
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
        else:
            parts.append(str(item))
    return ".".join(parts) or "(top level)"


def load_config(path: str | Path) -> TandemConfig:
    """Read and validate a cluster TOML file; relative paths in it are resolved against its folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - {"cluster"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(unknown)} (expected [cluster])")
    try:
        section = ClusterSection.model_validate(raw.get("cluster", {}))
    except ValidationError as exc:
        lines = [f"{path}: cluster.{_location(e)}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines).replace("cluster.(top level)", "[cluster]")) from None
    base = path.resolve().parent
    nodes = [
        node.model_copy(update={key: base / getattr(node, key) for key in ("data_dir", "tls_cert", "tls_key") if getattr(node, key) is not None})
        for node in section.nodes
    ]
    section = section.model_copy(update={"nodes": nodes})
    secret = section.secret
    if secret is None:
        secret_path = base / section.secret_file
        try:
            secret = secret_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{path}: cluster.secret_file: cannot read {secret_path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: cluster.secret_file: {secret_path} is not UTF-8 text") from None
        if len(secret) < 16:
            raise ConfigError(f"{path}: cluster.secret_file: {secret_path} holds fewer than 16 characters")
    return TandemConfig(cluster=section, path=path.resolve(), secret=secret)
