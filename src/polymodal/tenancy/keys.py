"""API key format: ``pm_<12-char prefix>_<43-char secret>``.

The prefix finds the row; only SHA-256 of the secret is stored. The secret carries 256 bits
of randomness, so a fast hash is safe here (no dictionary to attack) and keeps
authentication off the CPU's critical path.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

KEY_PREFIX = "pm_"
PREFIX_LENGTH = 12
SECRET_LENGTH = 43  # secrets.token_urlsafe(32)
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
KEY_LENGTH = len(KEY_PREFIX) + PREFIX_LENGTH + 1 + SECRET_LENGTH


@dataclass(frozen=True, slots=True)
class KeyParts:
    prefix: str
    secret: str


def new_key() -> tuple[str, KeyParts]:
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    secret = secrets.token_urlsafe(32)
    return f"{KEY_PREFIX}{prefix}_{secret}", KeyParts(prefix, secret)


def parse_key(raw: str) -> KeyParts | None:
    """Split a presented key; None when it cannot be one of ours."""
    if len(raw) != KEY_LENGTH or not raw.startswith(KEY_PREFIX):
        return None
    prefix = raw[len(KEY_PREFIX) : len(KEY_PREFIX) + PREFIX_LENGTH]
    if raw[len(KEY_PREFIX) + PREFIX_LENGTH] != "_":
        return None
    if any(c not in _PREFIX_ALPHABET for c in prefix):
        return None
    return KeyParts(prefix, raw[len(KEY_PREFIX) + PREFIX_LENGTH + 1 :])


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
