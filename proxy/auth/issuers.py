"""Tokens of the application's own identity providers (``auth.issuers``): checked with the
public keys each provider publishes as a JWKS, fetched with httpx and cached per worker."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import warnings
from collections.abc import Mapping
from typing import Any

from proxy.auth.errors import Unauthorized
from proxy.auth.tokens import Caller, claim_number, claim_str
from proxy.config.settings import AuthConfig, IssuerConfig

logger = logging.getLogger("docproxy.auth")
# EdDSA is what identity providers still put in tokens (RFC 9864 renames it Ed25519); the
# operator chose it in auth.issuers, so joserfc's warning on each worker's first use is noise.
warnings.filterwarnings("ignore", message="EdDSA is deprecated")

# The key type each accepted algorithm needs: a token may not pick a key of another kind.
KEY_TYPES = {"RS256": ("RSA",), "ES256": ("EC",), "EdDSA": ("OKP",)}
CURVES = {"ES256": ("P-256",), "EdDSA": ("Ed25519", "Ed448")}
# Where a token without a kid finds its key: a JWKS key published without one.
NO_KID = ""


def token_part(token: str, index: int) -> Mapping[str, Any]:
    """The decoded JSON of a compact JWS's header (0) or payload (1), unverified; {} if odd."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    segment = parts[index]
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        return {}
    return value if isinstance(value, dict) else {}


class IssuerTokens:
    """Every configured provider, found by a token's ``iss``."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self._providers = {i.issuer: Provider(i, config) for i in config.issuers}

    def __bool__(self) -> bool:
        return bool(self._providers)

    def provider_of(self, token: str) -> Provider | None:
        """The provider a token names as its issuer; None for docproxy's own and the rest."""
        issuer = token_part(token, 1).get("iss")
        return self._providers.get(issuer) if isinstance(issuer, str) else None


class Provider:
    """One identity provider: its keys by kid, refetched on an unknown kid at most once per
    ``auth.jwks_min_refresh`` seconds, one fetch at a time for all the requests that wait."""

    def __init__(self, config: IssuerConfig, auth: AuthConfig) -> None:
        self.config = config
        self._auth = auth
        self._keys: dict[str, Any] | None = None  # kid -> joserfc key; None until first needed
        self._fetched_at = float("-inf")
        self._fetching: asyncio.Future[None] | None = None

    async def verify(self, token: str) -> Caller:
        """The caller the token speaks for; Unauthorized for anything not signed by a key of
        this provider with one of its algorithms, or with the wrong audience or times."""
        header = token_part(token, 0)
        algorithm, kid = header.get("alg"), header.get("kid", NO_KID)
        if algorithm not in self.config.algorithms or not isinstance(kid, str):
            raise Unauthorized()  # HS256 (key confusion), "none" and the rest never get a key
        key = await self._key(kid)
        if key.key_type not in KEY_TYPES[algorithm] or (
            algorithm in CURVES and key.as_dict().get("crv") not in CURVES[algorithm]
        ):
            raise Unauthorized()
        from joserfc import jwt
        from joserfc.errors import JoseError

        try:
            decoded = jwt.decode(token, key, algorithms=[algorithm])
            claims = decoded.claims
            if not isinstance(claims, dict) or decoded.header.get("alg") != algorithm:
                raise Unauthorized()
            self._rules().validate(claims)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise Unauthorized() from exc
        names = self.config.claims
        return Caller(
            client_id=self.config.issuer,  # revoking this "client" refuses the provider's tokens
            email=claim_str(claims, names.email),
            group_name=claim_str(claims, names.group),
            fingerprint=claim_str(claims, "fingerprint"),
            token_id=claim_str(claims, "jti") or "",
            issued_at=claim_number(claims, "iat"),
            subject=claim_str(claims, names.subject) or "",
        )

    def _rules(self) -> Any:
        from joserfc.jwt import JWTClaimsRegistry

        return JWTClaimsRegistry(
            leeway=self._auth.leeway,
            iss={"essential": True, "value": self.config.issuer},
            aud={"essential": True, "value": self.config.audience},
            exp={"essential": True},
        )

    async def _key(self, kid: str) -> Any:
        if self._keys is None and self.config.jwks is not None:
            self._keys = import_keys(json.loads(self.config.jwks), self.config.issuer)
        key = (self._keys or {}).get(kid)
        if key is None and self.config.jwks_url is not None:
            await self._refetch()
            key = (self._keys or {}).get(kid)
        if key is None:
            raise Unauthorized()
        return key

    async def _refetch(self) -> None:
        """Join the fetch under way, or start one unless the last began too recently."""
        if self._fetching is None:
            now = time.monotonic()
            if now - self._fetched_at < self._auth.jwks_min_refresh:
                return
            self._fetched_at = now
            self._fetching = asyncio.ensure_future(self._fetch())
        # Shielded: a request that gives up does not cancel the fetch the others wait for.
        await asyncio.shield(self._fetching)

    async def _fetch(self) -> None:
        url = self.config.jwks_url
        try:
            import httpx

            timeout = self._auth.jwks_timeout
            async with httpx.AsyncClient(timeout=timeout) as client:
                response = await asyncio.wait_for(client.get(url), timeout)  # type: ignore[arg-type]
                response.raise_for_status()
                self._keys = import_keys(response.json(), self.config.issuer)
        except Exception as exc:  # any failure leaves the old keys; the token at hand is 403
            reason = str(exc) or type(exc).__name__  # a timeout says nothing by itself
            logger.warning(
                "keys of issuer %r not fetched from %s, its new tokens are refused: %s",
                self.config.issuer,
                url,
                reason,
            )
        finally:
            self._fetching = None


def import_keys(jwks: object, issuer: str) -> dict[str, Any]:
    """A JWKS's public keys by kid; a key joserfc cannot read is skipped with a warning."""
    from joserfc.jwk import JWKRegistry

    entries = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(entries, list):
        raise ValueError("the JWKS holds no list of keys")
    keys: dict[str, Any] = {}
    for entry in entries:
        try:
            key = JWKRegistry.import_key(entry)
        except Exception as exc:  # one odd key must not hide the others
            logger.warning("issuer %r publishes a key that cannot be used: %s", issuer, exc)
            continue
        if key.is_private:
            continue  # a published private key is a provider's mistake, never used here
        keys[entry.get("kid", NO_KID) if isinstance(entry.get("kid"), str) else NO_KID] = key
    return keys
