"""The JWT signing key ring: asymmetric key pairs in the database, rotated by age or on
demand, published as a JWKS.

A key signs until it is rotated out; it then verifies for an overlap (by default the
access-token lifetime plus leeway, so no token it signed stops working early) and is
retired: dropped from the JWKS and refused. Private keys are sealed with AES-256-GCM
under a key derived from ``secret_key`` and never logged. Each process reloads the ring
every ``refresh_s`` seconds and at once when a token names a ``kid`` it does not know,
so a rotation by another process or by the CLI is picked up without a restart.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db.models_identity import SigningKey
from polymodal.domain.errors import NotFound
from polymodal.observability.logging import get_logger

ALGORITHMS = ("EdDSA", "RS256")
PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey


@dataclass(frozen=True, slots=True)
class RingKey:
    kid: str
    alg: str
    private: PrivateKey
    public: PublicKey
    jwk: dict[str, Any]
    created_at: datetime
    rotated_at: datetime | None
    retire_at: datetime | None


def _sealing_key(secret: str) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"polymodal/jwt-keys")
    return AESGCM(hkdf.derive(secret.encode()))


def _generate(alg: str) -> PrivateKey:
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unsupported JWT algorithm {alg!r}")


def public_jwk(kid: str, alg: str, public: PublicKey) -> dict[str, Any]:
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = json.loads(OKPAlgorithm.to_jwk(public))
    else:
        raw = json.loads(RSAAlgorithm.to_jwk(public))
    return {**raw, "kid": kid, "alg": alg, "use": "sig"}


class KeyRing:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        secret: str,
        algorithm: str,
        rotation_s: float,
        overlap_s: float,
        refresh_s: float = 60.0,
        unknown_kid_reload_s: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._aead = _sealing_key(secret)
        self._alg = algorithm
        self._rotation = timedelta(seconds=rotation_s)
        self._overlap = timedelta(seconds=overlap_s)
        self._refresh_s = refresh_s
        self._unknown_kid_reload_s = unknown_kid_reload_s
        self._clock = clock
        self._monotonic = monotonic
        self._keys: dict[str, RingKey] = {}
        self._current: RingKey | None = None
        self._loaded_at = float("-inf")
        self._unknown_reload_at = float("-inf")

    # --- sealing ----------------------------------------------------------------------

    def _seal(self, kid: str, key: PrivateKey) -> str:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, pem, kid.encode())).decode()

    def _unseal(self, kid: str, sealed: str) -> PrivateKey:
        blob = base64.b64decode(sealed)
        pem = self._aead.decrypt(blob[:12], blob[12:], kid.encode())
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"signing key {kid} has an unsupported type")
        return key

    # --- loading --------------------------------------------------------------------------

    async def load(self) -> None:
        now = self._clock()
        async with self._sessions() as session:
            rows = (await session.execute(select(SigningKey))).scalars().all()
        keys: dict[str, RingKey] = {}
        for row in rows:
            if row.retire_at is not None and row.retire_at <= now:
                continue
            try:
                private = self._unseal(row.kid, row.private_key)
            except (InvalidTag, ValueError):
                # Sealed under another secret_key: unusable here, so skipped (and, if it
                # was the signing key, ``ensure`` makes a new one) rather than fatal.
                get_logger("polymodal.identity").warning("signing_key_unreadable", kid=row.kid)
                continue
            keys[row.kid] = RingKey(
                kid=row.kid,
                alg=row.alg,
                private=private,
                public=private.public_key(),
                jwk=dict(row.public_jwk),
                created_at=row.created_at,
                rotated_at=row.rotated_at,
                retire_at=row.retire_at,
            )
        signing = [k for k in keys.values() if k.rotated_at is None]
        self._keys = keys
        self._current = max(signing, key=lambda k: k.created_at, default=None)
        self._loaded_at = self._monotonic()

    async def ensure(self) -> RingKey:
        """Load the ring; rotate when there is no signing key or it is older than the
        rotation period (start-up calls this)."""
        await self.load()
        if self._current is None or self._clock() - self._current.created_at >= self._rotation:
            await self.rotate()
        assert self._current is not None
        return self._current

    async def rotate(self, *, overlap_s: float | None = None) -> RingKey:
        """A new signing key; the current ones stop signing and verify for the overlap."""
        now = self._clock()
        overlap = self._overlap if overlap_s is None else timedelta(seconds=overlap_s)
        kid = f"{now:%Y%m%d}-{secrets.token_hex(6)}"
        private = _generate(self._alg)
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(SigningKey)
                .where(SigningKey.rotated_at.is_(None))
                .values(rotated_at=now, retire_at=now + overlap)
            )
            session.add(
                SigningKey(
                    kid=kid,
                    alg=self._alg,
                    private_key=self._seal(kid, private),
                    public_jwk=public_jwk(kid, self._alg, private.public_key()),
                    created_at=now,
                )
            )
        await self.load()
        return self._keys[kid]

    async def retire(self, kid: str) -> None:
        """Stop verifying ``kid`` now (a key that leaked)."""
        now = self._clock()
        async with self._sessions() as session, session.begin():
            row = await session.get(SigningKey, kid)
            if row is None:
                raise NotFound(f"no signing key {kid!r}", code="signing_key_not_found")
            row.rotated_at = row.rotated_at or now
            row.retire_at = now
        await self.load()

    async def _fresh(self) -> None:
        if self._monotonic() - self._loaded_at >= self._refresh_s:
            if not self._keys:
                await self.load()  # nothing to fall back on: let the error surface
                return
            try:
                await self.load()
            except (SQLAlchemyError, OSError) as e:
                # Keep verifying with the keys we have; try again after refresh_s.
                self._loaded_at = self._monotonic()
                get_logger("polymodal.identity").warning(
                    "signing_keys_reload_failed", error=type(e).__name__
                )

    # --- use ---------------------------------------------------------------------------

    async def signing_key(self) -> RingKey:
        await self._fresh()
        if self._current is None:
            return await self.ensure()
        return self._current

    async def verification_key(self, kid: str) -> RingKey | None:
        """The key named ``kid``, if it still verifies. An unknown kid reloads the ring
        at most once per ``unknown_kid_reload_s`` (it may be another process's new key)."""
        await self._fresh()
        key = self._keys.get(kid)
        # Throttled on the last unknown-kid reload, not the last load: a key another
        # replica made a moment after this one loaded is still found at once.
        since = self._monotonic() - self._unknown_reload_at
        if key is None and since >= self._unknown_kid_reload_s:
            self._unknown_reload_at = self._monotonic()
            await self.load()
            key = self._keys.get(kid)
        if key is not None and key.retire_at is not None and key.retire_at <= self._clock():
            return None
        return key

    def is_live(self, kid: str) -> bool:
        """Synchronous check for cached tokens: ``kid`` is loaded and not retired."""
        key = self._keys.get(kid)
        return key is not None and (key.retire_at is None or key.retire_at > self._clock())

    async def jwks(self) -> dict[str, Any]:
        await self._fresh()
        now = self._clock()
        live = [k for k in self._keys.values() if k.retire_at is None or k.retire_at > now]
        live.sort(key=lambda k: k.created_at, reverse=True)
        return {"keys": [k.jwk for k in live]}

    def describe(self) -> list[dict[str, str]]:
        """The loaded keys, newest first, for the CLI (public data only)."""
        out = []
        for k in sorted(self._keys.values(), key=lambda k: k.created_at, reverse=True):
            state = "signing" if k.rotated_at is None else "verifying"
            out.append(
                {
                    "kid": k.kid,
                    "alg": k.alg,
                    "state": state,
                    "created_at": k.created_at.isoformat(),
                    "retire_at": k.retire_at.isoformat() if k.retire_at else "",
                }
            )
        return out
