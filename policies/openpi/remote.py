"""``policy=openpi_remote``: a client for an openpi policy server (or ``python -m inference.serve``).

openpi's protocol (``openpi_client.websocket_client_policy``): websocket, binary msgpack-numpy
frames (policies/openpi/codec.py), the server sends a metadata dict right after the handshake,
then for every observation dict the client sends, the server answers
``{"actions": (H, D) float, "server_timing": {"infer_ms": ..., "prev_total_ms": ...}, ...}`` or a
text frame carrying a traceback. An optional API key goes in ``Authorization: Api-Key <key>``.
openpi-client itself pins numpy<2, so we speak the protocol with the websockets sync client.

Spaces: openpi servers (and ours) take robot-space observations and return robot-space actions
(they normalize internally), so this policy's model space *is* robot space and its config uses the
identity normalizer. RTC: an openpi server cannot guide its sampler, so guided inference asks for a
fresh chunk and blends it with the previous one (``W * prev + (1 - W) * new``). A server that
advertises ``rtc_guidance`` (``python -m inference.serve``) gets the previous chunk, d and the
horizon with the request (``server_guidance: true``, the default) and inpaints on its side, with
VJP guidance when its policy supports it (then ``metadata.supports_vjp`` is True here too).

Failures: a server that is down at start is an error after ``connect_timeout_s`` (retrying with
exponential backoff meanwhile). A connection that drops mid-run is re-dialed with the same
backoff for at most ``reconnect_timeout_s`` and the request re-sent once; past that
``RemotePolicyError`` is raised, which the RTC runtime treats like a dead inference (robot holds,
run exits non-zero) and which ends a sequential run with the robot holding. A request with no
answer in ``request_timeout_s`` raises too (the connection is then dropped, since a late answer
would be mistaken for the next one).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np

from policies.base import PolicyInput, PolicyMetadata
from policies.guidance import blend, prefix_weights
from policies.openpi import codec
from policies.openpi.obs_map import ObsKeyMap, images_to_uint8
from policies.registry import POLICY_REGISTRY
from services.errors import ConfigError
from services.knobs import PositiveFloat, Range

log = logging.getLogger(__name__)


def _legacy_kwargs() -> dict[str, bool]:
    """websockets >= 17.1 wants ``legacy=True`` for a long-lived connection outside a ``with`` block."""
    import inspect

    from websockets.sync.client import connect

    try:
        return {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
    except (TypeError, ValueError):
        return {}


_LEGACY = _legacy_kwargs()


class RemotePolicyError(RuntimeError):
    """The policy server is unreachable, dropped the connection, or answered with an error."""


def server_uri(host: str, port: int | None) -> str:
    uri = host if host.startswith(("ws://", "wss://")) else f"ws://{host}"
    return uri if port is None else f"{uri}:{port}"


@POLICY_REGISTRY.register("openpi_remote")
class OpenPIRemotePolicy:
    @classmethod
    def supports_trained_guidance(cls, node: Any) -> bool:
        """``guidance: trained`` is the served policy's to do: allowed at start when the client
        hands guidance to the server; a server whose policy lacks it (metadata ``supports_trained``)
        is refused at the first guided request (``PolicyRunner``), naming the mode."""
        return bool(node.get("server_guidance", True))

    @classmethod
    def preflight(cls, node: Any, path: str) -> None:
        """Start-time check, before any connection: the server is named and ``obs_keys`` maps our
        state and cameras into a request (the same mapping the policy builds)."""
        if not str(node.get("host", "")).strip():
            raise ConfigError(f"{path}.host: empty (the policy server's address, e.g. 127.0.0.1)")
        try:
            ObsKeyMap.from_config(node.get("obs_keys"), tuple(node.get("camera_names") or ()), node.get("state_dim"))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path}.obs_keys: {' '.join(str(exc).split())}") from None

    def __init__(
        self,
        chunk_size: int,
        action_dim: int,
        state_dim: int,
        camera_names: Sequence[str] = (),
        host: str = "127.0.0.1",
        port: Annotated[int, Range(ge=1, le=65535)] = 8000,
        api_key: str | None = None,
        prompt: str | None = None,
        obs_keys: dict | None = None,
        actions_key: str = "actions",
        connect_timeout_s: PositiveFloat = 30.0,
        request_timeout_s: PositiveFloat = 10.0,
        reconnect_timeout_s: PositiveFloat = 2.0,
        backoff_initial_s: PositiveFloat = 0.1,
        backoff_max_s: PositiveFloat = 2.0,
        check_metadata: bool = True,
        server_guidance: bool = True,
    ) -> None:
        self.metadata = PolicyMetadata(
            chunk_size=int(chunk_size),
            action_dim=int(action_dim),
            state_dim=int(state_dim),
            camera_names=tuple(camera_names),
            supports_vjp=False,
        )
        self.obs_map = ObsKeyMap.from_config(obs_keys, tuple(camera_names))
        self.uri = server_uri(host, port)
        self.api_key = api_key
        self.prompt = prompt
        self.actions_key = actions_key
        self.connect_timeout_s = float(connect_timeout_s)
        self.request_timeout_s = float(request_timeout_s)
        self.reconnect_timeout_s = float(reconnect_timeout_s)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.check_metadata = check_metadata
        self.last_timing: dict[str, float] = {}
        self.server_metadata: dict[str, Any] = {}
        self._packer = codec.Packer()
        self._ws = None
        self._connect(self.connect_timeout_s, first=True)
        self.server_guides = bool(server_guidance) and self.server_metadata.get("rtc_guidance") is True
        if self.server_guides and self.server_metadata.get("supports_vjp") is True:
            self.metadata = dataclasses.replace(self.metadata, supports_vjp=True)
        if self.server_guides and self.server_metadata.get("supports_trained") is True:
            self.metadata = dataclasses.replace(self.metadata, supports_trained=True)

    # ------------------------------------------------------------------ connection
    def _connect(self, timeout_s: float, first: bool = False) -> None:
        from websockets.exceptions import InvalidHandshake, InvalidURI
        from websockets.sync.client import connect

        headers = {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else None
        deadline = time.monotonic() + timeout_s
        delay, attempts, last_error = self.backoff_initial_s, 0, None
        while True:
            attempts += 1
            remaining = deadline - time.monotonic()
            try:
                ws = connect(
                    self.uri,
                    compression=None,
                    max_size=None,
                    additional_headers=headers,
                    open_timeout=max(0.1, min(remaining, 10.0)),
                    ping_interval=None,
                    **_LEGACY,
                )
                try:
                    metadata = codec.unpackb(ws.recv(timeout=max(0.1, min(remaining, 10.0))))
                except BaseException:
                    ws.close()
                    raise
                break
            except InvalidURI as exc:
                raise RemotePolicyError(f"openpi_remote: bad server address {self.uri!r}: {exc}") from exc
            except InvalidHandshake as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                if status in (401, 403):
                    raise RemotePolicyError(
                        f"openpi_remote: server at {self.uri} refused the API key (HTTP {status}); set policy.api_key"
                    ) from exc
                last_error = exc
            except (OSError, TimeoutError, EOFError) as exc:
                last_error = exc
            except Exception as exc:  # noqa: BLE001 - websockets raises several closed/handshake types
                last_error = exc
            if time.monotonic() + delay > deadline:
                what = (
                    "no policy server answered"
                    if first
                    else "the policy server dropped the connection and did not come back"
                )
                hint = (
                    (
                        " Start one with `python -m inference.serve policy=<name>` or openpi's "
                        "`scripts/serve_policy.py`, or fix policy.host/policy.port"
                    )
                    if first
                    else ""
                )
                raise RemotePolicyError(
                    f"openpi_remote: {what} at {self.uri} within {timeout_s:.1f} s ({attempts} attempts; "
                    f"last error: {type(last_error).__name__}: {last_error}).{hint}"
                ) from last_error
            log.info(
                "waiting for policy server at %s (%s); retry in %.2f s", self.uri, type(last_error).__name__, delay
            )
            time.sleep(delay)
            delay = min(delay * 2.0, self.backoff_max_s)
        if not isinstance(metadata, dict):
            ws.close()
            raise RemotePolicyError(f"openpi_remote: server at {self.uri} sent no metadata dict on connect")
        self._ws, self.server_metadata = ws, metadata
        if self.check_metadata:
            self._check_server(metadata)
        log.info("connected to policy server %s (metadata keys: %s)", self.uri, sorted(map(str, metadata)))

    def _check_server(self, metadata: dict) -> None:
        """Fail at start when the server says it produces fewer actions/dims than configured."""
        for key in ("chunk_size", "action_dim"):
            have = metadata.get(key)
            want = getattr(self.metadata, key)
            if isinstance(have, (int, np.integer)) and int(have) < want:
                raise RemotePolicyError(
                    f"openpi_remote: policy.{key}={want} but the server at {self.uri} reports {key}={int(have)}"
                )

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            finally:
                self._ws = None

    def __del__(self) -> None:  # best effort: a policy object may be dropped without close()
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    # ------------------------------------------------------------------ requests
    def request(self, obs: dict[str, Any]) -> dict[str, Any]:
        """Send one observation dict, return the server's decoded answer (reconnecting once)."""
        from websockets.exceptions import ConnectionClosed

        payload = self._packer.pack(obs)
        for attempt in (0, 1):
            if self._ws is None:
                self._connect(self.reconnect_timeout_s)
            t0 = time.perf_counter()
            try:
                self._ws.send(payload)
                raw = self._ws.recv(timeout=self.request_timeout_s)
            except TimeoutError as exc:
                self.close()
                raise RemotePolicyError(
                    f"openpi_remote: no answer from {self.uri} within request_timeout_s={self.request_timeout_s}"
                ) from exc
            except (ConnectionClosed, OSError, EOFError) as exc:
                self._ws = None
                if attempt == 1:
                    raise RemotePolicyError(f"openpi_remote: connection to {self.uri} dropped again: {exc}") from exc
                log.warning(
                    "policy server %s dropped the connection (%s); reconnecting for at most %.1f s",
                    self.uri,
                    exc,
                    self.reconnect_timeout_s,
                )
                continue
            rtt_ms = (time.perf_counter() - t0) * 1e3
            break
        if isinstance(raw, str):
            raise RemotePolicyError(f"openpi_remote: the policy server at {self.uri} failed:\n{raw}")
        answer = codec.unpackb(raw)
        if not isinstance(answer, dict):
            raise RemotePolicyError(f"openpi_remote: expected a dict answer, got {type(answer).__name__}")
        timing = answer.get("server_timing") or {}
        self.last_timing = {
            "rtt_ms": rtt_ms,
            **{str(k): float(v) for k, v in timing.items() if isinstance(v, (int, float, np.number))},
        }
        return answer

    def last_info(self) -> dict[str, float | None]:
        """Per-inference extras for telemetry: ``server_ms`` (the server's own infer time) and ``rtt_ms``."""
        return {"server_ms": self.last_timing.get("infer_ms"), "rtt_ms": self.last_timing.get("rtt_ms")}

    def _chunk(self, answer: dict[str, Any]) -> np.ndarray:
        if self.actions_key not in answer:
            raise RemotePolicyError(
                f"openpi_remote: answer lacks {self.actions_key!r} (keys {sorted(map(str, answer))})"
            )
        actions = np.asarray(answer[self.actions_key], dtype=np.float32)
        if actions.ndim == 3 and actions.shape[0] == 1:
            actions = actions[0]
        H, D = self.metadata.chunk_size, self.metadata.action_dim
        if actions.ndim != 2 or actions.shape[0] < H or actions.shape[1] < D:
            raise RemotePolicyError(
                f"openpi_remote: server returned actions of shape {actions.shape}; need at least ({H}, {D})"
            )
        # openpi pads actions to the model's width and may return a longer horizon: keep ours
        return np.array(actions[:H, :D], dtype=np.float32)

    # ------------------------------------------------------------------ Policy protocol
    def observation_dict(self, obs: PolicyInput) -> dict[str, Any]:
        """Our (identity-normalized, robot-space) observation -> the server's dict."""
        return self.obs_map.encode(obs.state, images_to_uint8(obs.images), self.prompt, obs.info)

    def predict(self, obs: PolicyInput) -> np.ndarray:
        return self._chunk(self.request(self.observation_dict(obs)))

    def guided_inference(
        self, obs, prev_chunk, delay, execute_horizon, guidance="vjp", schedule="exp", max_guidance_weight=5.0
    ) -> np.ndarray:
        """The server's own guidance when it offers it; else blend (``vjp`` falls back to ``blend``)."""
        prev = np.asarray(prev_chunk, dtype=np.float32)
        if guidance != "none" and self.server_guides:
            request = self.observation_dict(obs)
            request["rtc"] = {
                "prev_actions": prev,
                "delay": int(delay),
                "execute_horizon": int(execute_horizon),
                "guidance": str(guidance),
                "schedule": str(schedule),
                "max_guidance_weight": float(max_guidance_weight),
            }
            return self._chunk(self.request(request))
        new = self.predict(obs)
        if guidance == "none":
            return new
        weights = prefix_weights(self.metadata.chunk_size, int(delay), int(execute_horizon), schedule)
        return blend(prev, new, weights)

    def warmup(self) -> None:
        pass

    def freeze(self) -> None:
        pass
