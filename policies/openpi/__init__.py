"""openpi integration: ``openpi`` (in-process PyTorch pi0/pi0.5 adapter) and ``openpi_remote``
(a websocket client speaking openpi's protocol), plus the msgpack-numpy codec they share with
``python -m inference.serve``. Importing this package never imports openpi itself.
"""

from policies.openpi.local import INSTALL_HINT, OpenPINotInstalledError, OpenPIPolicy
from policies.openpi.remote import OpenPIRemotePolicy, RemotePolicyError

__all__ = ["INSTALL_HINT", "OpenPINotInstalledError", "OpenPIPolicy", "OpenPIRemotePolicy", "RemotePolicyError"]
