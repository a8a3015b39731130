"""openpi's own client (openpi-client 0.1.2, NumPy 1.x, in its own venv) against our server.

The venv (.venvs/openpi-client/, git-ignored) is built by the test set-up (tests/side_envs.py) and
reused; openpi's ``WebsocketClientPolicy`` runs there as a subprocess against
``inference.serve.PolicyServer`` serving the ``hold`` policy on loopback.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

import pytest
from hydra import compose, initialize_config_dir

from inference.app import CONF_DIR
from inference.serve import build_server
from tests.side_envs import side_env_python

CLIENT_SCRIPT = r"""
import json, sys
import numpy as np
from openpi_client import websocket_client_policy

port, api_key = int(sys.argv[1]), (sys.argv[2] or None)
client = websocket_client_policy.WebsocketClientPolicy(host="127.0.0.1", port=port, api_key=api_key)
meta = client.get_server_metadata()
state = np.arange(14, dtype=np.float32) * 0.01
rng = np.random.default_rng(0)
obs = {"observation/state": state, "prompt": "hold still"}
for cam in meta["camera_names"]:
    h, w = meta["image_size"]
    obs["observation/images/" + cam] = rng.integers(0, 255, (3, h, w), dtype=np.uint8)
shapes, maxdev = [], 0.0
for _ in range(3):
    out = client.infer(obs)
    shapes.append(list(out["actions"].shape))
    maxdev = max(maxdev, float(np.abs(out["actions"] - state[None, :]).max()))
print(json.dumps({"numpy": np.__version__, "metadata": meta, "shapes": shapes, "dtype": str(out["actions"].dtype),
                  "maxdev": maxdev, "timing": {k: float(v) for k, v in out["server_timing"].items()}}))
"""


@pytest.fixture(scope="module")
def client_python():
    return side_env_python("openpi-client")


def _server(api_key=None):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="serve",
            overrides=[
                "policy=hold",
                "policy.camera_names=[head,left,right]",
                "cameras=sim",
                "serve.port=0",
                f"serve.api_key={api_key or 'null'}",
            ],
        )
    server = build_server(cfg)
    server.start()
    return server


def _run_client(python, port, api_key=""):
    return subprocess.run(
        [str(python), "-c", CLIENT_SCRIPT, str(port), api_key], capture_output=True, text=True, timeout=120
    )


def test_openpi_websocket_client_gets_chunks_of_the_right_shape(client_python):
    server = _server()
    try:
        res = _run_client(client_python, server.port)
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout.strip().splitlines()[-1])
        assert out["numpy"].startswith("1."), "the interop client must run openpi-client's own NumPy 1.x"
        assert out["metadata"]["chunk_size"] == 50 and out["metadata"]["action_dim"] == 14
        assert out["metadata"]["camera_names"] == ["head", "left", "right"]
        assert out["shapes"] == [[50, 14]] * 3 and out["dtype"] == "float32"
        assert out["maxdev"] < 1e-6  # hold repeats the state it was sent: the data made the round trip
        assert out["timing"]["infer_ms"] >= 0 and "prev_total_ms" in out["timing"]
        assert server.requests == 3
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as resp:
            assert resp.status == 200
    finally:
        server.stop()


def test_api_key_is_enforced_for_openpis_client(client_python):
    server = _server(api_key="s3cret")
    try:
        ok = _run_client(client_python, server.port, "s3cret")
        assert ok.returncode == 0, ok.stderr
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5)
        assert err.value.code == 401
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as resp:
            assert resp.status == 200
    finally:
        server.stop()
