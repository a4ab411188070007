"""Test hosts in network namespaces joined by veth pairs to a bridge, so a test can pull a node's cable."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class NetnsHosts:
    """One bridge (with an address for the test process) and one namespace per host, all made and removed here."""

    SUBNET = "10.203.7"

    def __init__(self, hosts: Iterable[str]) -> None:
        tag = os.getpid() % 10000
        self.bridge = f"tbr{tag}"
        self.hosts = list(hosts)
        self.namespace = {host: f"tnd{tag}-{host}" for host in self.hosts}
        self.cable = {host: f"tv{tag}{i}" for i, host in enumerate(self.hosts)}
        self.address = {host: f"{self.SUBNET}.{i + 1}" for i, host in enumerate(self.hosts)}

    def __enter__(self) -> NetnsHosts:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.SUBNET}.254/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for host in self.hosts:
            ns, cable = self.namespace[host], self.cable[host]
            ip("netns", "add", ns)
            ip("link", "add", cable, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("link", "set", cable, "master", self.bridge)
            ip("link", "set", cable, "up")
            ip("-n", ns, "addr", "add", f"{self.address[host]}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc: object) -> None:
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", self.namespace[host]], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def prefix(self, host: str) -> list[str]:
        """Command prefix that runs a program inside the host's namespace."""
        return ["ip", "netns", "exec", self.namespace[host]]

    def cut(self, host: str) -> None:
        """Pull the host's cable (its bridge-side veth goes down)."""
        ip("link", "set", self.cable[host], "down")

    def heal(self, host: str) -> None:
        ip("link", "set", self.cable[host], "up")
