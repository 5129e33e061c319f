"""Whether a NetworkPolicy lets a pod send a packet, by the rules of the NetworkPolicy API.

Small and strict, for tests: egress only, ``matchLabels`` only (``matchExpressions`` and
named ports raise ``NotImplementedError`` rather than guess). A rule allows a packet when
one of its peers matches the destination and one of its ports matches the port (a missing
or empty ``to``/``ports`` matches everything); rules add up. ``ipBlock`` matches the
destination address (minus ``except``); a namespace/pod selector matches only pods -- a
host-network listener such as NodeLocal DNSCache, or a ClusterIP that is never DNAT-ed to a
pod, can be reached through an ``ipBlock`` only. What a CNI enforces beyond the API's
words (e.g. whether ``ipBlock`` also matches pod IPs) is not modelled.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Destination:
    ip: str
    port: int
    protocol: str = "TCP"
    namespace_labels: dict = field(default_factory=dict)  # set when it is a pod
    pod_labels: dict | None = None  # None: not a pod (a host address, a ClusterIP)


def _labels_match(selector: dict, labels: dict) -> bool:
    if "matchExpressions" in selector:
        raise NotImplementedError("matchExpressions")
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _peer_matches(peer: dict, dest: Destination) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(dest.ip)
        net = ipaddress.ip_network(block["cidr"])
        if ip.version != net.version or ip not in net:
            return False
        return not any(ip.version == ipaddress.ip_network(e).version
                       and ip in ipaddress.ip_network(e) for e in block.get("except") or [])
    if dest.pod_labels is None:
        return False  # selectors select pods, never other addresses
    if "namespaceSelector" not in peer:
        raise NotImplementedError("a podSelector alone means the policy's own namespace")
    if not _labels_match(peer["namespaceSelector"], dest.namespace_labels):
        return False
    return _labels_match(peer.get("podSelector") or {}, dest.pod_labels)


def _port_matches(port: dict, dest: Destination) -> bool:
    if not isinstance(port.get("port", 0), int):
        raise NotImplementedError("named ports")
    if port.get("protocol", "TCP") != dest.protocol:
        return False
    if "port" not in port:
        return True
    return port["port"] <= dest.port <= port.get("endPort", port["port"])


def egress_allowed(policy: dict, dest: Destination) -> bool:
    spec = policy["spec"]
    if "Egress" not in spec.get("policyTypes", []):
        return True
    for rule in spec.get("egress") or []:
        peers, ports = rule.get("to") or [], rule.get("ports") or []
        if (not peers or any(_peer_matches(p, dest) for p in peers)) and \
                (not ports or any(_port_matches(p, dest) for p in ports)):
            return True
    return False
