"""``run-pipeline``: serve, validate, inspect and call voice bots from the command line.

A user's mistake (an invalid bot file, a provider that cannot start, a busy port) ends with a
clear message and exit code 1, never a traceback; ``-v`` adds debug logs and tracebacks.
Only argparse and logging are imported up front; the rest comes with the command that needs it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voxpipe.bots.bot import Bot
    from voxpipe.bots.registry import Registry
    from voxpipe.records.settings import CallRecordsSettings

log = logging.getLogger("voxpipe.cli")


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit code 1."""


# --- commands --------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """Load the bot, then serve calls on its transport until interrupted."""
    from voxpipe.pipelines.settings import ProviderError

    bot = _load_or_report(args.bot, args.verbose, args.log_format)
    if bot is None:
        return 1
    if args.workers > 1:
        from voxpipe.bots.workers import supervise, worker_argv

        return supervise(args.workers, worker_argv(args), bot.config.session_store.redis)
    from voxpipe.bots.serve import run_loop, serve

    try:
        result = run_loop(serve(bot, host=args.host, port=args.port))
    except ProviderError as exc:
        raise UserError(f"{args.bot}: a provider cannot start: {exc}") from exc
    except OSError as exc:
        raise UserError(f"cannot serve {args.bot}: {exc}") from exc
    return result


def cmd_call(args: argparse.Namespace) -> int:
    """Place a simulated call to a bot over AudioSocket (see ``caller.run_call_command``)."""
    from voxpipe.bots.call import run_call_command

    if not args.turns and not args.dtmf:
        print(
            "run-pipeline call: error: give the caller's words: --say TEXT or --wav FILE "
            "(or keys: --dtmf)",
            file=sys.stderr,
        )
        return 2

    return run_call_command(args)


def cmd_test(args: argparse.Namespace) -> int:
    """Run conversation tests (see ``voxpipe.scenarios.cli``)."""
    from voxpipe.scenarios.cli import run_test_command

    wrong = None
    if args.api and not args.connect:
        wrong = "--api goes with --connect (served in-process, the outcome is known)"
    elif args.api and not str(args.api).startswith(("http://", "https://")):
        wrong = f"--api takes the API's URL, http://HOST:PORT (got {args.api!r})"
    if wrong is not None:
        print(f"run-pipeline test: error: {wrong}", file=sys.stderr)
        return 2
    if args.junit:  # a place it cannot write to fails now, not after the calls
        try:
            Path(args.junit).open("a").close()
        except OSError as exc:
            raise UserError(f"cannot write {args.junit}: {exc.strerror}") from exc
    return run_test_command(args)


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate every file; print each problem as ``file:line:col: path: message``."""
    from voxpipe.bots.config import ConfigError, dump_settings, load_bot

    failed = 0
    for file in args.bots:
        try:
            loaded = load_bot(file)
        except ConfigError as exc:
            failed += 1
            for problem in exc.problems:
                print(problem)
            continue
        count = len(loaded.steps)
        print(f"{file}: valid ({loaded.config.name!r}, {count} step{'s' if count != 1 else ''})")
        for step in loaded.steps:
            log.debug(
                "%s: pipeline[%d] %s %s",
                file,
                step.index,
                step.type_name,
                dump_settings(step.settings),
            )
    if failed and len(args.bots) > 1:
        print(f"{failed} of {len(args.bots)} files are invalid")
    return 1 if failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    """Print every processor type with its settings, types, defaults and documentation."""
    from voxpipe.bots.docs import default_label, fields_of, one_line, provider_name, type_label

    registry = _registry(args)
    for ptype in registry:
        print(f"{ptype.name} ({ptype.origin}): {ptype.doc}")
        models = ptype.models
        for model in models:
            indent = "    "
            if len(models) > 1:
                print(f"  provider: {provider_name(model)}: {one_line(model.__doc__)}")
                indent = "      "
            for name, field in fields_of(model):
                print(
                    f"{indent}{name}: {type_label(field.annotation)} = {default_label(field)}"
                    f"  # {one_line(field.description)}"
                )
        print()
    for problem in registry.problems:
        print(f"problem: {problem}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """Print (or write) the JSON Schema of the bot format (or, with ``--scenarios``, of
    scenario files)."""
    if args.scenarios:
        from voxpipe.scenarios.model import scenario_schema_text

        text = scenario_schema_text()
    else:
        from voxpipe.bots.schema import schema_text

        text = schema_text(_registry(args))
    if args.output:
        _write(Path(args.output), text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    """Refresh the YAML reference in docs/reference.md (or FILE) or print it."""
    from voxpipe.bots.docs import REFERENCE_PAGE, reference, update_readme

    registry = _registry(args)
    if args.print:
        sys.stdout.write(reference(registry))
        return 0
    path = Path(args.file or REFERENCE_PAGE)
    if not args.file and not path.is_file():
        raise UserError(
            f"{path} not found: run this from the repository's root, name the page with "
            "--file FILE, or print the reference with --print"
        )
    try:
        changed = update_readme(path, registry)
    except OSError as exc:
        raise UserError(f"cannot update {path}: {exc.strerror}") from exc
    print(f"{path}: {'updated' if changed else 'already up to date'}")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    """Print the bot's chain as a Mermaid flowchart."""
    from voxpipe.bots.docs import mermaid

    bot = _load_or_report(args.bot, args.verbose)
    if bot is None:
        return 1
    sys.stdout.write(mermaid(bot))
    return 0


