"""``docproxy revoke``: take back a token, a client's tokens or a document, list what is
revoked, or remove a revocation. Every replica sharing the state sees it within a second."""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

from proxy.cli.check_config import settings_from
from proxy.state.errors import StateFailed
from proxy.state.registry import state_store
from proxy.state.revocation import Kind, Revocation
from proxy.state.store import StateStore

# The flag that names each kind of revocation, and where its value is in the arguments.
TARGETS: dict[str, Kind] = {
    "--token-id": Kind.TOKEN,
    "--client": Kind.CLIENT,
    "--document": Kind.DOCUMENT,
}


class RevokeError(Exception):
    """A revocation that cannot be made, read or removed; the message says why."""


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    revoke = commands.add_parser(
        "revoke",
        parents=[common],
        help="revoke a token, a client's tokens or a document; list or remove revocations",
    )
    what = revoke.add_mutually_exclusive_group(required=True)
    what.add_argument("--token-id", metavar="JTI", help="one token, by its jti claim")
    what.add_argument("--client", metavar="ID", help="every token issued to the client so far")
    what.add_argument("--document", metavar="ID", help="every download and link of a document")
    what.add_argument("--list", action="store_true", help="print the revocations in force")
    revoke.add_argument(
        "--until", metavar="TIME", help="ISO 8601 time when the revocation lapses (default: never)"
    )
    revoke.add_argument(
        "--remove", action="store_true", help="remove the revocation named instead of adding it"
    )
    revoke.set_defaults(handler=revoke_command)


def parse_time(text: str) -> float:
    """ISO 8601 to Unix time; a time without an offset is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise RevokeError(f"--until: not an ISO 8601 time: {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def revoke_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    store = state_store(settings)
    try:
        return asyncio.run(_run(args, store))
    except StateFailed as exc:
        raise RevokeError(str(exc)) from exc


async def _run(args: argparse.Namespace, store: StateStore) -> int:
    await store.open()
    try:
        if args.list:
            if args.remove or args.until:
                raise RevokeError("--list takes neither --remove nor --until")
            for r in sorted(await store.revocations(), key=lambda r: r.revoked_at):
                until = f"  until {iso(r.until)}" if r.until is not None else ""
                print(f"{r.kind.value}\t{r.value}\trevoked {iso(r.revoked_at)}{until}")
            return 0
        flag, kind = next((f, k) for f, k in TARGETS.items() if getattr(args, _dest(f)))
        value = getattr(args, _dest(flag))
        if args.remove:
            if args.until:
                raise RevokeError("--remove takes no --until")
            if not await store.unrevoke(kind, value):
                raise RevokeError(f"no revocation of {kind.value} {value!r}")
            print(f"removed the revocation of {kind.value} {value!r}")
            return 0
        now = time.time()
        until = parse_time(args.until) if args.until else None
        if until is not None and until <= now:
            raise RevokeError(f"--until: {args.until} has already passed")
        await store.revoke(Revocation(kind, value, now, until))
        lapse = f" until {iso(until)}" if until is not None else ""
        print(f"revoked {kind.value} {value!r}{lapse}")
        return 0
    finally:
        await store.close()


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")
