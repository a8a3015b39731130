"""The fleet service's knobs (``conf/fleet/default.yaml``, ``inference.fleet.config.FleetConfig``) are
checked before it joins a cluster: each wrong value is a ConfigError naming ``fleet.<key>``. No Ray
here (the service's own start-up is in test_fleet.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from inference.fleet.config import FleetConfig
from services.errors import ConfigError
from services.ray_connection import address_problem

DEFAULTS = yaml.safe_load((Path(__file__).resolve().parents[2] / "conf" / "fleet" / "default.yaml").read_text())


def test_the_defaults_are_valid():
    FleetConfig.from_node(DEFAULTS)


@pytest.mark.parametrize(
    "change,key,why",
    [
        ({"app_name": ""}, "fleet.app_name", "empty"),
        ({"deployment_name": " "}, "fleet.deployment_name", "empty"),
        ({"namespace": ""}, "fleet.namespace", "empty"),
        ({"address": ""}, "fleet.address", "expected host:port"),
        ({"address": "head:99999"}, "fleet.address", "expected host:port"),
        ({"address": "nohost"}, "fleet.address", "expected host:port"),
        ({"auth_mode": "token", "auth_token_path": "/nonexistent/token"}, "fleet.auth_token_path", "does not exist"),
        ({"auth_mode": "maybe"}, "fleet.auth_mode", "expected disabled or token"),
        ({"resources": {"gpu_pc": "abc"}}, "fleet.resources.gpu_pc", "a number >= 0"),
        ({"resources": {"gpu_pc": -1}}, "fleet.resources.gpu_pc", "a number >= 0"),
        ({"num_gpus": "abc"}, "fleet.num_gpus", "expected float"),
        ({"max_batch_size": 0}, "fleet.max_batch_size", ">= 1"),
        ({"bogus": 1}, "fleet.bogus", "unknown key"),
    ],
)
def test_each_wrong_knob_names_its_key(change, key, why):
    with pytest.raises(ConfigError) as err:
        FleetConfig.from_node({**DEFAULTS, **change})
    assert str(err.value).startswith(f"{key}: ") and why in str(err.value), str(err.value)


@pytest.mark.parametrize("address", ["auto", "127.0.0.1:6379", "head.lab:10001", "[::1]:6379"])
def test_cluster_addresses(address):
    assert address_problem(address) is None


def test_local_is_an_address_only_where_named():
    assert address_problem("local", named=("auto", "local")) is None
    assert "expected host:port or auto" in address_problem("local")
