"""User tokens signed with Supabase's asymmetric keys: checked against the project's JWKS,
served here by a real local HTTP endpoint, with key rotation picked up without a restart;
HS256 tokens still checked against the shared secret; anything else refused."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from core.config import Settings
from serving.errors import UnauthorizedError
from serving.security import Authenticator

SECRET = "a-test-jwt-secret-of-thirty-two-bytes!"


class Keys:
    """The JWKS the endpoint publishes (mutable: a test rotates it)."""

    def __init__(self) -> None:
        self.published: dict[str, Any] = {"keys": []}
        self.fetches = 0

    def add(self, kid: str) -> ec.EllipticCurvePrivateKey:
        private = ec.generate_private_key(ec.SECP256R1())
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
        self.published["keys"].append(public | {"kid": kid, "alg": "ES256", "use": "sig"})
        return private


@pytest.fixture
def jwks() -> Iterator[tuple[str, Keys]]:
    keys = Keys()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            keys.fetches += 1
            body = json.dumps(keys.published).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # quiet test output
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/auth/v1/.well-known/jwks.json", keys
    server.shutdown()


def authenticator(jwks_url: str | None, secret: str | None = SECRET) -> Authenticator:
    settings = Settings.model_validate(
        {"SUPABASE_JWKS_URL": jwks_url, "SUPABASE_JWT_SECRET": secret, "jwks_cache_seconds": 0.2}
    )
    return Authenticator(settings)


def token(key: Any, algorithm: str, kid: str | None = None, **claims: Any) -> str:
    payload = {"sub": "user-1", "aud": "authenticated", "exp": int(time.time()) + 600} | claims
    return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


def test_a_token_signed_with_a_published_key_is_accepted(jwks: tuple[str, Keys]) -> None:
    url, keys = jwks
    private = keys.add("key-1")
    who = authenticator(url).authenticate(f"Bearer {token(private, 'ES256', 'key-1')}", None)
    assert who.user_id == "user-1"
    assert not who.is_admin


def test_a_rotated_key_is_fetched_without_a_restart(jwks: tuple[str, Keys]) -> None:
    url, keys = jwks
    auth = authenticator(url)
    first = keys.add("key-1")
    assert auth.authenticate(f"Bearer {token(first, 'ES256', 'key-1')}", None).user_id
    second = keys.add("key-2")  # Supabase rotates: a new kid appears in the JWKS
    time.sleep(0.3)  # past the refetch cool-down
    who = auth.authenticate(f"Bearer {token(second, 'ES256', 'key-2', sub='user-2')}", None)
    assert who.user_id == "user-2"
    assert keys.fetches >= 2


@pytest.mark.parametrize(
    "case",
    ["unknown key", "expired", "wrong audience", "alg none", "no jwks configured", "no secret"],
)
def test_bad_tokens_are_refused_with_a_reason(jwks: tuple[str, Keys], case: str) -> None:
    url, keys = jwks
    private = keys.add("key-1")
    stranger = ec.generate_private_key(ec.SECP256R1())
    auth = authenticator(url)
    expected = {
        "unknown key": "signing key not found",
        "expired": "token expired",
        "wrong audience": "audience",
        "alg none": "algorithm 'none' is not accepted",
        "no jwks configured": "SUPABASE_JWKS_URL is not set",
        "no secret": "SUPABASE_JWT_SECRET is not set",
    }[case]
    if case == "unknown key":
        bearer = token(stranger, "ES256", "key-9")
    elif case == "expired":
        bearer = token(private, "ES256", "key-1", exp=int(time.time()) - 10)
    elif case == "wrong audience":
        bearer = token(private, "ES256", "key-1", aud="anon")
    elif case == "alg none":
        bearer = jwt.encode({"sub": "user-1", "aud": "authenticated"}, "", algorithm="none")
    elif case == "no jwks configured":
        auth = authenticator(None)
        bearer = token(private, "ES256", "key-1")
    else:
        auth = authenticator(url, secret=None)
        bearer = token(SECRET, "HS256")
    with pytest.raises(UnauthorizedError, match=expected):
        auth.authenticate(f"Bearer {bearer}", None)


def test_hs256_tokens_still_use_the_shared_secret(jwks: tuple[str, Keys]) -> None:
    url, _ = jwks
    auth = authenticator(url)
    admin = token(SECRET, "HS256", app_metadata={"role": "admin"})
    assert auth.authenticate(f"Bearer {admin}", None).is_admin
    with pytest.raises(UnauthorizedError, match="invalid token"):
        auth.authenticate(f"Bearer {token('another-secret-of-thirty-two-bytes!!', 'HS256')}", None)
