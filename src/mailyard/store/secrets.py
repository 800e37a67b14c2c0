"""Random secrets kept in the store: made on first use, the same for every node after."""

from __future__ import annotations

import secrets as random
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .db import session_scope
from .models import NodeSecret

if TYPE_CHECKING:
    from ..home import Home

# 256 bits: an HMAC key as long as the output of the hash it keys (RFC 2104 3).
SECRET_BYTES = 32


def secret(home: Home, name: str) -> bytes:
    """The secret called `name`, made now if the store has none."""
    with session_scope(home.db_url) as s:
        row = s.scalar(select(NodeSecret).where(NodeSecret.name == name))
        if row is not None:
            return bytes.fromhex(row.value)
    made = random.token_hex(SECRET_BYTES)
    try:
        with session_scope(home.db_url) as s:
            s.add(NodeSecret(name=name, value=made))
    except IntegrityError:  # another process made it meanwhile: theirs is the one
        pass
    with session_scope(home.db_url) as s:
        value = s.scalar(select(NodeSecret.value).where(NodeSecret.name == name))
    if value is None:  # made above or by another process: cannot be missing unless deleted
        raise RuntimeError(f"node secret {name} vanished from the store")
    return bytes.fromhex(value)
