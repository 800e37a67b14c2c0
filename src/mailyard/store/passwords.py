"""Password hashes in forms Dovecot verifies too: `{ARGON2ID}` made here, `{SHA512-CRYPT}` read."""

from __future__ import annotations

import hmac
import warnings

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# argon2id with 64 MiB and 3 passes: argon2-cffi's RFC 9106 "low memory" profile; Dovecot checks
# the same encoded string. The cost is paid on every SMTP AUTH, IMAP login and panel sign-in.
_HASHER = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=1)

# A password longer than this is refused before hashing, so nobody can make us hash megabytes.
MAX_PASSWORD_LENGTH = 1024


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("the password may not be empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"the password is longer than {MAX_PASSWORD_LENGTH} characters")
    if "\n" in password or "\r" in password or "\x00" in password:
        raise ValueError("the password may not contain line breaks or NUL")
    return "{ARGON2ID}" + _HASHER.hash(password)


class PasswordCheckError(RuntimeError):
    """The check itself failed (not a wrong password)."""


def verify_password(stored: str, password: str) -> bool:
    """True when `password` matches `stored`; never raises for a malformed hash, raises
    PasswordCheckError when the check could not be made."""
    if not stored or len(password) > MAX_PASSWORD_LENGTH:
        return False
    scheme, _, rest = stored.partition("}")
    scheme = scheme.lstrip("{").upper()
    if scheme == "ARGON2ID":
        try:
            return _HASHER.verify(rest, password)
        except (VerifyMismatchError, InvalidHashError):
            return False
        except VerificationError as exc:
            # Not a verdict on the password: argon2 itself failed (e.g. it could not get its
            # memory). Saying "wrong password" would mislead; the caller answers "try again".
            raise PasswordCheckError(f"the password could not be checked: {exc}") from exc
    if scheme == "SHA512-CRYPT":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # the standard library's crypt(3); SHA512-CRYPT is only ever read here

        return hmac.compare_digest(crypt.crypt(password, rest) or "", rest)
    return False
