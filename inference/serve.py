"""``python -m inference.serve policy=<name>``: serve any policy of this project over openpi's protocol.

The wire protocol is openpi's (``openpi.serving.websocket_policy_server``), so openpi's own
``WebsocketClientPolicy`` and our ``policy=openpi_remote`` both talk to it:

- websocket, binary msgpack-numpy frames only (policies/openpi/codec.py; no pickle anywhere);
- on connect the server sends a metadata dict (policy name, chunk_size, action_dim, state_dim,
  cameras, image size, the observation keys it expects);
- each request is an observation dict (keys from ``serve.obs_keys``, default
  ``observation/state``, ``observation/images/<camera>``, ``prompt``) in robot units with uint8
  images; the answer is ``{"actions": (H, action_dim) float32 robot units, "server_timing":
  {"infer_ms", "prev_total_ms"}}``; a failure answers a text frame with the traceback and closes;
- ``GET /healthz`` answers 200 (and needs no API key);
- an extension openpi's own server does not have: metadata ``rtc_guidance: true`` says this
  server applies real-time-chunking guidance. A request may then carry ``"rtc": {"prev_actions":
  (H, action_dim) robot units, "delay", "execute_horizon", "guidance", "schedule",
  "max_guidance_weight"}`` and the chunk is inpainted toward ``prev_actions`` by the policy's own
  ``guided_inference`` (VJP guidance for the flow policy), as in a local RTC run. Clients that do
  not send it (openpi's) get plain chunks;
- with ``serve.api_key`` set, clients must send ``Authorization: Api-Key <key>`` (else HTTP 401).

Like openpi's server it applies the policy's normalizer itself: robot-space observations in,
robot-space actions out. Inference runs in one worker thread (policies are not re-entrant), so
the event loop keeps answering pings, health checks and new connections while the model thinks.
It binds 127.0.0.1 unless ``serve.host`` says otherwise; ``serve.port=0`` picks a free port and logs
it (and prints ``serving <policy> on ws://host:port``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http
import logging
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from policies.base import Guidance, Schedule
from policies.openpi import codec
from policies.openpi.obs_map import ObsKeyMap
from policies.runner import Guide, PolicyRunner

log = logging.getLogger("inference.serve")


class PolicyServer:
    """One policy behind a websocket; start with :meth:`serve_forever` or :meth:`start` (thread)."""

    def __init__(
        self,
        runner: PolicyRunner,
        obs_map: ObsKeyMap,
        metadata: Mapping[str, Any] | None = None,
        host: str = "127.0.0.1",
        port: int = 8000,
        api_key: str | None = None,
    ) -> None:
        self.runner = runner
        self.policy = runner.policy
        self.normalizer = runner.normalizer
        self.obs_map = obs_map
        self.metadata = dict(metadata or {})
        meta = getattr(self.policy, "metadata", None)
        self.metadata.setdefault("rtc_guidance", callable(getattr(self.policy, "guided_inference", None)))
        self.metadata.setdefault("supports_vjp", bool(getattr(meta, "supports_vjp", False)))
        self.metadata.setdefault("supports_trained", bool(getattr(meta, "supports_trained", False)))
        self.host = host
        self.port = int(port)
        self.api_key = api_key
        self.requests = 0
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ inference (worker thread)
    def infer(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Request dict (robot space) -> answer dict (robot-space actions). Runs off the event loop."""
        state, images, prompt, info = self.obs_map.decode(request)
        need = int(self.metadata.get("state_history", 1))
        if state.shape[0] < need:
            raise ValueError(
                f"the served policy takes {need} state samples, the request carries {state.shape[0]}; "
                "send the history (client: policy.obs_keys.state_history=true, policy.state_history="
                f"{need})"
            )
        state = state[-need:]
        if prompt is not None:
            info = {**info, "prompt": prompt}
        rtc = request.get("rtc")
        result = self.runner.infer_observation(state, images, info, None if rtc is None else self._guide(rtc))
        return {"actions": np.ascontiguousarray(result.robot, dtype=np.float32)}

    def _guide(self, rtc: Mapping[str, Any]) -> Guide:
        """What a request's ``rtc`` block asks to continue (previous chunk in robot units)."""
        if not self.metadata.get("rtc_guidance"):
            raise ValueError("this server's policy has no guided_inference; do not send 'rtc'")
        missing = [k for k in ("prev_actions", "delay", "execute_horizon") if k not in rtc]
        if missing:
            raise KeyError(f"rtc block lacks {missing} (has {sorted(map(str, rtc))})")
        prev = np.asarray(rtc["prev_actions"], dtype=np.float32)
        H, D = int(self.metadata.get("chunk_size", prev.shape[0])), int(self.metadata.get("action_dim", prev.shape[-1]))
        if prev.shape != (H, D):
            raise ValueError(f"rtc.prev_actions has shape {prev.shape}; this policy needs ({H}, {D})")
        if not np.all(np.isfinite(prev)):
            raise ValueError("rtc.prev_actions holds NaN/inf")
        return Guide(
            self.runner.to_model(prev),
            int(rtc["delay"]),
            int(rtc["execute_horizon"]),
            Guidance(str(rtc.get("guidance", "vjp"))),
            Schedule(str(rtc.get("schedule", "exp"))),
            float(rtc.get("max_guidance_weight", 5.0)),
        )

    # ------------------------------------------------------------------ websocket side (event loop)
    def _process_request(self, connection: Any, request: Any) -> Any:
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self.api_key:
            if request.headers.get("Authorization", "") != f"Api-Key {self.api_key}":
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or wrong API key\n")
        return None

    async def _handler(self, websocket: Any) -> None:
        import websockets

        peer = websocket.remote_address
        log.info("client %s connected", peer)
        packer = codec.Packer()
        loop = asyncio.get_running_loop()
        await websocket.send(packer.pack(self.metadata))
        prev_total_ms: float | None = None
        while True:
            try:
                message = await websocket.recv()
            except websockets.ConnectionClosed:
                log.info("client %s disconnected", peer)
                return
            t_start = time.monotonic()
            try:
                if isinstance(message, str):
                    raise ValueError("text frames are not part of the protocol; send msgpack bytes")
                request = codec.unpackb(message)
                if not isinstance(request, dict):
                    raise ValueError(f"expected an observation dict, got {type(request).__name__}")
                if "__ctrl__" in request:  # openpi-client's episode_start / episode_end
                    await websocket.send(packer.pack({"__ack__": str(request["__ctrl__"])}))
                    continue
                t_infer = time.monotonic()
                answer = await loop.run_in_executor(self._executor, self.infer, request)
                infer_ms = (time.monotonic() - t_infer) * 1e3
                answer["server_timing"] = {"infer_ms": infer_ms}
                if prev_total_ms is not None:
                    answer["server_timing"]["prev_total_ms"] = prev_total_ms
                await websocket.send(packer.pack(answer))
                self.requests += 1
                prev_total_ms = (time.monotonic() - t_start) * 1e3
            except websockets.ConnectionClosed:
                log.info("client %s disconnected mid-request", peer)
                return
            except Exception:  # noqa: BLE001 - the client gets the traceback, the server goes on
                tb = traceback.format_exc()
                log.error("request from %s failed:\n%s", peer, tb)
                try:
                    await websocket.send(tb)
                    await websocket.close(code=1011, reason="policy server error; traceback in previous frame")
                except websockets.ConnectionClosed:
                    pass
                return

    async def _serve(self) -> None:
        from websockets.asyncio.server import serve

        self._stop = asyncio.Event()
        async with serve(
            self._handler, self.host, self.port, compression=None, max_size=None, process_request=self._process_request
        ) as server:
            self.port = int(server.sockets[0].getsockname()[1])
            log.info(
                "serving on ws://%s:%d (healthz: http://%s:%d/healthz)", self.host, self.port, self.host, self.port
            )
            self._ready.set()
            await self._stop.wait()

    def serve_forever(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await self._serve()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise

    # ------------------------------------------------------------------ in-process use (tests, benchmarks)
    def start(self, timeout_s: float = 10.0) -> int:
        """Serve in a daemon thread; return the bound port."""
        self._thread = threading.Thread(target=self.serve_forever, name="policy-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"policy server did not start within {timeout_s} s")
        if self._error is not None:
            raise RuntimeError(f"policy server failed to start: {self._error}") from self._error
        return self.port

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._executor.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------- building from the Hydra config
def build_server(cfg: DictConfig) -> PolicyServer:
    """Policy, normalizer and metadata from the same conf/ groups ``python -m inference`` uses."""
    from inference.run import make_normalizer, make_policy

    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    cfg = OmegaConf.create(container)
    pcfg, cams, scfg = cfg.policy, cfg.cameras, cfg.serve
    runner = PolicyRunner.build(lambda: make_policy(cfg), lambda: make_normalizer(cfg))
    meta = runner.policy.metadata
    obs_keys = OmegaConf.to_container(scfg.obs_keys, resolve=True) if scfg.get("obs_keys") is not None else None
    # the server reads privileged extras when a client sends them (our scripted policy needs them)
    obs_map = ObsKeyMap.from_config(obs_keys if obs_keys is not None else {"info": "info"}, tuple(meta.camera_names))
    metadata = {
        "policy": str(pcfg.get("type", pcfg.get("_target_"))),
        "robot": str(cfg.robot.get("name", "")),
        "chunk_size": int(meta.chunk_size),
        "action_dim": int(meta.action_dim),
        "state_dim": int(meta.state_dim),
        "camera_names": list(meta.camera_names),
        "image_size": [int(cams.height), int(cams.width)] if meta.camera_names else None,
        "state_history": int(pcfg.get("state_history", 1)),
        "num_img_obs": int(cams.get("num_img_obs", 1)),
        "obs_keys": obs_map.as_dict(),
        "spaces": "robot",
        "protocol": "openpi websocket, msgpack-numpy",
    }
    return PolicyServer(
        runner, obs_map, metadata, host=str(scfg.host), port=int(scfg.port), api_key=scfg.get("api_key")
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    from inference.app import _prepare_env

    logging.getLogger().setLevel(cfg.get("log_level", "INFO"))
    _prepare_env()
    server = build_server(cfg)

    def announce() -> None:
        if server._ready.wait(120) and server._error is None:
            print(f"serving {server.metadata['policy']} on ws://{server.host}:{server.port}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped")
    except OSError as exc:
        print(f"cannot serve on {server.host}:{server.port}: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
