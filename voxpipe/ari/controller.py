"""The ARI controller: takes callers that enter the Stasis app and bridges them to the bot.

For each caller (``StasisStart``): answer, create a mixing bridge, add the caller, create an
externalMedia channel (AudioSocket over TCP, slin16 by default) whose ``data`` is a fresh UUID,
wait for that channel's own ``StasisStart``, and add it to the bridge. Asterisk then connects to
the bot's AudioSocket server with that UUID; the server's ``on_call_start`` hook (``attach``)
gives the call an ``AriCall`` as its controller, so the bot can transfer or hang up the caller,
and its caller context (number, name and the channel's ``channelvars``, from ``StasisStart``).
When either channel leaves (``StasisEnd``, ``ChannelDestroyed``), whatever is left is hung up and
the bridge destroyed, once.

Asterisk answers the externalMedia request as soon as the channel exists, but only its dial
thread puts the channel into Stasis, a moment later: until then ``addChannel`` fails with 422.
So the controller waits for the media channel's StasisStart (which may also come before the
reply), for at most ``media_timeout_s``.

A set-up that fails (a REST error at any step, the media channel never entering Stasis, the
bot's leg ending before the bot took the call) deletes what was created and sends the caller
back to the dialplan with a bare ``/continue``: it goes on after ``Stasis()``, where the
dialplan has its fallback. The caller is never dropped for the bot's trouble.

Channel and bridge ids are chosen here, before the requests are sent: Asterisk's events about a
new channel may arrive before the response that creates it, and cleanup after a timeout still
knows what to delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from voxpipe.ari.client import AriClient, AriError
from voxpipe.caller_context import CallerContext
from voxpipe.records.context import context_from_channel
from voxpipe.sessions import outcomes

if TYPE_CHECKING:
    from voxpipe.bots.config import AriSettings
    from voxpipe.pipelines.call import Call
    from voxpipe.transports.asterisk_websocket.server import AsteriskWebSocketServer

log = logging.getLogger("voxpipe.ari")

_MEDIA_PREFIXES = ("AudioSocket/", "UnicastRTP/", "WebSocket/")
MEDIA_ID_PREFIX = "voxpipe-media-"

# What ending a call does to the caller's channel: hang it up, send it back to the dialplan
# (a failed set-up), or leave it alone (it left the app itself, or was transferred).
CallerFate = Literal["hangup", "continue", "leave"]


class ControlError(Exception):
    """Call control failed for a reason other than a failed request (``AriError``)."""


@dataclass(eq=False)
class AriCall:
    """One caller in the Stasis app, its bridge and the bot's media channel.

    It is the ``CallController`` of the bot's call: ``transfer`` and ``hangup`` act on the
    caller's channel through ARI.
    """

    controller: AriController
    uuid: str
    caller_id: str
    bridge_id: str
    media_id: str
    setup: asyncio.Task[None] | None = None
    call: Call | None = None
    bridged: bool = False
    caller: CallerContext | None = None
    ended: bool = False
    media_started: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def transfer(self, context: str, extension: str, priority: int = 1) -> None:
        """Blind-transfer the caller to ``context``/``extension`` and drop the bot's leg.

        Raises when the caller could not be moved (the call is over either way).
        """
        await self.controller.transfer(self, context, extension, priority)

    async def hangup(self) -> None:
        """Hang up the caller (and with it the bridge and the bot's leg)."""
        await self.controller.hangup(self)


class AriController:
    """Keeps the events WebSocket open and runs the calls of one Stasis application.

    ``external_host`` is the ``host:port`` Asterisk connects to for the bot's AudioSocket;
    ``chan_ws`` the bot's chan_websocket server (``media_transport: websocket``), which
    connects to Asterisk's ``/media/<id>`` when no ``websocket_connection`` is set.
    """

    def __init__(
        self,
        settings: AriSettings,
        external_host: str,
        chan_ws: AsteriskWebSocketServer | None = None,
    ) -> None:
        self.settings = settings
        self.chan_ws = chan_ws
        self.app = settings.app
        self.external_host = settings.external_host or external_host
        self.client = AriClient(
            settings.url,
            settings.username,
            settings.password.get_secret_value(),
            settings.timeout_s,
        )
        self.calls: dict[str, AriCall] = {}
        self._by_channel: dict[str, AriCall] = {}
        self.connected = asyncio.Event()
        self.connections = 0
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the event stream in the background (reconnecting as needed)."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"ari-{self.app}")

    async def stop(self) -> None:
        """Stop listening, tear down the calls still in the app, close the HTTP client.

        Callers still being set up go back to the dialplan; the others are hung up.
        """
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        self.connected.clear()
        await asyncio.gather(
            *(
                self._teardown(c, "shutdown", caller="hangup" if c.bridged else "continue")
                for c in list(self.calls.values())
            ),
            return_exceptions=True,
        )
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()

    async def attach(self, call: Call) -> None:
        """``on_call_start`` hook of the AudioSocket server: give our calls their controller."""
        try:
            key = str(uuid.UUID(call.call_id))
        except ValueError:
            return
        ari_call = self.calls.get(key)
        if ari_call is not None and not ari_call.ended:
            ari_call.call = call
            call.controller = ari_call
            call.caller = ari_call.caller
            call.data["ari_channel"] = ari_call.caller_id

    # --- the events WebSocket ----------------------------------------------------------------

    async def _run(self) -> None:
        """Listen for events; after a drop, retry after step, 2 x step, ... up to the maximum."""
        failures = 0
        while True:
            connections = self.connections
            try:
                await self._listen()
                log.warning("ARI events connection closed by Asterisk")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("ARI events connection failed: %s", exc or type(exc).__name__)
            self.connected.clear()
            if self.connections > connections:
                failures = 0  # it was up: start the backoff over
            failures += 1
            delay = min(self.settings.reconnect_step_s * failures, self.settings.reconnect_max_s)
            log.info("reconnecting to ARI in %.1f s", delay)
            await asyncio.sleep(delay)

    async def _listen(self) -> None:
        from websockets.asyncio.client import connect

        interval = self.settings.ping_interval_s
        async with connect(
            self.client.events_url(self.app),
            additional_headers=self.client.auth_header(),
            open_timeout=self.settings.timeout_s,
            ping_interval=interval,
            ping_timeout=interval,
            proxy=None,
        ) as ws:
            self.connections += 1
            self.connected.set()
            log.info("connected to ARI events of app %r", self.app)
            if self.calls:
                self._spawn(self._reconcile())
            async for message in ws:
                try:
                    event = json.loads(message)
                except ValueError:
                    log.warning("ARI sent a message that is not JSON")
                    continue
                if isinstance(event, dict):
                    self._dispatch(event)

    def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "ApplicationReplaced":
            log.error("another ARI client took over app %r: this bot gets no more calls", self.app)
            return
        channel = event.get("channel")
        if not isinstance(channel, dict) or not isinstance(channel.get("id"), str):
            return
        if kind == "StasisStart":
            self._on_stasis_start(channel)
        elif kind in ("StasisEnd", "ChannelDestroyed"):
            ari_call = self._by_channel.get(channel["id"])
            if ari_call is not None:
                self._on_channel_left(ari_call, channel, f"{kind} of {channel.get('name', '?')}")

    def _on_channel_left(self, ari_call: AriCall, channel: dict[str, Any], why: str) -> None:
        if ari_call.ended:
            return
        if channel["id"] == ari_call.caller_id:
            # The caller hung up or left the app: nothing is left to do for it.
            self._spawn(self._teardown(ari_call, why, caller="leave"))
        elif ari_call.bridged and ari_call.call is not None:
            self._spawn(self._teardown(ari_call, why))  # the bot's leg ended: the call is over
        else:
            # The bot's leg ended before the call was set up, or before the bot took the call
            # (a bot at max_calls or draining closes the connection at once).
            self._spawn(self._fail_setup(ari_call, f"the bot's media channel ended ({why})"))

    def _on_stasis_start(self, channel: dict[str, Any]) -> None:
        channel_id: str = channel["id"]
        name = str(channel.get("name", ""))
        known = self._by_channel.get(channel_id)
        if known is not None:
            if channel_id == known.media_id:
                known.media_started.set()  # it can be bridged now
            return
        if name.startswith(_MEDIA_PREFIXES):
            if channel_id.startswith(MEDIA_ID_PREFIX):
                # The media channel of a call that ended while Asterisk was still creating it.
                log.info("hanging up %s, left over from an ended call", name)
                self._spawn(self._quietly(self.client.hangup(channel_id), channel_id))
            return  # some other application's media channel
        call_uuid = str(uuid.uuid4())
        ari_call = AriCall(
            controller=self,
            uuid=call_uuid,
            caller_id=channel_id,
            bridge_id=f"voxpipe-{call_uuid}",
            media_id=f"{MEDIA_ID_PREFIX}{call_uuid}",
            caller=context_from_channel(channel),
        )
        self.calls[call_uuid] = ari_call
        self._by_channel[channel_id] = ari_call
        self._by_channel[ari_call.media_id] = ari_call
        log.info("caller %s (%s) entered %r as call %s", name, channel_id, self.app, call_uuid)
        ari_call.setup = self._spawn(self._setup(ari_call))

    async def _reconcile(self) -> None:
        """After a reconnection: end the calls whose caller left while no events could arrive."""
        for ari_call in list(self.calls.values()):
            try:
                channel = await self.client.get_channel(ari_call.caller_id)
            except AriError as exc:
                log.warning("checking call %s after reconnecting: %s", ari_call.uuid, exc)
                continue
            if channel is None:
                await self._teardown(ari_call, "caller gone while disconnected", caller="leave")

    # --- one call --------------------------------------------------------------------------

    async def _setup(self, ari_call: AriCall) -> None:
        client = self.client
        try:
            await client.answer(ari_call.caller_id)
            await client.create_bridge(ari_call.bridge_id, f"voxpipe {ari_call.uuid}")
            await client.add_channel(ari_call.bridge_id, ari_call.caller_id)
            if self.settings.media_transport == "websocket":
                await self._websocket_media(ari_call)
            else:
                await client.external_media(
                    ari_call.media_id,
                    self.app,
                    self.external_host,
                    ari_call.uuid,
                    self.settings.media_format,
                )
            await self._media_in_stasis(ari_call)
            await client.add_channel(ari_call.bridge_id, ari_call.media_id)
        except (AriError, ControlError) as exc:
            await self._fail_setup(ari_call, str(exc))
            return
        ari_call.bridged = True
        log.info("call %s set up: caller %s bridged to the bot", ari_call.uuid, ari_call.caller_id)

    async def _websocket_media(self, ari_call: AriCall) -> None:
        """A chan_websocket media channel: Asterisk dials ``websocket_connection``, or the bot
        connects to ``/media/<MEDIA_WEBSOCKET_CONNECTION_ID>`` (the channel's id names the
        call either way: ``voxpipe-media-<uuid>``)."""
        connection = self.settings.websocket_connection or ""
        channel = await self.client.external_media(
            ari_call.media_id,
            self.app,
            connection,
            ari_call.uuid,
            self.settings.media_format,
            transport="websocket",
        )
        if connection:
            return
        variables = channel.get("channelvars")
        media = (
            variables.get("MEDIA_WEBSOCKET_CONNECTION_ID") if isinstance(variables, dict) else None
        )
        if not isinstance(media, str) or not media:
            raise ControlError("externalMedia gave no MEDIA_WEBSOCKET_CONNECTION_ID to connect to")
        if self.chan_ws is None:
            raise ControlError("media_transport websocket needs transport.asterisk_websocket")
        self._spawn(self._connect_media(ari_call, self.client.media_url(media)))

    async def _connect_media(self, ari_call: AriCall, url: str) -> None:
        assert self.chan_ws is not None
        try:
            await self.chan_ws.connect(url, self.client.auth_header())
        except Exception as exc:
            if not ari_call.bridged or ari_call.call is None:
                await self._fail_setup(ari_call, f"connecting to {url} failed: {exc}")
            else:
                log.warning("call %s: the media WebSocket %s failed: %s", ari_call.uuid, url, exc)

    async def _media_in_stasis(self, ari_call: AriCall) -> None:
        """Wait (bounded) until Asterisk's dial thread has put the media channel in Stasis."""
        timeout_s = self.settings.media_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await ari_call.media_started.wait()
        except TimeoutError:
            raise ControlError(
                f"the bot's media channel did not enter {self.app!r} within {timeout_s:g} s"
            ) from None

    async def _fail_setup(self, ari_call: AriCall, problem: str) -> None:
        """Give up on a call being set up: clean up and send the caller back to the dialplan."""
        if ari_call.ended:
            return
        log.error(
            "setting up call %s failed: %s; sending caller %s back to the dialplan",
            ari_call.uuid,
            problem,
            ari_call.caller_id,
        )
        if ari_call.call is not None:
            # The bot took the call already: its end is this failure, not a caller hang-up.
            outcomes.settle(ari_call.call, outcomes.ERROR)
        await self._teardown(ari_call, "setup failed", caller="continue")

    async def _teardown(
        self, ari_call: AriCall, reason: str, caller: CallerFate = "hangup"
    ) -> None:
        """Deal with the caller, hang up the bot's leg and destroy the bridge; once per call."""
        if ari_call.ended:
            await ari_call.done.wait()
            return
        ari_call.ended = True
        try:
            setup = ari_call.setup
            if setup is not None and setup is not asyncio.current_task() and not setup.done():
                setup.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await setup
            log.info("ending call %s: %s", ari_call.uuid, reason)
            if caller == "continue":
                await self._send_back(ari_call)
            elif caller == "hangup":
                await self._quietly(self.client.hangup(ari_call.caller_id), ari_call.uuid)
            await self._quietly(self.client.hangup(ari_call.media_id), ari_call.uuid)
            await self._quietly(self.client.delete_bridge(ari_call.bridge_id), ari_call.uuid)
        finally:
            self.calls.pop(ari_call.uuid, None)
            self._by_channel.pop(ari_call.caller_id, None)
            self._by_channel.pop(ari_call.media_id, None)
            ari_call.done.set()

    async def _send_back(self, ari_call: AriCall) -> None:
        """A bare ``/continue``: the caller goes on after ``Stasis()`` (leaving the bridge).

        If Asterisk refuses that for a reason other than the caller being gone, the caller is
        hung up rather than left in silence in an app that no longer looks after it.
        """
        try:
            await self.client.continue_in_dialplan(ari_call.caller_id)
        except AriError as exc:
            if exc.status in (404, 409):
                return  # hung up, or already out of Stasis
            log.error(
                "call %s: could not send the caller back to the dialplan (%s); hanging up",
                ari_call.uuid,
                exc,
            )
            await self._quietly(self.client.hangup(ari_call.caller_id), ari_call.uuid)

    async def _quietly(self, step: Coroutine[Any, Any, None], call_uuid: str) -> None:
        try:
            await step
        except AriError as exc:
            log.warning("cleanup of call %s: %s", call_uuid, exc)

    async def transfer(
        self, ari_call: AriCall, context: str, extension: str, priority: int
    ) -> None:
        """Move the caller out of the bridge and Stasis to the dialplan, then drop the rest.

        Raises ``AriError`` when Asterisk refused the move (the call is torn down anyway), and
        ``ControlError`` when the call had already ended.
        """
        if ari_call.ended:
            raise ControlError(f"call {ari_call.uuid} ended before its transfer to {context}")
        log.info("transferring call %s to %s,%s,%d", ari_call.uuid, context, extension, priority)
        try:
            await self.client.remove_channel(ari_call.bridge_id, ari_call.caller_id)
            await self.client.continue_in_dialplan(ari_call.caller_id, context, extension, priority)
        except AriError as exc:
            log.error("transfer of call %s failed: %s", ari_call.uuid, exc)
            await self._teardown(ari_call, "transfer failed")
            raise
        target = f"{context},{extension},{priority}"
        await self._teardown(ari_call, f"transferred to {target}", caller="leave")

    async def hangup(self, ari_call: AriCall) -> None:
        """Hang up the caller, the bot's leg and the bridge."""
        await self._teardown(ari_call, "bot hung up")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
