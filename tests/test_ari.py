"""The ARI controller against a fake Asterisk (real HTTP and WebSocket on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from fakes.ari import FakeAri, FakeChannel, wait_until
from helpers import AUDIO
from pydantic import SecretStr

from voxpipe.ari import AriCall, AriController
from voxpipe.frames import TransferFrame
from voxpipe.pipelines.bot import Bot
from voxpipe.pipelines.call import Call
from voxpipe.pipelines.config import AriSettings
from voxpipe.transports.audiosocket.caller import (
    CallResult,
    Say,
    WaitForHangup,
    load_wav,
    place_call,
    running_bot,
)

BOT_ADDRESS = "127.0.0.1:9092"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAri]:
    server = FakeAri()
    await server.start()
    yield server
    await server.stop()


def settings_for(fake: FakeAri, **overrides: float) -> AriSettings:
    values: dict[str, object] = {
        "url": fake.url,
        "username": fake.username,
        "password": SecretStr(fake.password),
        "reconnect_step_s": 0.05,
        "reconnect_max_s": 0.2,
        "timeout_s": 2.0,
        **overrides,
    }
    return AriSettings.model_validate(values)


@pytest.fixture
async def controller(fake: FakeAri) -> AsyncIterator[AriController]:
    ctl = AriController(settings_for(fake), BOT_ADDRESS)
    await ctl.start()
    await wait_until(lambda: len(fake.sockets) == 1)
    yield ctl
    await ctl.stop()


def media_request(fake: FakeAri, caller_id: str) -> dict[str, str]:
    """The externalMedia parameters the controller sent for this caller's call."""
    bridge = fake.bridge_of(caller_id)
    assert bridge is not None
    media_ids = [c for c in bridge.channels if c != caller_id]
    (media,) = [
        r
        for r in fake.made("POST", "/channels/externalMedia")
        if r.params["channelId"] in media_ids
    ]
    return media.params


async def connected_call(fake: FakeAri, controller: AriController) -> tuple[str, AriCall]:
    """Place a call and wait until the caller and the bot's leg share a bridge."""
    caller = await fake.place_call()

    def bridged() -> bool:
        bridge = fake.bridge_of(caller)
        return bridge is not None and len(bridge.channels) == 2

    await wait_until(bridged)
    ari_call = next(c for c in controller.calls.values() if c.caller_id == caller)
    return caller, ari_call


async def test_caller_is_answered_bridged_to_the_bot_and_cleaned_up_on_hangup(
    fake: FakeAri, controller: AriController
) -> None:
    caller, ari_call = await connected_call(fake, controller)

    assert fake.made("POST", f"/channels/{caller}/answer")
    assert fake.channels[caller].state == "Up"
    (bridge_request,) = fake.made("POST", "/bridges")
    assert bridge_request.params["type"] == "mixing"
    params = media_request(fake, caller)
    assert params["app"] == "voxpipe"
    assert params["external_host"] == BOT_ADDRESS
    assert params["encapsulation"] == "audiosocket"
    assert params["transport"] == "tcp"
    assert params["format"] == "slin16"
    assert str(uuid.UUID(params["data"])) == params["data"] == ari_call.uuid
    # The externalMedia channel's own StasisStart did not become a second call.
    assert list(controller.calls) == [ari_call.uuid]

    await fake.caller_hangs_up(caller)
    await wait_until(lambda: not controller.calls)
    assert fake.made("DELETE", f"/channels/{ari_call.media_id}")
    assert fake.made("DELETE", f"/bridges/{ari_call.bridge_id}")
    assert fake.channels == {}
    assert fake.bridges == {}


async def test_cleanup_runs_once_whatever_events_repeat(
    fake: FakeAri, controller: AriController
) -> None:
    caller, ari_call = await connected_call(fake, controller)
    channel = fake.channels[caller].json()
    await fake.caller_hangs_up(caller)
    await wait_until(lambda: ari_call.done.is_set())
    made = len(fake.requests)

    await fake.emit({"type": "StasisEnd", "channel": channel})
    await fake.emit({"type": "ChannelDestroyed", "cause": 16, "cause_txt": "", "channel": channel})
    await ari_call.hangup()
    await fake.place_call()  # a later event proves the repeated ones were processed
    await wait_until(lambda: len(controller.calls) == 1)

    repeated = [
        r
        for r in fake.requests[made:]
        if ari_call.bridge_id in r.path or ari_call.media_id in r.path or caller in r.path
    ]
    assert repeated == []


async def test_bot_leg_ending_hangs_up_the_caller(fake: FakeAri, controller: AriController) -> None:
    caller, ari_call = await connected_call(fake, controller)

    # The bot closes its AudioSocket: Asterisk hangs up the externalMedia channel.
    await fake.caller_hangs_up(ari_call.media_id)

    await wait_until(lambda: not controller.calls)
    assert fake.made("DELETE", f"/channels/{caller}")
    assert fake.channels == {}
    assert fake.bridges == {}


