"""``run-pipeline db ...`` and ``run-pipeline calls ...``: the records' database from a shell.

The database is the bot file's ``call_records.url`` (``BOT.yaml``) or ``--url``. A database that
cannot be reached, or a bot without ``call_records``, is one clear line and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from voxpipe.records.settings import CallRecordsSettings

T = TypeVar("T")

# Reads a bot file's ``call_records:`` (the application's bot loader, given by ``run-pipeline``).
RecordsLoader = Callable[[str], "CallRecordsSettings | None"]


class RecordsError(Exception):
    """A problem the user can fix (printed as one line by ``run-pipeline``)."""


def database_url(args: argparse.Namespace) -> str:
    """The URL from ``--url`` or from the bot file's ``call_records``."""
    if args.url:
        from voxpipe.records.settings import CallRecordsSettings

        try:
            CallRecordsSettings.model_validate({"url": args.url})
        except ValueError as exc:
            problem = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
            raise RecordsError(f"--url: {problem.removeprefix('Value error, ')}") from None
        return str(args.url)
    if not args.bot:
        raise RecordsError("give the bot file (BOT.yaml) or --url URL of the database")
    records: CallRecordsSettings | None = args.load_records(args.bot)
    if records is None:
        raise RecordsError(f"{args.bot} has no call_records: block")
    return records.url.get_secret_value()


