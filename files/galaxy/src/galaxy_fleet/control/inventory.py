"""Targets from an Ansible inventory (YAML or JSON, static).

The router needs, for every fleet node: its address, port, the user and key to
reach `galaxy remote` with, and its groups. Those come from the same
inventory Ansible deploys from:

- ``ansible_host`` / ``ansible_port``: where the node is (default: its name, 22);
- ``galaxy_route_user`` (default ``galaxy``): the user whose authorized_keys
  holds the routing key (``ansible_user`` is the deploy user, often root, and
  is not used for routing);
- ``galaxy_route_key``: the routing key's path (default: the control config's
  ``control.ssh_key``);
- ``ansible_connection: local``: the node is this machine; `galaxy remote`
  runs as a local process instead of over SSH.

Nodes are the members of the ``galaxy_nodes`` group (or the group named by
``control.nodes_group``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from galaxy_fleet.order import valid_name


class TargetError(ValueError):
    """A target that names no host or group of the inventory."""


class InventoryError(ValueError):
    """The inventory file is missing or not a valid Ansible inventory."""


@dataclass
class Host:
    name: str
    address: str
    port: int = 22
    user: str = "galaxy"
    key: str | None = None
    connection: str = "ssh"
    groups: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    config: str | None = None  # for local nodes: their galaxy config file


@dataclass
class Inventory:
    hosts: dict[str, Host]
    groups: dict[str, list[str]]

    def resolve(self, spec: str) -> list[str]:
        """A host name, a group name, ``all``, or several joined by commas."""
        names: list[str] = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            if part == "all":
                found = list(self.hosts)
            elif part in self.hosts:
                found = [part]
            elif part in self.groups:
                found = [h for h in self.groups[part] if h in self.hosts]
            else:
                known = ", ".join(sorted(self.hosts) + sorted(g for g in self.groups if g != "all"))
                raise TargetError(f"unknown target {part!r}; known: {known or '(none)'}")
            names += [n for n in found if n not in names]
        if not names:
            raise TargetError(f"target {spec!r} names no machine")
        return names


def _walk(
    name: str,
    body: Any,
    chain: list[dict[str, Any]],
    layers: dict[str, list[dict[str, Any]]],
    own: dict[str, dict[str, Any]],
    groups: dict[str, list[str]],
    lineage: list[str],
) -> None:
    """Collect group membership; for every host, the group vars on its way (outer first) and its own."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InventoryError(f"group {name!r}: expected a mapping")
    if name in lineage:
        raise InventoryError(f"group {name!r} contains itself")
    chain = [*chain, dict(body.get("vars") or {})]
    members = groups.setdefault(name, [])
    for host, hvars in (body.get("hosts") or {}).items():
        host = str(host)
        if hvars is not None and not isinstance(hvars, dict):
            raise InventoryError(f"host {host!r}: expected a mapping of variables")
        layers.setdefault(host, []).extend(chain)
        own.setdefault(host, {}).update(hvars or {})
        if host not in members:
            members.append(host)
    for child, cbody in (body.get("children") or {}).items():
        _walk(str(child), cbody, chain, layers, own, groups, [*lineage, name])
        for h in groups.get(str(child), []):
            if h not in members:
                members.append(h)


def load(path: str | Path, *, nodes_group: str = "galaxy_nodes", default_key: str | None = None) -> Inventory:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InventoryError(f"{p}: cannot read inventory: {exc.strerror}") from None
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except ValueError as exc:
        raise InventoryError(f"{p}: not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InventoryError(f"{p}: expected a mapping of groups")
    layers: dict[str, list[dict[str, Any]]] = {}
    own: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[str]] = {}
    body = data["all"] if set(data) == {"all"} else {"children": data}
    _walk("all", body, [], layers, own, groups, [])
    members = groups.get(nodes_group)
    if members is None:
        raise InventoryError(f"{p}: no group {nodes_group!r}")
    hosts: dict[str, Host] = {}
    for name in members:
        v: dict[str, Any] = {}
        for layer in layers.get(name, []):
            v.update(layer)
        v.update(own.get(name, {}))
        if not valid_name(name):
            raise InventoryError(f"{p}: host name {name!r} is not usable as a target")
        try:
            port = int(v.get("ansible_port", 22))
        except (TypeError, ValueError):
            raise InventoryError(f"{p}: host {name!r}: ansible_port must be a number") from None
        hosts[name] = Host(
            name=name,
            address=str(v.get("ansible_host", name)),
            port=port,
            user=str(v.get("galaxy_route_user", "galaxy")),
            key=v.get("galaxy_route_key", default_key),
            connection=str(v.get("ansible_connection", "ssh")),
            groups=sorted(g for g, m in groups.items() if name in m and g != "all"),
            vars=v,
            config=v.get("galaxy_config_path"),
        )
    node_groups = {g: [h for h in m if h in hosts] for g, m in groups.items()}
    return Inventory(hosts, {g: m for g, m in node_groups.items() if m})