async def test_reconnects_after_the_events_websocket_drops(
    fake: FakeAri, controller: AriController
) -> None:
    assert controller.connections == 1
    await fake.drop_events()

    await wait_until(lambda: len(fake.sockets) == 1)
    assert fake.connections == 2
    _caller, ari_call = await connected_call(fake, controller)
    assert ari_call.uuid in controller.calls


async def test_calls_that_ended_while_disconnected_are_cleaned_up_on_reconnection(
    fake: FakeAri, controller: AriController
) -> None:
    caller, ari_call = await connected_call(fake, controller)
    _other_caller, other = await connected_call(fake, controller)
    fake.password = "changed"  # Asterisk restarts its HTTP server, say: no events for a while
    await fake.drop_events()
    await wait_until(lambda: fake.rejected >= 1)
    await fake.caller_hangs_up(caller)  # nobody hears of it

    fake.password = "secret"
    await wait_until(lambda: ari_call.done.is_set())

    assert fake.made("GET", f"/channels/{caller}")
    assert fake.made("DELETE", f"/bridges/{ari_call.bridge_id}")
    assert ari_call.media_id not in fake.channels
    assert list(controller.calls) == [other.uuid]
    assert other.bridge_id in fake.bridges


async def test_keeps_retrying_with_a_growing_backoff_until_asterisk_lets_it_in(
    fake: FakeAri, caplog: pytest.LogCaptureFixture
) -> None:
    ctl = AriController(settings_for(fake), BOT_ADDRESS)  # steps of 0.05 s, at most 0.2 s
    fake.password = "changed"  # Asterisk refuses the controller's credentials for a while
    with caplog.at_level(logging.INFO, logger="voxpipe.ari"):
        await ctl.start()
        try:
            await wait_until(lambda: fake.rejected >= 6)
            assert not ctl.connected.is_set()
            fake.password = "secret"
            await wait_until(lambda: len(fake.sockets) == 1)
            assert ctl.connected.is_set()
        finally:
            await ctl.stop()
    delays = [r.args[0] for r in caplog.records if r.msg.startswith("reconnecting")]
    assert delays[:6] == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2])


async def test_a_stalled_request_is_given_up_after_the_timeout(
    fake: FakeAri, caplog: pytest.LogCaptureFixture
) -> None:
    ctl = AriController(settings_for(fake, timeout_s=0.3), BOT_ADDRESS)
    await ctl.start()
    await wait_until(lambda: len(fake.sockets) == 1)
    fake.stall("POST", "/answer")
    try:
        with caplog.at_level(logging.WARNING, logger="voxpipe.ari"):
            caller = await fake.place_call()
            await wait_until(lambda: bool(fake.made("DELETE", f"/channels/{caller}")))
            await wait_until(lambda: not ctl.calls)
        assert any("no answer within 0.3 s" in r.getMessage() for r in caplog.records)
        assert caller not in fake.channels
        assert fake.made("POST", "/channels/externalMedia") == []

        fake.stalls.clear()
        _caller, ari_call = await connected_call(fake, ctl)
        assert ari_call.uuid in ctl.calls
    finally:
        await ctl.stop()


async def test_transfer_moves_the_caller_to_the_dialplan_and_drops_the_bot(
    fake: FakeAri, controller: AriController
) -> None:
    caller, ari_call = await connected_call(fake, controller)
    call = Call(call_id=ari_call.uuid)
    await controller.attach(call)
    assert call.controller is ari_call

    await call.controller.transfer("transfer-to-operator", "100")

    (removed,) = fake.made("POST", f"/bridges/{ari_call.bridge_id}/removeChannel")
    assert removed.params["channel"] == caller
    (moved,) = fake.made("POST", f"/channels/{caller}/continue")
    assert moved.params == {"context": "transfer-to-operator", "extension": "100", "priority": "1"}
    assert fake.made("DELETE", f"/channels/{caller}") == []
    channel = fake.channels[caller]
    assert (channel.context, channel.exten, channel.in_stasis) == (
        "transfer-to-operator",
        "100",
        False,
    )
    assert ari_call.media_id not in fake.channels
    assert fake.bridges == {}
    assert controller.calls == {}


async def test_hangup_through_ari(fake: FakeAri, controller: AriController) -> None:
    caller, ari_call = await connected_call(fake, controller)

    await ari_call.hangup()

    assert fake.made("DELETE", f"/channels/{caller}")
    assert fake.channels == {}
    assert fake.bridges == {}


