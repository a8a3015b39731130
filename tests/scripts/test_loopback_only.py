"""Tests and benchmarks talk to loopback only: the namespace the suite runs in, and the run's sockets.

``make test`` runs the suite through ``scripts/netns.py`` (a private network namespace whose only
interface is ``lo`` where the machine allows it; ``RT_NETNS=private`` then), which also samples every
socket of the run while it lasts (``--watch``; findings in the file ``RT_NETNS_WATCH``). Here:
the claimed namespace really has nothing but loopback, nothing off loopback is reachable from it,
and no socket of the run -- now, or at any sample of the watcher so far -- is connected to or
listening on an address reachable off loopback.

That the check can fail, on the host network with a real listener of the run on every interface
(the run's processes carry ``RT_NETNS_RUN``, so the server below is "ours")::

    NETNS=off .venv/bin/python scripts/netns.py -- sh -c \
      '.venv/bin/python -m http.server --bind 0.0.0.0 8999 & sleep 2; \
       .venv/bin/python -m pytest tests/scripts/test_loopback_only.py; kill $!'

fails ``test_no_socket_of_this_run_reaches_beyond_loopback`` with
"listens on every interface: tcp 0.0.0.0:8999 LISTEN (pid ...)"; through the namespace (no
``NETNS=off``) the same command passes, the server being reachable on ``lo`` only.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import psutil
import pytest

from scripts import netns

PRIVATE = os.environ.get(netns.ENV_STATE) == "private"
WHY_NOT = os.environ.get(netns.ENV_REASON) or "not started through scripts/netns.py (make test)"
in_namespace = pytest.mark.skipif(not PRIVATE, reason=f"the suite runs on the host network: {WHY_NOT}")


def _ours() -> set[int]:
    """The run's processes: those carrying its marker, else this process and its descendants."""
    run_id = os.environ.get(netns.ENV_RUN)
    if run_id:
        return netns.run_pids(run_id)
    me = psutil.Process()
    return {me.pid, *(p.pid for p in me.children(recursive=True))}


@in_namespace
def test_the_claimed_namespace_has_only_loopback():
    assert netns.non_loopback_interfaces() == [], netns.interfaces()
    assert netns.interfaces() == ["lo"]
    # addresses: IPv6 ones are listed per interface; IPv4 routes off lo would show in the main table
    v6 = Path("/proc/net/if_inet6").read_text().split("\n")
    assert all(line.split()[-1] == "lo" for line in v6 if line.strip()), v6
    routes = Path("/proc/net/route").read_text().splitlines()[1:]
    assert all(line.split()[0] == "lo" for line in routes), routes


@in_namespace
@pytest.mark.parametrize("family, address", [(socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")])
def test_nothing_off_loopback_is_reachable_or_bindable(family, address):
    """Documentation addresses (RFC 5737 / 3849) stand for "anywhere but here"."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        with pytest.raises(OSError) as err:
            s.connect((address, 9))
        assert err.value.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL), err.value
    with socket.socket(family, socket.SOCK_DGRAM) as s, pytest.raises(OSError) as err:
        s.bind((address, 0))
    assert err.value.errno == errno.EADDRNOTAVAIL, err.value


def test_no_socket_of_this_run_reaches_beyond_loopback():
    """Now, and (in the namespace) at every sample of the watcher so far. On the host network the
    watcher's findings are reported by ``scripts/netns.py`` at the end, not failed here."""
    found = netns.violations(pids=None if PRIVATE else _ours())
    watch_log = os.environ.get(netns.ENV_WATCH)
    if PRIVATE and watch_log and Path(watch_log).is_file():
        found += [f"(watcher, earlier) {line}" for line in Path(watch_log).read_text().splitlines()]
    assert found == [], "\n".join(found)


def _host_address() -> str | None:
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not netns.parse_ip(a.address).is_loopback:
                return a.address
    return None


def test_the_check_flags_a_real_listener_off_loopback():
    """The check itself, against real sockets: a listener on a non-loopback address of this machine,
    and one on every interface where another interface than ``lo`` exists, are both flagged."""
    address = _host_address()
    if address is None:
        pytest.skip("no non-loopback IPv4 address exists here (in the private namespace: by design)")
    with socket.socket() as bound, socket.socket() as wildcard:
        bound.bind((address, 0))
        bound.listen()
        wildcard.bind(("0.0.0.0", 0))
        wildcard.listen()
        ports = bound.getsockname()[1], wildcard.getsockname()[1]
        found = "\n".join(netns.violations(pids={os.getpid()}))
    assert f"bound to a non-loopback address: tcp {address}:{ports[0]} LISTEN" in found, found
    assert f"listens on every interface: tcp 0.0.0.0:{ports[1]} LISTEN" in found, found
    with socket.socket() as lo:
        lo.bind(("127.0.0.1", 0))
        lo.listen()
        port = lo.getsockname()[1]
        assert f":{port} " not in "\n".join(netns.violations(pids={os.getpid()}))
