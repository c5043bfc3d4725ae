"""Revocations: what an operator took back (a token, a client's tokens, a document), and the
snapshot of them every request is checked against without a round trip."""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass


class Kind(enum.Enum):
    TOKEN = "token"  # one token, by its jti
    CLIENT = "client"  # every token of a client id issued before the revocation
    DOCUMENT = "document"  # every link to and download of a document id


@dataclass(frozen=True, slots=True)
class Revocation:
    kind: Kind
    value: str
    revoked_at: float  # Unix time of the revocation
    until: float | None = None  # it lapses then; None: until removed

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until


class RevocationSet:
    """An immutable snapshot, indexed by kind. With nothing revoked, a check is two falsy
    tests, so the hot path pays nothing for the feature it does not use."""

    __slots__ = ("_by_kind", "empty")

    def __init__(self, revocations: Iterable[Revocation] = ()) -> None:
        self._by_kind: dict[Kind, dict[str, Revocation]] = {kind: {} for kind in Kind}
        for revocation in revocations:
            self._by_kind[revocation.kind][revocation.value] = revocation
        self.empty = not any(self._by_kind.values())

    def _active(self, kind: Kind, value: str, now: float | None) -> Revocation | None:
        revocation = self._by_kind[kind].get(value)
        if revocation is None:
            return None
        return revocation if revocation.active(now if now is not None else time.time()) else None

    def refuses_token(
        self, client_id: str, token_id: str, issued_at: float, *, now: float | None = None
    ) -> bool:
        """A revoked jti, or a token of a revoked client issued before (or in the second of)
        its revocation: ``iat`` has whole seconds, so a token of that second cannot be placed."""
        if self.empty:
            return False
        if self._active(Kind.TOKEN, token_id, now) is not None:
            return True
        client = self._active(Kind.CLIENT, client_id, now)
        return client is not None and issued_at < client.revoked_at

    def refuses_document(self, document_id: str, *, now: float | None = None) -> bool:
        return not self.empty and self._active(Kind.DOCUMENT, document_id, now) is not None
