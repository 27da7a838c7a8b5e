"""``run-pipeline serve``: take calls for one bot until SIGTERM or SIGINT, then drain.

A short orchestrator: prepare the bot once, start the AudioSocket server, wait for a signal,
stop accepting calls and give running ones ``transport.audiosocket.drain_s`` to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from voxpipe.bots.bot import Bot
from voxpipe.transports.audiosocket.server import AudioSocketServer

if TYPE_CHECKING:
    from voxpipe.ari import AriController
    from voxpipe.http import OperationsApi
    from voxpipe.transports.asterisk_websocket.server import AsteriskWebSocketServer

T = TypeVar("T")


def _banner(bot: Bot, server: AudioSocketServer) -> str:
    settings = server.settings
    connect_host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
    bot_file = bot.loaded.path if bot.loaded.path != "<string>" else "BOT.yaml"
    listening, connect = _address(server.host, server.port), _address(connect_host, server.port)
    return "\n".join(
        [
            f"voxpipe: bot {bot.name!r} listening for AudioSocket on "
            f"{listening} (pipeline {settings.sample_rate} Hz, "
            f"up to {server.max_calls} calls)",
            f"  Asterisk dialplan: AudioSocket(${{UUID()}},{connect})",
            f"  test call:         run-pipeline call {bot_file} --connect {connect} --say 'hello'",
            "  stop:              Ctrl-C or SIGTERM (running calls get "
            f"{settings.drain_s:g} s to finish)",
        ]
    )


def _local_models(bot: Bot) -> list[str]:
    """The steps whose models run in the model workers (``stt whisper``, ``tts piper``)."""
    from voxpipe.processors.stt.base import LocalSTTSettings
    from voxpipe.processors.tts.base import LocalTTSSettings

    return [
        f"{step.type_name} {getattr(step.settings, 'provider', '')}".strip()
        for step in bot.steps
        if isinstance(step.settings, LocalSTTSettings | LocalTTSSettings)
    ]


def _address(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets (``[::1]:9092``), as Asterisk's dialplan needs."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _start_api(bot: Bot) -> OperationsApi | None:
    """The health/metrics API when the bot has an ``http:`` block (answers 503 while draining)."""
    if bot.config.http is None:
        return None
    from voxpipe.http import OperationsApi

    api = OperationsApi.for_bot(bot)
    assert api is not None
    await api.start()
    host = api.server.listen.rpartition(":")[0]
    print(f"voxpipe: HTTP API on http://{host}:{api.port}", flush=True)
    if api.call_api is not None:
        path = api.call_api.settings.path
        print(f"voxpipe: call API on ws://{host}:{api.port}{path}", flush=True)
        if bot.config.http is not None and bot.config.http.web:
            print(f"voxpipe: talk to the bot at http://{host}:{api.port}/", flush=True)
    return api


async def _start_asterisk_websocket(bot: Bot) -> AsteriskWebSocketServer | None:
    """The chan_websocket server when the bot has ``transport.asterisk_websocket``."""
    settings = bot.config.transport.asterisk_websocket
    if settings is None:
        return None
    from voxpipe.transports.asterisk_websocket.server import AsteriskWebSocketServer

    server = AsteriskWebSocketServer(bot, settings)
    await server.start()
    print(
        f"voxpipe: chan_websocket on ws://{_address(server.host, server.port)} "
        f"(websocket_client.conf uri; Dial(WebSocket/<connection>/c(slin16)))",
        flush=True,
    )
    return server


async def _start_ari(
    bot: Bot, server: AudioSocketServer, chan_ws: AsteriskWebSocketServer | None = None
) -> AriController | None:
    """The ARI controller when the bot has an ``ari:`` block: Stasis callers reach this server."""
    if bot.config.ari is None:
        return None
    from voxpipe.ari import AriController

    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
    listening = server.listening
    controller = AriController(
        bot.config.ari, f"{host}:{server.port}" if listening else "", chan_ws
    )
    server.on_call_start.append(controller.attach)
    if chan_ws is not None:
        chan_ws.on_call_start.append(controller.attach)
    await controller.start()
    return controller


async def serve(
    bot: Bot,
    *,
    host: str | None = None,
    port: int | None = None,
    ready: Callable[[AudioSocketServer], None] | None = None,
) -> int:
    """Serve ``bot`` until SIGTERM/SIGINT; ``host``/``port`` override the bot's ``listen``."""
    started = time.monotonic()
    steps = f"{len(bot.steps)} step{'' if len(bot.steps) == 1 else 's'}"
    print(f"voxpipe: preparing bot {bot.name!r} ({steps})...", flush=True)
    local = _local_models(bot)
    if local:
        from voxpipe.models.shared import worker_count

        workers = worker_count(bot.config.models)
        print(
            f"voxpipe: loading models ({', '.join(local)}) in {workers} worker "
            f"process{'' if workers == 1 else 'es'}...",
            flush=True,
        )
    await bot.prepare()
    print(f"voxpipe: ready in {time.monotonic() - started:.1f} s", flush=True)
    settings = bot.config.transport.audiosocket
    if host is not None or port is not None:
        listen = f"{host if host is not None else settings.host}:"
        listen += str(port if port is not None else settings.port)
        settings = settings.model_copy(update={"listen": listen})
    server = AudioSocketServer(bot, settings)
    # transport: picks the listeners; AudioSocket unless the bot file names only others.
    audiosocket = "audiosocket" in bot.config.transport.served()
    if audiosocket:
        if settings.max_calls == "auto":
            print("voxpipe: measuring the models for max_calls: auto...", flush=True)
        await server.start()
    if server.capacity is not None:
        print(f"voxpipe: capacity: {server.capacity.describe()}", flush=True)
    chan_ws = None
    try:
        chan_ws = await _start_asterisk_websocket(bot)
        api = await _start_api(bot)
    except BaseException:
        await server.stop(0.0)
        if chan_ws is not None:
            await chan_ws.stop(0.0)
        raise
    if api is not None and audiosocket:
        api.state.capacity = server.load
    ari = await _start_ari(bot, server, chan_ws)
    # SIGTERM is ours before the banner says the bot is up: a supervisor that stops it as soon
    # as it reads the banner gets a drain, not the default action (killed, exit code -15).
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stopping.set)
            handled.append(signum)
    if audiosocket:
        print(_banner(bot, server), flush=True)
    else:
        print(f"voxpipe: bot {bot.name!r} serving (no AudioSocket: transport names other ways in)")
    if ready is not None:
        ready(server)

    try:
        await stopping.wait()
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        print(
            f"voxpipe: draining {len(server.calls)} call(s), up to {settings.drain_s:g} s",
            flush=True,
        )
        if api is not None:
            api.state.draining = True
        drains = [server.stop(settings.drain_s)]
        if chan_ws is not None:
            drains.append(chan_ws.stop(chan_ws.settings.drain_s))
        if api is not None and api.call_api is not None:
            drains.append(api.call_api.stop(api.call_api.settings.drain_s))
        await asyncio.gather(*drains)
        if ari is not None:
            await ari.stop()
        if api is not None:
            await api.stop()
        await bot.close()
        print("voxpipe: stopped", flush=True)
    return 0


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` (``serve``) on uvloop when it is installed, else on asyncio's own loop.

    uvloop moves each call's messages with less CPU (see bench/calls.py);
    ``VOXPIPE_EVENT_LOOP=asyncio`` picks asyncio's loop anyway.
    """
    if os.environ.get("VOXPIPE_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
