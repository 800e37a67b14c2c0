"""The `panel` service: the panel's app served over HTTPS on the panel port until SIGTERM."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

from ..home import Home
from ..store.settings_store import load_settings


def version() -> str:
    try:
        return f"mailyard panel {package_version('mailyard')}"
    except PackageNotFoundError:
        return "mailyard panel (not installed)"


def run(home: Home) -> None:
    """Serve until SIGTERM (uvicorn stops gracefully on it)."""
    import uvicorn

    from .app import create_app

    settings = load_settings(home)
    config = uvicorn.Config(
        create_app(home), host=str(settings["panel.listen_address"]),
        port=home.port("panel", settings),
        ssl_certfile=str(home.cert_file), ssl_keyfile=str(home.key_file),
        proxy_headers=False, server_header=False, log_level="info", access_log=True,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