# --- helpers ---------------------------------------------------------------------------------


def _load_or_report(file: str, verbose: bool, log_format: str | None = None) -> Bot | None:
    """Load a bot, or print every problem with it and return ``None``."""
    from voxpipe.bots.bot import Bot
    from voxpipe.bots.config import ConfigError
    from voxpipe.logs import secret_values, setup_logging

    try:
        bot = Bot.load(file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(
            f"{file}: {count} problem{'s' if count != 1 else ''}; nothing started", file=sys.stderr
        )
        return None
    secrets = secret_values(bot.config, *(step.settings for step in bot.steps))
    level = "DEBUG" if verbose else bot.config.logging.level
    setup_logging(level, log_format or bot.config.logging.format, secrets)
    return bot


def _registry(args: argparse.Namespace) -> Registry:
    from voxpipe.bots.registry import Registry, default_registry

    return Registry.default(plugins=False) if args.builtin_only else default_registry()


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from exc


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return value


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) < 65536:
        raise argparse.ArgumentTypeError(f"expected a TCP port (0-65535), got {value!r}")
    return int(value)


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value!r}")
    return int(value)


def _dtmf(value: str) -> str:
    bad = sorted(set(value.upper()) - set("0123456789*#ABCD"))
    if not value or bad:
        raise argparse.ArgumentTypeError(f"DTMF digits are 0-9 * # A-D, got {value!r}")
    return value.upper()


