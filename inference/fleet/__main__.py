"""``python -m inference.fleet serve|status|stop [overrides]``: the fleet service's command line.

``serve policy=<name> [fleet.key=value ...]`` composes the app's config (``conf/config.yaml``) plus
``conf/fleet/default.yaml`` (``fleet=<other>`` picks another file of ``conf/fleet/``), checks it
(``config error: <key>: <why>``, exit 2, before anything starts), joins the Ray cluster
(``fleet.address``; ``local`` starts one in this process) and deploys the policy as a Serve
application with no HTTP proxy: robots reach it through Serve's Python handle API. It prints one
line ``serving <policy> as fleet app '<name>' ...`` once every replica is ready, then serves until
Ctrl-C/SIGTERM and removes the application (``fleet.detach=true``: leaves it running and returns).

``status`` prints the application's state and one replica's numbers; ``stop`` removes it.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.errors import ConfigError

log = logging.getLogger("inference.fleet")

COMMANDS = ("serve", "status", "stop")
EXIT_CONFIG = 2
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def _error_line(exc: BaseException) -> str:
    """Hydra's message on one line, led by the key it is about where it names one."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    missing = re.search(r"Could not find '([\w.-]+)/", text)
    key = missing.group(1) if missing else getattr(exc, "full_key", None)
    return f"{key}: {text}" if key else text


def compose(overrides: Sequence[str]) -> Any:
    """The app config with the ``fleet`` group; Hydra errors as ``ConfigError``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    overrides = list(overrides)
    if not any(o.split("=", 1)[0].lstrip("+~") == "fleet" for o in overrides):
        overrides.insert(0, "+fleet=default")
    else:
        overrides = [("+" + o if o.startswith("fleet=") else o) for o in overrides]
    from inference.schemas import register

    register()  # the structured-config schemas every composition of the app's config needs
    if not any(o.split("=", 1)[0].lstrip("+~") == "algorithm" for o in overrides):
        overrides.append("~algorithm")  # the service runs no control loop: the robots' algorithms are theirs
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=overrides)
        container = OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:  # noqa: BLE001 - every composition error is a config error
        raise ConfigError(_error_line(exc)) from None
    container.pop("hydra", None)
    return OmegaConf.create(container)


def load(overrides: Sequence[str]) -> tuple[Any, Any]:
    """(config, FleetConfig), both checked."""
    from omegaconf import OmegaConf

    from inference.fleet.config import FleetConfig
    from inference.validation import RUN_OBJECT_KEYS, check_target_node

    cfg = compose(overrides)
    fleet_node = cfg.pop("fleet")
    # the service builds only the policy and its normalizer: check those (the policy's own start-time
    # checks included), not the robot-side parts a server never runs
    policy = OmegaConf.to_container(cfg.policy, resolve=True)
    check_target_node("policy", policy, ignore=RUN_OBJECT_KEYS["policy"])
    if not isinstance(policy.get("normalizer"), dict):
        raise ConfigError("policy.normalizer: required (a node with _target_)")
    check_target_node("policy.normalizer", policy["normalizer"])

    return cfg, FleetConfig.from_node(OmegaConf.to_container(fleet_node, resolve=True))


def join(fleet: Any) -> str:
    """Connect to the cluster (or start an in-process one for ``address: local``)."""
    import ray

    from services.ray_connection import apply_auth_env, connect

    if fleet.address == "local":
        apply_auth_env(fleet.auth_mode, fleet.auth_token_path)
        ctx = ray.init(
            num_cpus=fleet.local_num_cpus, include_dashboard=False, log_to_driver=False, namespace=fleet.namespace
        )
        return str(ctx.address_info.get("gcs_address", "local"))
    return connect(
        fleet.address,
        fleet.namespace,
        fleet.connect_timeout_s,
        fleet.auth_mode,
        fleet.auth_token_path,
        log_to_driver=False,
        address_key="fleet.address",
    )


def deploy(cfg: Any, fleet: Any) -> float:
    """Deploy (or update) the application and wait until it runs; returns seconds taken."""
    from omegaconf import OmegaConf
    from ray import serve

    from inference.fleet.deployment import build_app
    from services.ray_connection import LaunchError

    t0 = time.monotonic()
    serve.start(proxy_location="Disabled", http_options={"host": "127.0.0.1"})
    app = build_app(OmegaConf.to_container(cfg, resolve=True), fleet)
    error: list[BaseException] = []

    def run() -> None:
        try:
            serve.run(app, name=fleet.app_name, route_prefix=None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            error.append(exc)

    thread = threading.Thread(target=run, name="fleet-deploy", daemon=True)
    thread.start()
    thread.join(fleet.deploy_timeout_s)
    if thread.is_alive():
        raise LaunchError(
            f"fleet app {fleet.app_name!r} not running within fleet.deploy_timeout_s="
            f"{fleet.deploy_timeout_s:g} s ({fleet.num_replicas} replica(s) of num_cpus={fleet.num_cpus}, "
            f"num_gpus={fleet.num_gpus}, resources={dict(fleet.resources)}: does a node have them?)"
        )
    if error:
        raise LaunchError(f"fleet app {fleet.app_name!r} failed to deploy: {error[0]}") from error[0]
    return time.monotonic() - t0


def serve_command(overrides: Sequence[str]) -> int:
    cfg, fleet = load(overrides)
    from ray import serve

    address = join(fleet)
    took = deploy(cfg, fleet)
    policy = str(cfg.policy.get("_target_", "?")).rsplit(".", 1)[-1]
    print(
        f"serving {policy} as fleet app '{fleet.app_name}' ({fleet.num_replicas} replica(s), max batch "
        f"{fleet.max_batch_size}, wait {fleet.batch_wait_timeout_s * 1e3:g} ms) on {address}; ready in {took:.1f} s",
        flush=True,
    )
    if fleet.detach:
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("removing fleet app %s", fleet.app_name)
    try:
        serve.delete(fleet.app_name)
    except Exception:  # noqa: BLE001
        log.warning("could not remove fleet app %s", fleet.app_name, exc_info=True)
    print(f"fleet app '{fleet.app_name}' removed", flush=True)
    return 0


def status_command(overrides: Sequence[str]) -> int:
    _, fleet = load(overrides)
    from ray import serve

    join(fleet)
    app = serve.status().applications.get(fleet.app_name)
    if app is None:
        print(f"no fleet app '{fleet.app_name}' on this cluster")
        return 1
    out: dict[str, Any] = {
        "app": fleet.app_name,
        "status": str(app.status),
        "deployments": {
            n: {"status": str(d.status), "replicas": {str(k): v for k, v in d.replica_states.items()}}
            for n, d in app.deployments.items()
        },
    }
    try:
        handle = serve.get_app_handle(fleet.app_name)
        out["replica_stats"] = handle.stats.remote().result(timeout_s=10)
    except Exception as exc:  # noqa: BLE001
        out["replica_stats"] = f"unavailable: {exc}"
    print(json.dumps(out, indent=2, default=str))
    return 0


def stop_command(overrides: Sequence[str]) -> int:
    _, fleet = load(overrides)
    from ray import serve

    join(fleet)
    serve.delete(fleet.app_name)
    print(f"fleet app '{fleet.app_name}' removed")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if not argv or argv[0] not in COMMANDS:
        print(
            f"usage: python -m inference.fleet {{{'|'.join(COMMANDS)}}} [policy=...] [fleet.key=value ...]",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    command, overrides = argv[0], argv[1:]
    try:
        return {"serve": serve_command, "status": status_command, "stop": stop_command}[command](overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
