"""Who is calling: a student with a Supabase access token (signature, expiry and
audience checked; HS256 tokens against the project's JWT secret, ES256/RS256 tokens
against the project's published keys, fetched and cached, a new `kid` refetching them so
key rotation needs no restart), or a service with an API key. A student reads only their own rows; services read any; admin routes need an admin
(a token whose `app_metadata.role` is `admin`, or an admin API key)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import jwt

from core.config import Settings
from serving.errors import ForbiddenError, UnauthorizedError

ADMIN_ROLE = "admin"
ASYMMETRIC = ("ES256", "RS256")  # what Supabase's signing keys use


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    caller: str  # rate-limit and log key: `user:<id>` or `key:<digest>`
    user_id: str | None  # the student, for user tokens
    is_admin: bool

    def require_user(self, user_id: str, field: str = "user_id") -> None:
        """A student may read only their own rows (services and admins any)."""
        if self.user_id is not None and not self.is_admin and self.user_id != user_id:
            raise ForbiddenError(f"{field}: a student token reads only its own user_id", field)

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ForbiddenError("this route needs an admin")


class Authenticator:
    """Checks the `Authorization: Bearer <jwt>` or `X-API-Key` header of a request."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.supabase_jwt_secret
        self._secret = secret.get_secret_value() if secret else None
        self._audience = settings.jwt_audience
        self._jwks = (
            jwt.PyJWKClient(
                settings.supabase_jwks_url,
                cache_keys=True,
                lifespan=settings.jwks_cache_seconds,
                cooldown_duration=min(30.0, settings.jwks_cache_seconds),
                timeout=5,
            )
            if settings.supabase_jwks_url
            else None
        )
        self._admin_keys = [k.get_secret_value() for k in settings.serving_admin_api_keys]
        self._keys = [k.get_secret_value() for k in settings.serving_api_keys] + self._admin_keys

    def authenticate(self, authorization: str | None, api_key: str | None) -> Principal:
        """The caller, or UnauthorizedError saying what is wrong (never why a key failed)."""
        if api_key:
            return self._by_key(api_key)
        if not authorization:
            raise UnauthorizedError(
                "missing credentials: send a Bearer token or an X-API-Key", error=None
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthorizedError(
                "the Authorization header must be 'Bearer <token>'", error="invalid_request"
            )
        return self._by_token(token.strip())

    def _by_key(self, key: str) -> Principal:
        # Compare every configured key in constant time, so timing reveals nothing.
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError).
        given = key.encode()
        matches = [hmac.compare_digest(given, known.encode()) for known in self._keys]
        if not any(matches):
            raise UnauthorizedError("invalid API key")
        digest = hashlib.sha256(given).hexdigest()[:12]
        is_admin = any(hmac.compare_digest(given, known.encode()) for known in self._admin_keys)
        return Principal(caller=f"key:{digest}", user_id=None, is_admin=is_admin)

    def _by_token(self, token: str) -> Principal:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError as exc:
            raise UnauthorizedError("invalid token") from exc
        key: Any
        if algorithm == "HS256":
            if self._secret is None:
                raise UnauthorizedError(
                    "HS256 user tokens are not accepted: SUPABASE_JWT_SECRET is not set"
                )
            key = self._secret
        elif algorithm in ASYMMETRIC:
            if self._jwks is None:
                raise UnauthorizedError(
                    f"{algorithm} user tokens are not accepted: SUPABASE_JWKS_URL is not set"
                )
            try:
                key = self._jwks.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientError as exc:  # unknown kid, or the keys cannot be fetched
                raise UnauthorizedError(f"token signing key not found: {exc}") from exc
        else:
            raise UnauthorizedError(f"token algorithm {algorithm!r} is not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise UnauthorizedError("token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise UnauthorizedError("token audience is not accepted") from exc
        except jwt.InvalidTokenError as exc:
            raise UnauthorizedError("invalid token") from exc
        metadata = claims.get("app_metadata") or {}
        is_admin = isinstance(metadata, dict) and metadata.get("role") == ADMIN_ROLE
        user_id = str(claims["sub"])
        return Principal(caller=f"user:{user_id}", user_id=user_id, is_admin=is_admin)
