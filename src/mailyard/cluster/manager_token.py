"""The manager's node token: the API token it sends to every node's API for cascaded actions.

The token is an ordinary API token named `cluster-manager` (mailyard.panel.tokens): the shared
store keeps only its sha256, so every node accepts it as soon as it is made. The token itself is
kept in one file in the manager's home, root's and readable by the panel's group only
(mailyard-panel, which sends it) on a real node.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..durable import fsync_dir
from ..panel.tokens import TokenError, create_token, revoke_token
from .membership import ClusterError

if TYPE_CHECKING:
    from ..home import Home

TOKEN_NAME = "cluster-manager"


# Root's, readable by the panel's group: the panel (as mailyard-panel) sends it for the
# cascaded actions; no one else may read it.
TOKEN_DIR_MODE = 0o750
TOKEN_MODE = 0o640


def _panel_group() -> int | None:
    """The panel's group as root (etc/ is root's, so no one else's link is followed), else
    None (run as one user, the file stays that user's)."""
    from ..services.privileges import panel_owner, running_as_root

    return panel_owner()[1] if running_as_root() else None


def token_path(home: Home) -> Path:
    return home.etc_dir / "cluster" / "manager-token"


def renew(home: Home) -> Path:
    """Make a new `cluster-manager` token (revoking the old one) and store it; its path.

    The file is written beside its final name with TOKEN_MODE and renamed over it, so a reader
    sees the old token or the new one, never half of one."""
    try:
        revoke_token(home, TOKEN_NAME)
    except TokenError:
        pass  # none yet
    token = create_token(home, TOKEN_NAME)
    path = token_path(home)
    path.parent.mkdir(mode=TOKEN_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path.parent, TOKEN_DIR_MODE)
    group = _panel_group()
    if group is not None:
        os.chown(path.parent, 0, group, follow_symlinks=False)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, TOKEN_MODE)
    if group is not None:
        os.fchown(fd, 0, group)
    os.fchmod(fd, TOKEN_MODE)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def read(home: Home) -> str:
    """The manager's node token; ClusterError (saying what to run) when there is none."""
    path = token_path(home)
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise ClusterError(f"{path}: no node token on this node; run `mailyard cluster init` "
                           "on the manager to make one") from None
    except OSError as exc:
        raise ClusterError(f"{path}: cannot read the node token ({exc.strerror}); cascaded "
                           "actions run as the user who ran `mailyard cluster init` "
                           "(root)") from None
    if not token:
        raise ClusterError(f"{path}: the node token file is empty; run `mailyard cluster "
                           "init` on the manager to make a new one")
    return token
