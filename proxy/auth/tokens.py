"""Client credentials and the Bearer tokens issued for them (JWT, HMAC-signed)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from proxy.auth.errors import Unauthorized
from proxy.common.caches import BoundedCache
from proxy.config.settings import AuthConfig

# Compared against when the client id is unknown, so a miss costs the same as a wrong secret.
_NO_CLIENT_DIGEST = hashlib.sha256(b"docproxy: no such client").digest()
# How many checked tokens ``verify`` remembers (about 1 KiB each).
VERIFIED_TOKENS_KEPT = 1024


@dataclass(frozen=True, slots=True)
class TokenRequest:
    client_id: str
    client_secret: str
    fingerprint: str | None
    first_name: str | None
    last_name: str | None
    email: str | None
    group_name: str | None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a verified token speaks for."""

    client_id: str
    email: str | None
    group_name: str | None
    fingerprint: str | None
    token_id: str
    issued_at: float = 0.0  # the token's iat: revoking a client refuses what it had before
    subject: str = ""  # the token's sub: per-caller limits count (client_id, subject)


@dataclass(frozen=True, slots=True)
class _Checked:
    """A token whose signature checked out, with what a later use still has to check: its
    claims until they have passed once, then only the times (the rest cannot change)."""

    claims: dict[str, Any]
    caller: Caller
    passed: bool = False
    not_before: float = 0.0  # the later of nbf and iat
    expires: float = 0.0


@dataclass(frozen=True, slots=True)
class _Jose:
    """joserfc's JWT functions, its error class, and this authority's key and claims rules."""

    jwt: ModuleType
    error: type[Exception]
    keys: dict[str, Any]  # key id -> joserfc OctKey
    claims: Any  # joserfc.jwt.JWTClaimsRegistry


def _load_jose(config: AuthConfig) -> _Jose:
    # joserfc imports `cryptography` for key types HMAC never uses (about 8 MiB resident and a
    # tenth of a second at start), so it is loaded by the first token issued or checked: a
    # sidecar that only answers probes and signed links never pays for it.
    from joserfc import jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import OctKey
    from joserfc.jwt import JWTClaimsRegistry

    claims = JWTClaimsRegistry(
        leeway=config.leeway,
        iss={"essential": True, "value": config.issuer},
        aud={"essential": True, "value": config.audience},
        exp={"essential": True},
        iat={"essential": True},
        client_id={"essential": True},
        jti={"essential": True},
    )
    keys = {k.id: OctKey.import_key(k.key.encode(), {"kid": k.id}) for k in config.signing_keys}
    return _Jose(jwt, JoseError, keys, claims)


