"""How many real-time calls one bot process carries: N simulated callers against an echo bot.

    .venv/bin/python bench/calls.py [--calls 50 200 500] [--seconds 15] [--bot configs/echo.yaml]
                                    [--rate 8000] [--phases 20] [--loop uvloop|asyncio]
                                    [--pin | --no-pin] [--transport audiosocket|asterisk_websocket]

``--transport asterisk_websocket``: the callers are chan_websocket channels (a WebSocket each,
``MEDIA_START``, then raw slin/slin16 binary frames) against the bot's chan_websocket server,
instead of AudioSocket connections. (The call API's cost per call: bench/call_api.py.)

For each N the bot runs in its own process (``--serve``, one AudioSocket server as ``serve``
runs it, on the event loop ``serve`` would use unless ``--loop`` says otherwise). A light load
generator in this process connects N callers, each streaming a recorded utterance in a loop at
real time (one 20 ms message per call per slot, callers spread over the slot like independently
timed Asterisk channels; ``--phases 1`` sends them all at once) and counting what comes back.
With ``--pin`` (the default on 2 cores or more) the bot runs on the first core and the
generator on the second, so that the generator does not take the bot's CPU.

Over a measuring window it reports the bot process's CPU (% of one core, and µs per 20 ms frame
in and out), its RSS, the lateness of its outbound messages (for every message sent, how long
after its slot on the call's 20 ms schedule it left: a busy loop shows here), the echo's round
trip as the generator sees it (a caller's message sent to its echo received), and the share of
the expected audio delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from _machine import machine

REPO = Path(__file__).resolve().parents[1]
AUDIO = REPO / "tests" / "audio" / "caller_order_status_8k.wav"
FRAME_S = 0.02
TIMED_EVERY = 10  # one caller in ten times its echo (timing them all would load the generator)


# --- the bot process ---------------------------------------------------------------------------


def _record_sends(sent: list[list[float]], transport: str = "audiosocket") -> None:
    """Note when each connection's messages left (a list per connection)."""
    from voxpipe.transports.audiosocket.transport import Connection

    if transport == "asterisk_websocket":
        from voxpipe.transports.asterisk_websocket.transport import MediaConnection

        Connection = MediaConnection  # type: ignore[misc]

    clock = time.monotonic
    send = Connection.send
    by_connection: dict[int, list[float]] = {}

    def timed_send(self: Any, data: bytes) -> bool:
        ok: bool = send(self, data)
        if ok:
            times = by_connection.get(id(self))
            if times is None:
                times = by_connection[id(self)] = []
                sent.append(times)
            times.append(clock())
        return ok

    Connection.send = timed_send  # type: ignore[method-assign]


def lateness(sent: list[list[float]]) -> tuple[Any, Any]:
    """(times, lateness) of every message: how much later than its call's best it left.

    A call's k-th message is due 20·k ms after its first; the call's earliest offset from that
    grid is taken as on time, so a message's lateness is what the bot (or the callers) added.
    """
    times, late = [], []
    for call in sent:
        t = np.array(call)
        offset = t - FRAME_S * np.arange(t.size)
        times.append(t)
        late.append(offset - offset.min())
    if not times:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(times), np.concatenate(late)


