"""The `panel` service: the panel's app served over HTTPS on the panel port until SIGTERM.

Started as root by the supervisor, it reads the TLS key (root's alone, 0600) and binds its
port, then becomes `mailyard-panel` for good before it serves a single request, as the SMTP
services become the mail owner. From then on it has the store (group mailyard-store), the
supervisor's socket (group mailyard-panel, for the services' states) and its own var/rrd;
everything else it asks of the root helper (services/helper.py).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import uvicorn

from ..home import Home
from ..services.privileges import PANEL_USER, drop_privileges
from ..store.settings_store import load_settings
from .app import create_app

# Modules the panel imports lazily, loaded before root is dropped (see PRELOAD_BEFORE_DROP).
PANEL_PRELOAD = (
    "mailyard.cluster.membership", "mailyard.cluster.changes", "mailyard.store.cache",
    "mailyard.store.outage", "mailyard.store.away", "mailyard.store.health",
    "mailyard.panel.api_spam", "mailyard.panel.api_virus", "mailyard.panel.api_queue",
    "mailyard.services.apply_settings", "mailyard.queue.admin", "mailyard.filters.prefs",
    "mailyard.filters.virusdb", "mailyard.filters.freshclam", "multipart", "python_multipart",
    # a DKIM key made (store.dkim_keys.new_key_pair: a domain added, a rotation); loaded at
    # the top by services.certificates today, named here so that it stays loaded
    "cryptography.hazmat.primitives.serialization",
    "cryptography.hazmat.primitives.asymmetric.rsa",
    "cryptography.hazmat.primitives.asymmetric.ed25519",
)


def version() -> str:
    try:
        return f"mailyard panel {package_version('mailyard')}"
    except PackageNotFoundError:
        return "mailyard panel (not installed)"


def _preload() -> None:
    for name in PANEL_PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            continue  # an optional part this node lacks


def run(home: Home) -> None:
    """Bind and load the TLS key as root, drop to mailyard-panel, serve until SIGTERM
    (uvicorn stops gracefully on it)."""
    settings = load_settings(home)
    config = uvicorn.Config(
        create_app(home), host=str(settings["panel.listen_address"]),
        port=home.port("panel", settings),
        ssl_certfile=str(home.cert_file), ssl_keyfile=str(home.key_file),
        proxy_headers=False, server_header=False, log_level="info", access_log=True,
        timeout_graceful_shutdown=5,
    )
    config.load()  # the TLS context: the key is read now, while we may
    sock = config.bind_socket()
    _preload()
    drop_privileges(PANEL_USER)
    uvicorn.Server(config).run(sockets=[sock])