def _run(url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    import asyncio

    from voxpipe.records.service import make_engine

    async def main() -> T:
        engine = make_engine(url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except (OSError, TimeoutError) as exc:
        raise RecordsError(f"the database does not answer: {exc}") from None
    except Exception as exc:
        if type(exc).__module__.startswith(("sqlalchemy", "asyncpg", "sqlite3")):
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "no such table" in first or "does not exist" in first:
                first += "; create the tables with `run-pipeline db upgrade`"
            raise RecordsError(f"database error: {first}") from None
        raise


def create_ahead_now(conn: Any) -> None:
    """PostgreSQL: the partitions of this month and the next two (nothing on SQLite)."""
    from datetime import UTC, datetime

    from voxpipe.records.partitions import create_ahead

    if conn.dialect.name == "postgresql":
        create_ahead(conn, datetime.now(UTC).date(), 2)


def cmd_db(args: argparse.Namespace) -> int:
    """``db upgrade`` / ``db downgrade`` / ``db current``."""
    from voxpipe.records import migrate

    url = database_url(args)

    async def work(engine: Any) -> str:
        if args.action == "upgrade":
            before = await migrate.current(engine)
            await migrate.upgrade(engine)
            async with engine.begin() as conn:  # this month's partitions and the next two
                await conn.run_sync(create_ahead_now)
            after = await migrate.current(engine)
            if before == after:
                return f"call records database already at {after}"
            return f"call records database upgraded from {before or 'nothing'} to {after}"
        if args.action == "downgrade":
            await migrate.downgrade(engine, args.to)
            return f"call records database now at {await migrate.current(engine) or 'nothing'}"
        found = await migrate.current(engine)
        wanted = migrate.head()
        state = "up to date" if found == wanted else f"needs {wanted}: run db upgrade"
        return f"call records database at {found or 'nothing'} ({state})"

    print(_run(url, work))
    return 0


def cmd_calls(args: argparse.Namespace) -> int:
    """``calls list`` / ``calls show UUID``."""
    from voxpipe.records import queries

    url = database_url(args)
    if args.action == "list":
        try:
            since = queries.parse_since(args.since) if args.since else None
        except ValueError as exc:
            raise RecordsError(f"--since: {exc}") from None
        calls = _run(
            url,
            lambda engine: queries.list_calls(
                engine, since=since, caller=args.caller, outcome=args.outcome, limit=args.limit
            ),
        )
        if args.json:
            print(json.dumps(calls, indent=2, ensure_ascii=False))
        else:
            print_calls(calls)
        return 0
    found = _run(url, lambda engine: queries.get_call(engine, args.uuid))
    if found is None:
        raise RecordsError(f"no call {args.uuid} in the records")
    if args.json:
        print(json.dumps(found, indent=2, ensure_ascii=False))
    else:
        print_call(found)
    return 0


def print_calls(calls: list[dict[str, Any]]) -> None:
    """One line per call, newest first."""
    if not calls:
        print("no calls")
        return
    print(f"{'started (UTC)':<20} {'uuid':<36} {'caller':<16} {'secs':>6}  outcome")
    for call in calls:
        started = (call["started_at"] or "")[:19].replace("T", " ")
        duration = f"{call['duration_s']:.1f}" if call.get("duration_s") is not None else "-"
        outcome = call.get("outcome") or "(in progress)"
        if call.get("transfer_target"):
            outcome += f" {call['transfer_target']}"
        caller = call.get("caller_number") or "-"
        print(f"{started:<20} {call['uuid']:<36} {caller:<16} {duration:>6}  {outcome}")


def print_call(call: dict[str, Any]) -> None:
    """A call's record, then its transcript with timings and tool calls."""
    from datetime import datetime

    print(f"call {call['uuid']} ({call['bot']}, via {call['way_in']})")
    caller = " ".join(x for x in (call.get("caller_number"), call.get("caller_name")) if x)
    print(f"  caller:    {caller or 'unknown'}")
    print(f"  started:   {call['started_at']}")
    if call.get("ended_at"):
        print(f"  ended:     {call['ended_at']} ({call['duration_s']:.1f} s)")
    outcome = call.get("outcome") or "(in progress)"
    if call.get("transfer_target"):
        outcome += f" to {call['transfer_target']}"
    print(f"  outcome:   {outcome}")
    for label in ("error", "trace_id", "recording"):
        if call.get(label):
            print(f"  {label + ':':<10} {call[label]}")
    start = datetime.fromisoformat(call["started_at"])
    events: list[tuple[float, int, str]] = []
    for turn in call["turns"]:
        at = (datetime.fromisoformat(turn["started_at"]) - start).total_seconds()
        line = f"{turn['speaker']:<7} {turn['text']}"
        if turn.get("heard_text") is not None:
            line += f"\n{'':19}(heard: {turn['heard_text'] or 'nothing'})"
        if turn.get("latency_ms") is not None:
            line += f"  [{turn['latency_ms']:.0f} ms]"
        events.append((at, 0, line))
    for tool in call["tool_calls"]:
        at = (datetime.fromisoformat(tool["created_at"]) - start).total_seconds()
        arguments = json.dumps(tool["arguments"], ensure_ascii=False)
        result = tool["result"] if len(tool["result"]) <= 120 else tool["result"][:117] + "..."
        line = f"tool    {tool['tool']}({arguments}) -> {result}  [{tool['duration_ms']:.0f} ms]"
        events.append((at, 1, line))
    print("transcript:")
    for at, _, line in sorted(events, key=lambda e: (e[0], e[1])):
        print(f"  {at:8.2f} s  {line}")
    if not events:
        print("  (nothing said)")
    sys.stdout.flush()


def add_commands(
    command: Callable[..., argparse.ArgumentParser], load_records: RecordsLoader
) -> None:
    """Add ``db`` and ``calls`` to ``run-pipeline`` (``command(name, handler, help)``);
    ``load_records`` reads a bot file's ``call_records:`` (raising its own error)."""

    def source(p: argparse.ArgumentParser) -> None:
        p.add_argument("bot", metavar="BOT.yaml", nargs="?", help="the bot file (its call_records)")
        p.add_argument("--url", help="the database URL instead of a bot file")
        p.set_defaults(load_records=load_records)

    p = command("db", cmd_db, "Create or update the call records' tables.")
    p.add_argument("action", choices=("upgrade", "downgrade", "current"))
    source(p)
    p.add_argument(
        "--to", default="base", metavar="REV", help="downgrade: to this revision (default: base)"
    )

    p = command("calls", cmd_calls, "List recorded calls, or show one with its transcript.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="recorded calls, newest first")
    source(listing)
    listing.add_argument("--since", help="an ISO date or time (UTC), or an age: 30m, 12h, 7d")
    listing.add_argument("--caller", help="only calls from this number")
    listing.add_argument("--outcome", help="only calls with this outcome (hangup, transfer...)")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    show = actions.add_parser("show", help="one call: record, transcript with timings, tools")
    show.add_argument("uuid", metavar="UUID", help="the call's UUID")
    source(show)
    show.add_argument("--json", action="store_true", help="print JSON")
