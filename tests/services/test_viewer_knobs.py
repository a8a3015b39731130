"""What the web viewer's server process would die of after the run started, found at start instead
(``services/viewer/server.py``): the bind address and the memory limit, in the forms ``rerun
--serve-web`` accepts (checked against the rerun binary of the installed wheel)."""

from __future__ import annotations

import pytest

from services.viewer.server import bind_problem, memory_limit_problem

# each was tried against `rerun --serve-web --server-memory-limit <value>` (rerun-sdk's binary)
ACCEPTED = ["1GiB", "500MB", "10kB", "1KiB", "1.5GB", "1TB", "1TiB", "10B", "0", "50%", "12.5%", "100%", "10 GB"]
REFUSED = ["lots", "1G", "1024", "2gib", "1KB", "5mb", "150%", "", "-1GB"]


@pytest.mark.parametrize("limit", ACCEPTED)
def test_sizes_rerun_accepts(limit):
    assert memory_limit_problem(limit) is None


@pytest.mark.parametrize("limit", REFUSED)
def test_sizes_rerun_refuses(limit):
    assert memory_limit_problem(limit)


@pytest.mark.parametrize("bind", ["127.0.0.1", "0.0.0.0", "::1"])
def test_addresses_this_machine_has(bind):
    assert bind_problem(bind) is None


@pytest.mark.parametrize(
    "bind,why",
    [
        ("localhost", "not an IP address"),
        ("", "not an IP address"),
        ("not a host", "not an IP address"),
        ("192.0.2.1", "cannot be bound"),
    ],
)
def test_what_rerun_cannot_bind(bind, why):
    assert why in bind_problem(bind)
