"""Which addresses HTTP sources may connect to: CIDRs denied, with CIDRs allowed as exceptions.

In a cluster the operator's configuration (the chart's `ingest.httpSources`) sets both lists on the
ingest pods as `LLMTRAIN_HTTP_DENIED_CIDRS` / `LLMTRAIN_HTTP_ALLOWED_CIDRS`; a DataSource cannot change
them. The chart's default denies `CLUSTER_DENIED`: loopback, the pod and service networks (RFC 1918, CGNAT,
ULA) and everything `LOCAL_DENIED` holds. Without the variables (the local runner, a plain
`llmtrain ingest`) `LOCAL_DENIED` applies: metadata services, link-local, unspecified, multicast and
reserved addresses are refused; loopback and private networks are allowed.

An address is checked in every form it reaches: IPv6 addresses that embed an IPv4 address (mapped,
compatible, translated, 6to4, NAT64, Teredo) are checked as that IPv4 address too.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import BadInput

DENIED_ENV = "LLMTRAIN_HTTP_DENIED_CIDRS"
ALLOWED_ENV = "LLMTRAIN_HTTP_ALLOWED_CIDRS"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LOCAL_DENIED = (
    "0.0.0.0/8",  # "this network": 0.0.0.0 reaches the local host
    "169.254.0.0/16",  # link-local: cloud metadata services
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, broadcast
    "::/128",  # unspecified
    "fe80::/10",  # link-local
    "fd00:ec2::254/128",  # AWS metadata over IPv6
    "ff00::/8",  # multicast
)
CLUSTER_DENIED = (
    *LOCAL_DENIED,
    "127.0.0.0/8",  # loopback
    "10.0.0.0/8",  # RFC 1918: pod and service networks
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",  # CGNAT (some clusters' pod networks)
    "192.0.0.0/24",  # IETF protocol assignments
    "198.18.0.0/15",  # benchmarking
    "::1/128",  # loopback
    "fc00::/7",  # unique local (IPv6 pod and service networks)
    "fec0::/10",  # site-local (deprecated)
    "64:ff9b:1::/48",  # local-use NAT64
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
_COMPATIBLE = ipaddress.ip_network("::/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")


class PolicyError(BadInput, ValueError):
    """A CIDR list that does not parse; the message names the variable."""


def parse(text: str | Iterable[str], name: str) -> tuple[IPNetwork, ...]:
    """Networks from a comma-separated string (or a sequence of strings)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    networks = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise PolicyError(f"{name}: {item!r} is not an IP network; write CIDRs such as 10.0.0.0/8") from None
    return tuple(networks)


def forms(address: IPAddress) -> list[IPAddress]:
    """The address and every IPv4 address it embeds."""
    found: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.ipv4_mapped is not None:
            found.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            found.append(address.sixtofour)
        if address.teredo is not None:
            found += list(address.teredo)
        if any(address in net for net in (_NAT64, _LOCAL_NAT64, _TRANSLATED)):
            found.append(low32)
        if address in _COMPATIBLE and int(address) > 1:
            found.append(low32)
    return found


@dataclass(frozen=True)
class Policy:
    denied: tuple[IPNetwork, ...]
    allowed: tuple[IPNetwork, ...] = ()

    def refusal(self, address: str) -> IPNetwork | None:
        """The denied network that `address` (any spelling, zone id allowed) falls in; None if allowed."""
        ip = ipaddress.ip_address(address.split("%")[0])
        for form in forms(ip):
            if any(form in net for net in self.allowed if net.version == form.version):
                continue
            for net in self.denied:
                if net.version == form.version and form in net:
                    return net
        return None


def from_env(env: Mapping[str, str] | None = None) -> Policy:
    """The policy of this process: the operator's lists when set, else `LOCAL_DENIED`."""
    env = os.environ if env is None else env
    denied = parse(env[DENIED_ENV], DENIED_ENV) if DENIED_ENV in env else parse(LOCAL_DENIED, "LOCAL_DENIED")
    return Policy(denied, parse(env.get(ALLOWED_ENV, ""), ALLOWED_ENV))
