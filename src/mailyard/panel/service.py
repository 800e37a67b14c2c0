"""The `panel` service: the panel's app served over HTTPS on the panel port until SIGTERM."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import uvicorn

from ..home import Home
from .app import create_app

# The guide's panel listens on every address (administrators reach it from their desks);
# firewalls decide who may. Tests reach it on 127.0.0.1.
LISTEN_ADDRESS = "0.0.0.0"


def version() -> str:
    try:
        return f"mailyard panel {package_version('mailyard')}"
    except PackageNotFoundError:
        return "mailyard panel (not installed)"


def run(home: Home) -> None:
    """Serve until SIGTERM (uvicorn stops gracefully on it)."""
    config = uvicorn.Config(
        create_app(home), host=LISTEN_ADDRESS, port=home.port("panel"),
        ssl_certfile=str(home.cert_file), ssl_keyfile=str(home.key_file),
        proxy_headers=False, server_header=False, log_level="info", access_log=True,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
