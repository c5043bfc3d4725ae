"""The one refusal of the auth package: the caller is not who it claims to be."""

from __future__ import annotations


class Unauthorized(Exception):
    """A token, a client's credentials or a signed link that does not check out."""