class _Turn(argparse.Action):
    """``--say``/``--wav``: one caller turn each, kept in order in ``turns`` as (kind, value)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        namespace.turns = [*getattr(namespace, "turns", []), (self.dest, str(values))]


# --- the parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``run-pipeline`` argument parser with all its subcommands."""
    verbose = {"action": "store_true", "help": "debug logs and tracebacks"}
    parser = argparse.ArgumentParser(
        prog="run-pipeline", description="Telephone voice bots on Asterisk, declared in YAML."
    )
    parser.add_argument("-v", "--verbose", **verbose)  # type: ignore[arg-type]
    # Accepted after the command too; SUPPRESS keeps a -v given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", default=argparse.SUPPRESS, **verbose)  # type: ignore[arg-type]
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, parents=[common])
        p.set_defaults(handler=handler)
        return p

    p = command("serve", cmd_serve, "Serve calls with a bot on its transport.")
    p.add_argument("bot", metavar="BOT.yaml", help="the bot file")
    p.add_argument("--host", help="address to listen on (default: the bot's transport.listen)")
    p.add_argument("--port", type=_port, help="TCP port (default: the bot's transport.listen)")
    p.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="run N processes sharing the port (SO_REUSEPORT); worker i's HTTP API on port+i",
    )
    p.add_argument(
        "--log-format", choices=("text", "json"), help="log lines (default: the bot's logging:)"
    )

    p = command("call", cmd_call, "Call a bot with a simulated caller over AudioSocket.")
    p.add_argument("bot", metavar="BOT.yaml", help="the bot file (served in-process)")
    p.add_argument(
        "--say",
        action=_Turn,
        metavar="TEXT",
        help="what the caller says (synthesised); give several for several turns",
    )
    p.add_argument(
        "--wav",
        action=_Turn,
        metavar="FILE",
        help="what the caller says (a WAV file); --say and --wav turns play in the order given, "
        "each after the bot answered the one before",
    )
    p.set_defaults(turns=[])
    p.add_argument(
        "--rate",
        type=int,
        choices=(8000, 16000),
        default=8000,
        help="caller audio rate in Hz (default: 8000)",
    )
    p.add_argument("--dtmf", type=_dtmf, metavar="DIGITS", help="keys the caller presses")
    p.add_argument("--record", metavar="OUT.wav", help="record what the caller hears")
    p.add_argument(
        "--connect",
        type=_host_port,
        metavar="HOST:PORT",
        help="call a bot already served there instead of serving BOT.yaml",
    )
    p.add_argument("--json", action="store_true", help="print the call's report as JSON")

    p = command("test", cmd_test, "Run conversation tests (scenario files) against a bot.")
    p.add_argument("bot", metavar="BOT.yaml", help="the bot file (served in-process)")
    p.add_argument(
        "scenarios",
        metavar="SCENARIOS.yaml",
        nargs="*",
        help="scenario files (default: BOT.test.yaml beside the bot)",
    )
    p.add_argument(
        "--connect",
        type=_host_port,
        metavar="HOST:PORT",
        help="call a bot already served there instead of serving BOT.yaml",
    )
    p.add_argument(
        "--concurrency", type=_positive, default=1, metavar="N", help="N calls at a time"
    )
    p.add_argument(
        "--api",
        metavar="URL",
        help="with --connect: the running bot's HTTP API (http://HOST:PORT), asked how each "
        "call ended, so that `outcome: transfer,...` can be checked",
    )
    p.add_argument(
        "--token",
        metavar="TOKEN",
        help="the API's bearer token (http.token; default: $VOXPIPE_API_TOKEN)",
    )
    p.add_argument("--junit", metavar="OUT.xml", help="write a JUnit XML report")
    p.add_argument("--json", action="store_true", help="print the results as JSON")

    p = command("validate", cmd_validate, "Check bot files; print every problem.")
    p.add_argument("bots", metavar="BOT.yaml", nargs="+", help="bot files")

    p = command("list", cmd_list, "List processor types, their settings and defaults.")
    p.add_argument("--builtin-only", action="store_true", help="leave installed plugins out")

    p = command("schema", cmd_schema, "Print the JSON Schema of the bot format.")
    p.add_argument("-o", "--output", metavar="FILE", help="write it to FILE")
    p.add_argument("--builtin-only", action="store_true", help="leave installed plugins out")
    p.add_argument(
        "--scenarios",
        action="store_true",
        help="the schema of scenario files (run-pipeline test) instead",
    )

    p = command(
        "docs", cmd_docs, "Refresh the YAML reference (docs/reference.md) from the settings models."
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--file",
        "--readme",
        metavar="FILE",
        help="refresh the reference between the markers in FILE instead of docs/reference.md",
    )
    where.add_argument("--print", action="store_true", help="print the reference instead")
    p.add_argument("--builtin-only", action="store_true", help="leave installed plugins out")

    p = command("graph", cmd_graph, "Print a bot's chain as a Mermaid flowchart.")
    p.add_argument("bot", metavar="BOT.yaml", help="the bot file")

    from voxpipe.records.cli import add_commands

    add_commands(command, _call_records)
    return parser


def _call_records(path: str) -> CallRecordsSettings | None:
    """The ``call_records:`` of the bot file at ``path`` (``ConfigError`` when it is invalid)."""
    from voxpipe.bots.config import load_bot

    return load_bot(path).config.call_records


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``run-pipeline``; returns the exit code."""
    from voxpipe.records.cli import RecordsError

    args = build_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.handler(args)
    except UserError as exc:
        print(f"run-pipeline: error: {exc}", file=sys.stderr)
        return 1
    except RecordsError as exc:
        print(f"run-pipeline: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``run-pipeline list | head``): stop quietly, as other
        # tools do; stdout is pointed at /dev/null so the exit flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        from voxpipe.bots.config import ConfigError

        if isinstance(exc, ConfigError):  # a command that loads a bot itself (``call``)
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return 1
        if args.verbose:
            raise
        print(
            f"run-pipeline: internal error: {exc!r} (run with -v for the traceback)",
            file=sys.stderr,
        )
        return 70
    return code


if __name__ == "__main__":
    sys.exit(main())