async def _serve(bot_path: str, out: str, transport: str = "audiosocket") -> None:
    """Serve the bot, recording each outbound message's lateness until SIGTERM."""
    from voxpipe.bots.bot import Bot
    from voxpipe.transports.audiosocket.server import AudioSocketServer

    sent: list[list[float]] = []
    _record_sends(sent, transport)
    bot = Bot.load(bot_path)
    await bot.prepare()
    server: Any
    if transport == "asterisk_websocket":
        from voxpipe.transports.asterisk_websocket.server import AsteriskWebSocketServer
        from voxpipe.transports.asterisk_websocket.settings import AsteriskWebSocketSettings

        chan_ws = AsteriskWebSocketSettings(listen="127.0.0.1:0", max_calls=10_000)
        server = AsteriskWebSocketServer(bot, chan_ws)
    else:
        settings = bot.config.transport.audiosocket.model_copy(
            update={"listen": "127.0.0.1:0", "max_calls": 10_000}
        )
        server = AudioSocketServer(bot, settings)
    await server.start()
    print(server.port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    times, late = lateness(sent)
    np.savez(out, times=times, late=late)
    await server.stop(0.0)


def _run_bot(bot_path: str, out: str, loop: str, transport: str = "audiosocket") -> None:
    if loop == "default":
        try:
            from voxpipe.bots.serve import run_loop
        except ImportError:  # a version that always ran asyncio's own loop
            asyncio.run(_serve(bot_path, out, transport))
        else:
            run_loop(_serve(bot_path, out, transport))
    elif loop == "uvloop":
        import uvloop

        uvloop.run(_serve(bot_path, out, transport))
    else:
        asyncio.run(_serve(bot_path, out, transport))


# --- the callers -------------------------------------------------------------------------------


class LoadCall(asyncio.Protocol):
    """One caller: sends its UUID, then whatever the sender gives it; counts what comes back.

    A ``timed`` caller also notes when each message left and when its echo came back.
    """

    def __init__(self, message_size: int, timed: bool) -> None:
        self.transport: asyncio.Transport | None = None
        self.message_size = message_size
        self.timed = timed
        self.received = 0
        self.lost = False
        self.sent_at: collections.deque[float] = collections.deque()
        self.round_trips: list[float] = []
        self.clock = time.monotonic

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(b"\x01\x00\x10" + uuid.uuid4().bytes)

    def send(self, message: bytes) -> None:
        assert self.transport is not None
        self.transport.write(message)
        if self.timed:
            self.sent_at.append(self.clock())

    def data_received(self, data: bytes) -> None:
        before = self.received // self.message_size
        self.received += len(data)
        if not self.timed:
            return
        now = self.clock()
        for _ in range(self.received // self.message_size - before):
            if self.sent_at:  # an echo: each message back answers one sent
                self.round_trips.append(now - self.sent_at.popleft())

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class WsLoadCall:
    """One chan_websocket caller: MEDIA_START, then raw PCM frames; counts binary bytes back."""

    def __init__(self, message_size: int, timed: bool) -> None:
        self.message_size = message_size
        self.timed = timed
        self.received = 0
        self.lost = False
        self.sent_at: collections.deque[float] = collections.deque()
        self.round_trips: list[float] = []
        self.clock = time.monotonic
        self.transport: Any = None
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None

    async def open(self, port: int, rate: int) -> None:
        from websockets.asyncio.client import connect

        fmt = "slin16" if rate == 16000 else "slin"
        self.ws = await connect(
            f"ws://127.0.0.1:{port}/?call={uuid.uuid4()}",
            subprotocols=["media"],  # type: ignore[list-item]
            compression=None,
            max_queue=None,
            proxy=None,
        )
        await self.ws.send(
            f"MEDIA_START connection_id:load channel:WebSocket/load channel_id:{uuid.uuid4()} "
            f"format:{fmt} optimal_frame_size:{self.message_size} ptime:20"
        )
        self.transport = self.ws.transport
        self.reader = asyncio.create_task(self._read())

    def send(self, message: bytes) -> None:
        self.ws.protocol.send_binary(message[3:])  # the AudioSocket header off: raw slin
        self.ws.send_data()
        if self.timed:
            self.sent_at.append(self.clock())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    self.data_received(message)
        except Exception:
            pass
        self.lost = True

    def data_received(self, data: bytes) -> None:
        before = self.received // self.message_size
        self.received += len(data)
        if not self.timed:
            return
        now = self.clock()
        for _ in range(self.received // self.message_size - before):
            if self.sent_at:
                self.round_trips.append(now - self.sent_at.popleft())


def _frames(rate: int) -> list[bytes]:
    from voxpipe.transports.audiosocket.caller import load_wav
    from voxpipe.transports.audiosocket.protocol import KIND_OF_RATE, encode

    size = int(rate * FRAME_S) * 2
    pcm = load_wav(AUDIO, rate) + bytes(25 * size)  # the utterance, then half a second of quiet
    return [
        encode(KIND_OF_RATE[rate], pcm[i : i + size].ljust(size, b"\0"))
        for i in range(0, len(pcm), size)
    ]


async def _send(
    calls: list[LoadCall],
    frames: list[bytes],
    phases: int,
    stop: asyncio.Event,
    late: list[float] | None = None,
) -> None:
    """One message every 20 ms to every connected caller (each at its own place in the loop).

    Asterisk times each channel on its own, so callers' frames do not all arrive at the same
    instant: the callers are spread over ``phases`` evenly spaced offsets within the 20 ms
    (20: one millisecond apart, like independent channels; 1: all at once, the worst case).
    ``late`` collects how late each batch left after its time (the generator's own delay).
    """
    clock = time.monotonic
    slot, n = clock(), 0
    while not stop.is_set():
        if late is not None:
            late.append(clock() - slot)
        for index in range(n % phases, len(calls), phases):
            call = calls[index]
            if call.transport is not None and not call.lost:
                call.send(frames[(n // phases + 7 * index) % len(frames)])
        n += 1
        slot += FRAME_S / phases
        await asyncio.sleep(max(0.0, slot - clock()))


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(
    n_calls: int,
    seconds: float,
    bot: str,
    rate: int = 8000,
    phases: int = 20,
    loop_name: str = "default",
    pin: bool = False,
    transport: str = "audiosocket",
) -> dict[str, float]:
    """One measurement with ``n_calls`` concurrent callers."""
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "late.npz")
        command = [sys.executable, __file__, "--serve", bot, "--out", out, "--loop", loop_name]
        command += ["--transport", transport]
        proc = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE)
        if pin:
            os.sched_setaffinity(proc.pid, {0})
        assert proc.stdout is not None
        port = int(await proc.stdout.readline())
        base_rss = _rss_mb(proc.pid)
        loop = asyncio.get_running_loop()
        calls: list[Any] = []
        stop = asyncio.Event()
        size = 3 + int(rate * FRAME_S) * 2
        if transport == "asterisk_websocket":
            size -= 3  # raw slin frames, no header
        sender_late: list[float] = []
        sender = asyncio.create_task(_send(calls, _frames(rate), phases, stop, sender_late))
        for i in range(n_calls):  # connect at about 250 calls/s, as a busy PBX might
            timed = i % TIMED_EVERY == 0
            if transport == "asterisk_websocket":
                ws_call = WsLoadCall(size, timed)
                await ws_call.open(port, rate)
                calls.append(ws_call)
            else:
                _, call = await loop.create_connection(
                    lambda timed=timed: LoadCall(size, timed), "127.0.0.1", port
                )
                calls.append(call)
            await asyncio.sleep(0.004)
        await asyncio.sleep(2.0)
        start, cpu0, own0 = time.monotonic(), _cpu_s(proc.pid), time.process_time()
        received0 = sum(c.received for c in calls)
        for call in calls:
            call.round_trips.clear()
        sender_late.clear()
        await asyncio.sleep(seconds)
        callers_late = np.array(sender_late) * 1000
        end, cpu1, own1 = time.monotonic(), _cpu_s(proc.pid), time.process_time()
        received = sum(c.received for c in calls) - received0
        trips = np.array([t for c in calls for t in c.round_trips]) * 1000
        rss = _rss_mb(proc.pid)
        alive = sum(not c.lost for c in calls)
        stop.set()
        await sender
        for call in calls:
            if call.transport is not None:
                call.transport.close()
            if getattr(call, "reader", None) is not None:
                call.reader.cancel()
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        data = np.load(out)
    in_window = (data["times"] >= start) & (data["times"] <= end)
    late_ms = data["late"][in_window] * 1000
    expected = n_calls * (end - start) / FRAME_S * size
    frames = received / size  # each one a caller's frame in and its echo out
    return {
        "calls": n_calls,
        "alive": alive,
        "cpu_pct": 100 * (cpu1 - cpu0) / (end - start),
        "callers_cpu_pct": 100 * (own1 - own0) / (end - start),
        "us_per_frame": 1e6 * (cpu1 - cpu0) / max(frames, 1),
        "rss_mb": rss,
        "kb_per_call": (rss - base_rss) * 1024 / n_calls,
        "p50_ms": float(np.percentile(late_ms, 50)),
        "p99_ms": float(np.percentile(late_ms, 99)),
        "max_ms": float(late_ms.max()),
        "rt50_ms": float(np.percentile(trips, 50)) if trips.size else float("nan"),
        "rt99_ms": float(np.percentile(trips, 99)) if trips.size else float("nan"),
        "messages": float(late_ms.size),
        "callers_p99_ms": float(np.percentile(callers_late, 99)),
        "delivered_pct": 100 * received / expected,
    }


async def main(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}")
    pin = args.pin if args.pin is not None else (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {1})
    print(
        f"bot: {args.bot} over {args.transport} on the {args.loop} event loop; callers at "
        f"{args.rate} Hz streaming "
        f"{AUDIO.name} in a loop, their frames spread over {args.phases} offset(s) in each "
        f"20 ms; measured over {args.seconds:g} s after a 2 s settle; "
        + ("bot on core 0, callers on core 1" if pin else "not pinned to cores")
    )
    print(
        f"{'calls':>6} {'alive':>6} {'CPU %':>7} {'µs/frame':>9} {'RSS MB':>7} {'KB/call':>8} "
        f"{'late p50':>9} {'p99':>7} {'max':>7} {'echo p50':>9} {'p99':>7} {'delivered':>10} "
        f"{'callers: CPU %':>15} {'late p99':>9}"
    )
    for n in args.calls:
        r = await run(
            n, args.seconds, args.bot, args.rate, args.phases, args.loop, pin, args.transport
        )
        print(
            f"{r['calls']:>6} {r['alive']:>6} {r['cpu_pct']:>7.1f} {r['us_per_frame']:>9.1f} "
            f"{r['rss_mb']:>7.1f} {r['kb_per_call']:>8.1f} {r['p50_ms']:>7.2f}ms "
            f"{r['p99_ms']:>5.2f}ms {r['max_ms']:>5.1f}ms {r['rt50_ms']:>7.2f}ms "
            f"{r['rt99_ms']:>5.1f}ms {r['delivered_pct']:>9.1f}% {r['callers_cpu_pct']:>15.1f} "
            f"{r['callers_p99_ms']:>7.2f}ms",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[50, 200, 500])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=int, default=8000, help="callers' audio rate")
    parser.add_argument(
        "--phases",
        type=int,
        default=20,
        help="spread the callers' 20 ms frames over this many offsets (1: all at once)",
    )
    parser.add_argument("--bot", default=str(REPO / "configs" / "echo.yaml"))
    parser.add_argument(
        "--loop",
        choices=["default", "uvloop", "asyncio"],
        default="default",
        help="the bot's event loop (default: the one run-pipeline serve uses)",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bot on core 0, callers on core 1 (default: when there are 2 cores or more)",
    )
    parser.add_argument(
        "--transport",
        choices=["audiosocket", "asterisk_websocket"],
        default="audiosocket",
        help="how the callers reach the bot: AudioSocket over TCP, or chan_websocket",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    cli = parser.parse_args()
    if cli.serve:
        _run_bot(cli.serve, cli.out, cli.loop, cli.transport)
    else:
        try:  # the generator's own cost must not limit what it measures
            import uvloop
        except ImportError:
            asyncio.run(main(cli))
        else:
            uvloop.run(main(cli))
