"""The HTTP sources' network policy: every spelling of a denied address is denied, the allow list wins."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from llmtrain import netpolicy

CLUSTER = netpolicy.Policy(netpolicy.parse(netpolicy.CLUSTER_DENIED, "test"))
LOCAL = netpolicy.from_env({})


def teredo(client: str) -> str:
    """A Teredo address (server 65.54.227.120) whose obfuscated client is `client`."""
    server = int(ipaddress.IPv4Address("65.54.227.120"))
    obfuscated = int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF
    return str(ipaddress.IPv6Address((0x20010000 << 96) | (server << 64) | obfuscated))


def resolved(spelling: str) -> str:
    """What getaddrinfo (as the HTTP source calls it) makes of a host spelling."""
    return socket.getaddrinfo(spelling, 80, type=socket.SOCK_STREAM)[0][4][0]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::127.0.0.1",  # IPv4-compatible
        "::ffff:0:127.0.0.1",  # IPv4-translated
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        teredo("127.0.0.1"),
        teredo("10.1.2.3"),
        "10.0.0.1",
        "172.20.0.5",
        "192.168.1.1",
        "100.64.0.1",
        "fd12:3456::1",
        "fe80::1%eth0",  # zone id
        "169.254.169.254",
        "::ffff:169.254.169.254",
        "0.0.0.0",
        "::",
        "fd00:ec2::254",
        "100.100.100.200",
    ],
)
def test_cluster_policy_denies_every_form(address):
    assert CLUSTER.refusal(address) is not None


@pytest.mark.parametrize("spelling", ["2130706433", "0x7f.1", "0177.0.0.1", "0x7f000001", "127.1"])
def test_numeric_spellings_resolve_to_a_denied_address(spelling):
    assert CLUSTER.refusal(resolved(spelling)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "2002:5db8:d822::1"])
def test_public_addresses_pass(address):
    assert CLUSTER.refusal(address) is None and LOCAL.refusal(address) is None


def test_local_default_allows_loopback_and_private_but_not_metadata():
    assert LOCAL.refusal("127.0.0.1") is None and LOCAL.refusal("10.0.0.1") is None
    for address in ("169.254.169.254", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "0.0.0.0", "fd00:ec2::254"):
        assert LOCAL.refusal(address) is not None, address


def test_allow_list_makes_exceptions_in_every_form():
    env = {netpolicy.DENIED_ENV: ",".join(netpolicy.CLUSTER_DENIED), netpolicy.ALLOWED_ENV: "10.20.30.40/32"}
    policy = netpolicy.from_env(env)
    assert policy.refusal("10.20.30.40") is None and policy.refusal("::ffff:10.20.30.40") is None
    assert policy.refusal("10.20.30.41") is not None and policy.refusal("127.0.0.1") is not None


def test_bad_cidrs_name_the_variable():
    with pytest.raises(netpolicy.PolicyError, match=netpolicy.DENIED_ENV):
        netpolicy.from_env({netpolicy.DENIED_ENV: "10.0.0.0/8,not-a-network"})
