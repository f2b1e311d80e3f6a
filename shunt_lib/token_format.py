"""A client token's text, pure: ``shunt_`` + id + ``_`` + secret.

The id is 12 lowercase hex characters (48 random bits): public, shown by ``shunt token list`` and in
logs, the key of the token's record. The secret is 32 random bytes from :mod:`secrets` (256 bits),
base64url without padding (43 characters). Only the SHA-256 of the secret is stored: a 256-bit random
secret needs no slow hash (nothing to guess), and :func:`verify` compares digests with
:func:`hmac.compare_digest`, in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import NamedTuple

PREFIX = "shunt_"
ID_CHARS = 12
SECRET_BYTES = 32
SECRET_CHARS = 43  # base64url of 32 bytes, no padding
_ID_RE = re.compile(r"[0-9a-f]{12}\Z")
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{43}\Z")
TOKEN_CHARS = len(PREFIX) + ID_CHARS + 1 + SECRET_CHARS


class Parsed(NamedTuple):
    """A token split into its public ``id`` and its ``secret``."""

    id: str
    secret: str


def new_id() -> str:
    """A fresh token id: 12 lowercase hex characters."""
    return secrets.token_hex(ID_CHARS // 2)


def new_secret() -> str:
    """A fresh secret: 32 random bytes, base64url without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode("ascii")


def make_token(token_id: str, secret: str) -> str:
    """The token a client sends: ``shunt_<id>_<secret>``."""
    return f"{PREFIX}{token_id}_{secret}"


def looks_like_token(text: str) -> bool:
    """Whether ``text`` claims to be a client token (starts with ``shunt_``); it may still be malformed."""
    return text.startswith(PREFIX)


def parse(token: str) -> Parsed | None:
    """Split a token. :returns: None if it is not exactly ``shunt_`` + 12 hex + ``_`` + 43 base64url characters."""
    if len(token) != TOKEN_CHARS or not token.startswith(PREFIX) or token[len(PREFIX) + ID_CHARS] != "_":
        return None
    token_id, secret = token[len(PREFIX):len(PREFIX) + ID_CHARS], token[len(PREFIX) + ID_CHARS + 1:]
    if not _ID_RE.match(token_id) or not _SECRET_RE.match(secret):
        return None
    return Parsed(token_id, secret)


def valid_id(text: str) -> bool:
    """Whether ``text`` is a well-formed token id."""
    return bool(_ID_RE.match(text))


def hash_secret(secret: str) -> bytes:
    """The stored form of a secret: its SHA-256 digest (32 bytes)."""
    return hashlib.sha256(secret.encode("ascii")).digest()


def verify(secret: str, stored: bytes) -> bool:
    """Whether ``secret`` hashes to ``stored``, compared in constant time (:func:`hmac.compare_digest`)."""
    return hmac.compare_digest(hash_secret(secret), stored)
