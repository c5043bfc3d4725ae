"""Tokens bound to a device (``auth.bind_fingerprint``): the request's ``X-Device-Fingerprint``
must equal the token's ``fingerprint`` claim, so a token copied elsewhere is refused."""

from __future__ import annotations

import hmac

FINGERPRINT_HEADER = "x-device-fingerprint"


def fingerprint_matches(claimed: str | None, presented: str | None) -> bool:
    """Both present and equal, compared in constant time (the claim is the secret here)."""
    if not claimed or presented is None:
        return False
    return hmac.compare_digest(claimed.encode(), presented.encode())
