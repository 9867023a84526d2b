"""Password hashing with argon2id (argon2-cffi's defaults follow RFC 9106's second
recommended profile). Hashing costs ~50 ms of CPU on purpose, so it runs in a thread,
never on the event loop.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from polymodal.domain.errors import ValidationFailed

MIN_LENGTH = 10
MAX_LENGTH = 1024  # argon2 takes any length; a cap keeps one request from burning CPU
_HASHER = PasswordHasher()
# Verified against when the email is unknown, so a miss costs as long as a wrong password
# and response times do not tell which emails have accounts.
_DUMMY_HASH = _HASHER.hash("polymodal-no-such-user")


def check_strength(password: str) -> None:
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ValidationFailed(
            f"password: must be {MIN_LENGTH}-{MAX_LENGTH} characters",
            param="password",
            code="weak_password",
        )


async def hash_password(password: str) -> str:
    check_strength(password)
    return await asyncio.to_thread(_HASHER.hash, password)


def _verify(stored: str | None, password: str) -> bool:
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored``; a missing hash never matches (but costs
    the same time)."""
    return await asyncio.to_thread(_verify, stored, password)
