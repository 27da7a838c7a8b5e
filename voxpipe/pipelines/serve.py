"""``run-pipeline serve``: take calls for one bot until SIGTERM or SIGINT, then drain.

A short orchestrator: prepare the bot once, start the AudioSocket server, wait for a signal,
stop accepting calls and give running ones ``transport.audiosocket.drain_s`` to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

from voxpipe.pipelines.bot import Bot
from voxpipe.transports.audiosocket.server import AudioSocketServer


def _banner(bot: Bot, server: AudioSocketServer) -> str:
    settings = server.settings
    connect_host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
    bot_file = bot.loaded.path if bot.loaded.path != "<string>" else "BOT.yaml"
    return "\n".join(
        [
            f"voxpipe: bot {bot.name!r} listening for AudioSocket on "
            f"{server.host}:{server.port} (pipeline {settings.sample_rate} Hz, "
            f"up to {settings.max_calls} calls)",
            f"  Asterisk dialplan: AudioSocket(${{UUID}},{connect_host}:{server.port})",
            f"  test call:         run-pipeline call {bot_file} "
            f"--connect {connect_host}:{server.port} --say 'hello'",
            "  stop:              Ctrl-C or SIGTERM (running calls get "
            f"{settings.drain_s:g} s to finish)",
        ]
    )


async def serve(
    bot: Bot,
    *,
    host: str | None = None,
    port: int | None = None,
    ready: Callable[[AudioSocketServer], None] | None = None,
) -> int:
    """Serve ``bot`` until SIGTERM/SIGINT; ``host``/``port`` override the bot's ``listen``."""
    await bot.prepare()
    settings = bot.config.transport.audiosocket
    if host is not None or port is not None:
        listen = f"{host if host is not None else settings.host}:"
        listen += str(port if port is not None else settings.port)
        settings = settings.model_copy(update={"listen": listen})
    server = AudioSocketServer(bot, settings)
    await server.start()
    print(_banner(bot, server), flush=True)
    if ready is not None:
        ready(server)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stopping.set)
            handled.append(signum)
    try:
        await stopping.wait()
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        print(
            f"voxpipe: draining {len(server.calls)} call(s), up to {settings.drain_s:g} s",
            flush=True,
        )
        await server.stop(settings.drain_s)
        print("voxpipe: stopped", flush=True)
    return 0