async def test_two_concurrent_calls_are_kept_apart(
    fake: FakeAri, controller: AriController
) -> None:
    first, second = await fake.place_call("1001"), await fake.place_call("1002")

    def both_bridged() -> bool:
        bridges = [fake.bridge_of(first), fake.bridge_of(second)]
        return all(b is not None and len(b.channels) == 2 for b in bridges)

    await wait_until(both_bridged)
    one = next(c for c in controller.calls.values() if c.caller_id == first)
    two = next(c for c in controller.calls.values() if c.caller_id == second)
    assert len({one.uuid, two.uuid}) == 2
    assert len({one.bridge_id, two.bridge_id}) == 2
    assert set(fake.bridges[one.bridge_id].channels) == {first, one.media_id}
    assert set(fake.bridges[two.bridge_id].channels) == {second, two.media_id}
    assert media_request(fake, first)["data"] == one.uuid
    assert media_request(fake, second)["data"] == two.uuid

    await fake.caller_hangs_up(first)
    await wait_until(lambda: one.uuid not in controller.calls)
    assert set(fake.bridges) == {two.bridge_id}
    assert set(fake.bridges[two.bridge_id].channels) == {second, two.media_id}
    assert list(controller.calls) == [two.uuid]

    await two.transfer("transfer-to-operator", "100")
    assert fake.made("POST", f"/channels/{first}/continue") == []
    assert fake.made("POST", f"/channels/{second}/continue")


async def test_attach_leaves_calls_that_are_not_ours_alone(
    fake: FakeAri, controller: AriController
) -> None:
    _caller, ari_call = await connected_call(fake, controller)
    stranger = Call(call_id=str(uuid.uuid4()))
    ours = Call(call_id=ari_call.uuid.upper())

    await controller.attach(stranger)
    await controller.attach(ours)

    assert stranger.controller is None
    assert ours.controller is ari_call


ECHO_BOT = """
name: echo-ari
transport: {audiosocket: {listen: "127.0.0.1:0", sample_rate: 16000}}
pipeline:
  - echo: {passthrough: false}
"""


async def test_end_to_end_a_stasis_caller_talks_to_the_bot_and_is_transferred(
    fake: FakeAri,
) -> None:
    """The fake Asterisk connects the externalMedia channel to the real AudioSocket server
    with the UUID from ``data``; a TransferFrame in the bot's pipeline ends in /continue."""
    results: list[CallResult] = []
    voice = load_wav(AUDIO / "caller_operator_16k.wav", 16000)[: 16000 * 2]

    async with running_bot(Bot.from_yaml(ECHO_BOT)) as server:

        async def connect_media(channel: FakeChannel, params: dict[str, str]) -> None:
            host, _, port = params["external_host"].rpartition(":")
            script = [Say(voice), WaitForHangup(timeout_s=20.0)]
            results.append(
                await place_call(host, int(port), script, rate=16000, call_id=params["data"])
            )
            if channel.id in fake.channels:  # the socket closed: Asterisk hangs the leg up
                await fake.caller_hangs_up(channel.id)

        fake.on_external_media = connect_media
        ctl = AriController(settings_for(fake), f"127.0.0.1:{server.port}")
        server.on_call_start.append(ctl.attach)
        await ctl.start()
        try:
            await wait_until(lambda: len(fake.sockets) == 1)
            caller = await fake.place_call()
            await wait_until(lambda: len(server.calls) == 1, timeout_s=10)
            (active,) = server.calls.values()
            ari_call = active.call.controller
            assert isinstance(ari_call, AriCall)
            assert ari_call.caller_id == caller
            await wait_until(lambda: len(fake.bridges[ari_call.bridge_id].channels) == 2)
            assert media_request(fake, caller)["data"] == active.call.call_id

            await wait_until(lambda: active.rate is not None)
            await asyncio.sleep(1.0)  # the caller talks for a while, and hears their echo
            active.task.queue_frame(TransferFrame(context="transfer-to-operator", extension="100"))

            await wait_until(lambda: bool(results), timeout_s=20)
            await wait_until(lambda: not ctl.calls and not server.calls)
        finally:
            await ctl.stop()

    (result,) = results
    assert result.hung_up_by == "bot"
    assert result.bot_segments  # the caller heard the bot (their own voice, echoed)
    (moved,) = fake.made("POST", f"/channels/{caller}/continue")
    assert moved.params == {"context": "transfer-to-operator", "extension": "100", "priority": "1"}
    assert fake.made("DELETE", f"/channels/{caller}") == []
    assert set(fake.channels) == {caller}
    assert fake.bridges == {}


async def test_serve_starts_the_controller_for_a_bot_with_an_ari_block(fake: FakeAri) -> None:
    from voxpipe.pipelines.serve import _start_ari

    text = ECHO_BOT + (
        f'ari: {{url: "{fake.url}", username: {fake.username}, password: {fake.password}}}\n'
    )
    async with running_bot(Bot.from_yaml(text)) as server:
        ctl = await _start_ari(server.bot, server)
        assert ctl is not None
        try:
            assert ctl.attach in server.on_call_start
            assert ctl.external_host == f"127.0.0.1:{server.port}"
            await wait_until(lambda: len(fake.sockets) == 1)
        finally:
            await ctl.stop()
        assert await _start_ari(Bot.from_yaml(ECHO_BOT), server) is None


async def test_another_client_taking_over_the_app_is_reported(
    fake: FakeAri, controller: AriController, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="voxpipe.ari"):
        await fake.emit({"type": "ApplicationReplaced"})
        await wait_until(lambda: any("took over" in r.getMessage() for r in caplog.records))
