"""Test hosts in network namespaces joined by veth pairs to a bridge, so a test can pull a node's cable or black-hole the
link between two hosts."""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _remove_leftovers() -> None:
    """Remove the bridges and namespaces of test processes that died before they could (their subnet would clash)."""
    names = subprocess.run(["ip", "-o", "link", "show", "type", "bridge"], capture_output=True, text=True).stdout
    bridges = re.findall(r"^\d+: tbr((\d+)x\d+):", names, re.MULTILINE)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    namespaces = re.findall(r"^tnd((\d+)x\d+-\S+)", listed, re.MULTILINE)
    for name, pid in namespaces:
        if not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "del", f"tnd{name}"], capture_output=True)
    for name, pid in bridges:
        if not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "link", "del", f"tbr{name}"], capture_output=True)


_made = itertools.count()


class NetnsHosts:
    """One bridge (with an address for the test process) and one namespace per host, all made and removed here."""

    SUBNET = "10.203.7"

    def __init__(self, hosts: Iterable[str]) -> None:
        # names carry the pid, so leftovers can be found, and a count: a namespace is destroyed by the kernel a moment after
        # it is deleted, with its veth pair, so the next hosts of this process must not reuse a name (interfaces: 15 chars)
        tag = f"{os.getpid()}x{next(_made)}"
        self.bridge = f"tbr{tag}"
        self.hosts = list(hosts)
        self.namespace = {host: f"tnd{tag}-{host}" for host in self.hosts}
        self.cable = {host: f"tv{tag}{i}" for i, host in enumerate(self.hosts)}
        self.address = {host: f"{self.SUBNET}.{i + 1}" for i, host in enumerate(self.hosts)}
        self.bridge_address = f"{self.SUBNET}.254"  # the test process's own address on the bridge (devices run there)

    def __enter__(self) -> NetnsHosts:
        _remove_leftovers()
        try:
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{self.bridge_address}/24", "dev", self.bridge)
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
                tc(ns, "qdisc", "add", "dev", "eth0", "clsact")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for host in self.hosts:
            subprocess.run(["ip", "link", "del", self.cable[host]], capture_output=True)  # both ends of the pair, at once
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

    def block(self, host: str, other: str) -> None:
        """Black-hole every IPv4 packet between `host` and `other` (both ways, silently), leaving their other links up."""
        peer = int(ipaddress.IPv4Address(self.address[other]))
        for direction, offset in (("egress", IP_DESTINATION), ("ingress", IP_SOURCE)):
            program = f"6,40 0 0 12,21 0 3 2048,32 0 0 {offset},21 0 1 {peer},6 0 0 {TC_ACT_SHOT},6 0 0 {TC_ACT_OK}"
            tc(self.namespace[host], "filter", "add", "dev", "eth0", direction, "pref", str(peer % 30000 + 1), "bpf", "da", "bytecode", program)

    def unblock(self, host: str, other: str) -> None:
        peer = int(ipaddress.IPv4Address(self.address[other]))
        for direction in ("egress", "ingress"):
            tc(self.namespace[host], "filter", "del", "dev", "eth0", direction, "pref", str(peer % 30000 + 1))


# A classic BPF program in direct-action mode (cls_bpf sees the frame from its Ethernet header on both sides): if the
# EtherType is IPv4 and the address at `offset` is the peer's, drop the frame, else let it pass.
IP_SOURCE, IP_DESTINATION = 26, 30
TC_ACT_OK, TC_ACT_SHOT = 0, 2


def tc(namespace: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", namespace, "tc", *args], check=True, capture_output=True, text=True)