class TokenAuthority:
    """Issues access tokens with the first of ``auth.signing_keys`` (its id in the ``kid``
    header) and verifies them with the key their ``kid`` names."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self._signing_id = config.signing_keys[0].id
        self._clients = {c.client_id: c.secret_sha256 for c in config.clients}
        # Tokens whose signature already checked out, with their claims: a client sends the
        # same token on every request, and decoding plus HMAC is most of a verify's cost.
        self._verified: BoundedCache[str, _Checked] = BoundedCache(VERIFIED_TOKENS_KEPT)

    @functools.cached_property
    def _jose(self) -> _Jose:
        return _load_jose(self.config)

    def authenticate_client(self, client_id: str, client_secret: str) -> bool:
        expected = self._clients.get(client_id, _NO_CLIENT_DIGEST)
        given = hashlib.sha256(client_secret.encode()).digest()
        return hmac.compare_digest(expected, given) and client_id in self._clients

    def issue(
        self, request: TokenRequest, *, now: float | None = None, token_id: str | None = None
    ) -> str:
        """A signed token for an authenticated client; ``token_id`` is its ``jti`` (made here
        when None), which the audit trail names instead of the token."""
        if not self.authenticate_client(request.client_id, request.client_secret):
            raise Unauthorized()
        issued_at = int(now if now is not None else time.time())
        claims: dict[str, Any] = {
            "iss": self.config.issuer,
            "aud": self.config.audience,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + self.config.token_ttl,
            "jti": token_id or uuid.uuid4().hex,
            "client_id": request.client_id,
            "sub": request.email or request.client_id,
        }
        optional = {
            "email": request.email,
            "group_name": request.group_name,
            "fingerprint": request.fingerprint,
            "given_name": request.first_name,
            "family_name": request.last_name,
        }
        claims.update({k: v for k, v in optional.items() if v is not None})
        # joserfc only signs with HS384/HS512 when they are named explicitly.
        jose = self._jose
        return jose.jwt.encode(
            {"alg": self.config.algorithm, "typ": "JWT", "kid": self._signing_id},
            claims,
            jose.keys[self._signing_id],
            algorithms=[self.config.algorithm],
        )

    def verify(self, token: str) -> Caller:
        """The caller a token speaks for; Unauthorized for anything forged, expired or odd."""
        checked = self._verified.get(token)
        if checked is not None and checked.passed:
            # The same comparisons as joserfc's exp, nbf and iat checks, without walking its
            # claims registry again: the rest of the claims cannot have changed.
            now, leeway = int(time.time()), self.config.leeway
            if not (checked.expires < now - leeway) and not (checked.not_before > now + leeway):
                return self._configured(checked.caller)
        if checked is None:
            checked = self._verify_signature(token)
        jose = self._jose
        try:
            # Time-dependent claims (exp, nbf, iat) are checked on every use, cached or not.
            jose.claims.validate(checked.claims)
        except (jose.error, ValueError, TypeError, KeyError) as exc:
            self._verified.put(token, checked)  # the signature stays checked; the times did not
            raise Unauthorized() from exc
        claims = checked.claims
        self._verified.put(
            token,
            _Checked(
                claims,
                checked.caller,
                passed=True,
                not_before=max(claims.get("nbf", claims["iat"]), claims["iat"]),
                expires=claims["exp"],
            ),
        )
        return self._configured(checked.caller)

    def _configured(self, caller: Caller) -> Caller:
        """``caller`` while its client is still in the config: removing a client from
        config.yaml (and restarting) ends its tokens at once, not when they expire."""
        if caller.client_id not in self._clients:
            raise Unauthorized()
        return caller

    def _verify_signature(self, token: str) -> _Checked:
        jose = self._jose
        try:
            # The allow-list is the configured algorithm only: "none" and key-confusion
            # attacks are refused by the library before the signature is even looked at.
            decoded = jose.jwt.decode(token, self._key_named, algorithms=[self.config.algorithm])
            if not isinstance(decoded.claims, dict):
                # A signed payload of [], null or "x" is not a claims set; joserfc's
                # validator would fail on it with an AttributeError (a 500, not a 403).
                raise Unauthorized()
        except (jose.error, ValueError, TypeError, KeyError) as exc:
            raise Unauthorized() from exc
        claims: dict[str, Any] = decoded.claims
        if decoded.header.get("alg") != self.config.algorithm:
            raise Unauthorized()
        caller = Caller(
            client_id=claim_str(claims, "client_id") or "",
            email=claim_str(claims, "email"),
            group_name=claim_str(claims, "group_name"),
            fingerprint=claim_str(claims, "fingerprint"),
            token_id=claim_str(claims, "jti") or "",
            issued_at=claim_number(claims, "iat"),
            subject=claim_str(claims, "sub") or "",
        )
        return _Checked(claims, caller)

    def _key_named(self, token: Any) -> Any:
        """The key the token's ``kid`` names (``token`` is joserfc's GuestProtocol); a token
        without one (made before keys had ids) is checked with the signing key."""
        key_id = token.headers().get("kid", self._signing_id)
        key = self._jose.keys.get(key_id) if isinstance(key_id, str) else None
        if key is None:
            raise Unauthorized()
        return key


def claim_str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Unauthorized()
    return value


def claim_number(claims: Mapping[str, Any], name: str) -> float:
    """A numeric claim, 0 when absent; the claims check refuses a token without it."""
    value = claims.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthorized()
    return float(value)
