"""The ARI controller against a fake Asterisk (real HTTP and WebSocket on 127.0.0.1).

The fake creates externalMedia channels the way Asterisk 22 does (see ``tests/fakes/ari.py``):
the channel enters Stasis only after the REST reply, or before it, late, or never; the
controller is run against each order, against REST errors at every step of a set-up, and
against callers who hang up while their call is being set up.
"""

from __future__ import annotations

import array
import asyncio
import logging
import socket
import uuid
from collections.abc import AsyncIterator

import pytest
from fakes.ari import FakeAri, FakeChannel, MediaStart
from helpers import AUDIO
from pydantic import SecretStr

from voxpipe.ari import AriCall, AriController
from voxpipe.bots.bot import Bot
from voxpipe.bots.call import running_bot
from voxpipe.bots.config import AriSettings
from voxpipe.frames import TransferFrame
from voxpipe.pipelines.call import Call
from voxpipe.sessions import outcomes
from voxpipe.testing import until
from voxpipe.transports.audiosocket.caller import load_wav

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
    await until(lambda: len(fake.sockets) == 1)
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
    """Place a call, wait until the caller and the bot's leg share a bridge, and let the bot
    take it (what the AudioSocket server's ``on_call_start`` hook does with the UUID)."""
    caller = await fake.place_call()

    def bridged() -> bool:
        bridge = fake.bridge_of(caller)
        return bridge is not None and len(bridge.channels) == 2

    await until(bridged)
    ari_call = next(c for c in controller.calls.values() if c.caller_id == caller)
    await until(lambda: ari_call.bridged)
    await controller.attach(Call(call_id=ari_call.uuid))
    return caller, ari_call


def sent_back(fake: FakeAri, caller: str) -> bool:
    """Whether the caller was returned to the dialplan after Stasis() (a bare /continue)."""
    return [r.params for r in fake.made("POST", f"/channels/{caller}/continue")] == [{}]


def assert_nothing_left_but(fake: FakeAri, *channels: str) -> None:
    """No bridge and no channel of the bot's remain in the fake Asterisk."""
    assert fake.bridges == {}
    assert set(fake.channels) == set(channels)


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
    await until(lambda: not controller.calls)
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
    await until(lambda: ari_call.done.is_set())
    made = len(fake.requests)

    await fake.emit({"type": "StasisEnd", "channel": channel})
    await fake.emit({"type": "ChannelDestroyed", "cause": 16, "cause_txt": "", "channel": channel})
    await ari_call.hangup()
    await fake.place_call()  # a later event proves the repeated ones were processed
    await until(lambda: len(controller.calls) == 1)

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

    await until(lambda: not controller.calls)
    assert fake.made("DELETE", f"/channels/{caller}")
    assert fake.channels == {}
    assert fake.bridges == {}


@pytest.mark.parametrize(
    ("media_start", "delay_s"),
    [("before_reply", 0.0), ("after_reply", 0.2), ("after_reply", 1.0)],
    ids=["before-the-reply", "after-the-reply", "late"],
)
async def test_the_media_channel_is_bridged_once_it_is_in_stasis_whenever_that_is(
    fake: FakeAri, media_start: MediaStart, delay_s: float
) -> None:
    """The REST reply and the channel's StasisStart come in either order; with the
    StasisStart after the reply, bridging at once is the 422 a real Asterisk gave."""
    fake.media_start, fake.media_delay_s = media_start, delay_s
    ctl = AriController(settings_for(fake, media_timeout_s=3.0), BOT_ADDRESS)
    await ctl.start()
    try:
        await until(lambda: len(fake.sockets) == 1)
        caller, ari_call = await connected_call(fake, ctl)

        assert set(fake.bridges[ari_call.bridge_id].channels) == {caller, ari_call.media_id}
        # One addChannel for each leg: none was refused and retried.
        assert len(fake.made("POST", f"/bridges/{ari_call.bridge_id}/addChannel")) == 2
        assert fake.made("POST", f"/channels/{caller}/continue") == []
    finally:
        await ctl.stop()


@pytest.mark.parametrize(
    ("media_start", "delay_s"),
    [("never", 0.0), ("after_reply", 1.5)],
    ids=["never", "later-than-the-bound"],
)
async def test_a_media_channel_that_does_not_enter_stasis_in_time_sends_the_caller_back(
    fake: FakeAri, media_start: MediaStart, delay_s: float, caplog: pytest.LogCaptureFixture
) -> None:
    fake.media_start, fake.media_delay_s = media_start, delay_s
    ctl = AriController(settings_for(fake, media_timeout_s=0.3), BOT_ADDRESS)
    await ctl.start()
    try:
        await until(lambda: len(fake.sockets) == 1)
        with caplog.at_level(logging.INFO, logger="voxpipe.ari"):
            caller = await fake.place_call()
            await until(lambda: bool(fake.made("POST", f"/channels/{caller}/continue")))
            await until(lambda: not ctl.calls)
        (media,) = fake.made("POST", "/channels/externalMedia")
        call_uuid = media.params["data"]

        assert sent_back(fake, caller)
        assert fake.channels[caller].in_stasis is False
        assert fake.made("DELETE", f"/channels/{media.params['channelId']}")
        assert_nothing_left_but(fake, caller)
        assert fake.made("POST", f"/bridges/voxpipe-{call_uuid}/addChannel") != []
        (failure,) = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert call_uuid in failure.getMessage()
        assert "did not enter 'voxpipe' within 0.3 s" in failure.getMessage()
        await asyncio.sleep(delay_s)  # a StasisStart that would have come late never does
        assert_nothing_left_but(fake, caller)
    finally:
        await ctl.stop()


async def test_a_media_channel_whose_dial_fails_sends_the_caller_back_at_once(
    fake: FakeAri,
) -> None:
    """Destroyed without entering Stasis: the controller does not wait out its bound."""
    fake.media_start = "dial_fails"
    ctl = AriController(settings_for(fake, media_timeout_s=60.0), BOT_ADDRESS)
    await ctl.start()
    try:
        await until(lambda: len(fake.sockets) == 1)
        caller = await fake.place_call()
        await until(lambda: bool(fake.made("POST", f"/channels/{caller}/continue")))
        await until(lambda: not ctl.calls)

        assert sent_back(fake, caller)
        assert_nothing_left_but(fake, caller)
    finally:
        await ctl.stop()


@pytest.mark.parametrize(
    ("method", "suffix", "status", "message", "leg"),
    [
        ("POST", "/answer", 500, "Internal Server Error", "caller"),
        ("POST", "/answer", 412, "Channel in invalid state", "caller"),
        ("POST", "/bridges", 500, "Allocation failed", ""),
        ("POST", "/bridges", 409, "Bridge with the same bridgeId already exists", ""),
        ("POST", "/addChannel", 422, "Channel not in Stasis application", "caller"),
        ("POST", "/addChannel", 404, "Bridge not found", "caller"),
        ("POST", "/externalMedia", 500, "Allocation failed", ""),
        ("POST", "/externalMedia", 400, "external_host must be <host>:<port>", ""),
        ("POST", "/addChannel", 422, "Channel not in Stasis application", "media"),
        ("POST", "/addChannel", 500, "Internal Server Error", "media"),
    ],
    ids=[
        "answer-500",
        "answer-412",
        "bridge-500",
        "bridge-409",
        "add-caller-422",
        "add-caller-404",
        "external-media-500",
        "external-media-400",
        "add-media-422",
        "add-media-500",
    ],
)
async def test_a_rest_error_at_any_step_of_the_setup_cleans_up_and_sends_the_caller_back(
    fake: FakeAri,
    controller: AriController,
    caplog: pytest.LogCaptureFixture,
    method: str,
    suffix: str,
    status: int,
    message: str,
    leg: str,
) -> None:
    def which(params: dict[str, str]) -> bool:
        channel = params.get("channel", "")
        return not leg or (leg == "media") == channel.startswith("voxpipe-media-")

    fake.fail(method, suffix, status, message, when=which)
    with caplog.at_level(logging.INFO, logger="voxpipe.ari"):
        caller = await fake.place_call()
        await until(lambda: bool(fake.made("POST", f"/channels/{caller}/continue")))
        await until(lambda: not controller.calls)

    assert fake.failures == []  # the error was given
    assert sent_back(fake, caller)
    assert_nothing_left_but(fake, caller)
    (entered,) = [r for r in caplog.records if r.getMessage().startswith("caller ")]
    call_uuid = entered.getMessage().rsplit(" ", 1)[-1]
    (failure,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    text = failure.getMessage()
    assert f"setting up call {call_uuid} failed" in text
    assert f"{status} {message}" in text
    assert f"sending caller {caller} back to the dialplan" in text


async def test_a_caller_the_dialplan_cannot_take_back_is_hung_up_not_left_in_silence(
    fake: FakeAri,
) -> None:
    fake.media_start = "never"
    fake.fail("POST", "/continue", 500, "Internal Server Error")
    ctl = AriController(settings_for(fake, media_timeout_s=0.2), BOT_ADDRESS)
    await ctl.start()
    try:
        await until(lambda: len(fake.sockets) == 1)
        caller = await fake.place_call()
        await until(lambda: bool(fake.made("DELETE", f"/channels/{caller}")))
        await until(lambda: not ctl.calls)

        assert fake.made("POST", f"/channels/{caller}/continue")
        assert fake.made("DELETE", f"/channels/{caller}")
        assert_nothing_left_but(fake)
    finally:
        await ctl.stop()


@pytest.mark.parametrize(
    "during", ["waiting-for-the-media-channel", "creating-the-media-channel", "answering"]
)
async def test_a_caller_who_hangs_up_during_setup_leaves_nothing_behind(
    fake: FakeAri, controller: AriController, during: str
) -> None:
    if during == "waiting-for-the-media-channel":
        fake.media_start = "never"
        request = ("POST", "/channels/externalMedia")
    elif during == "creating-the-media-channel":
        fake.stall("POST", "/externalMedia")
        request = ("POST", "/channels/externalMedia")
    else:
        fake.stall("POST", "/answer")
        request = ("POST", "")
    caller = await fake.place_call()
    path = request[1] or f"/channels/{caller}/answer"
    await until(lambda: bool(fake.made(request[0], path)))

    await fake.caller_hangs_up(caller)
    await until(lambda: not controller.calls)

    assert fake.made("POST", f"/channels/{caller}/continue") == []
    assert fake.made("DELETE", f"/channels/{caller}") == []  # it was gone already
    assert_nothing_left_but(fake)


async def test_a_media_channel_of_an_ended_call_that_enters_stasis_late_is_hung_up(
    fake: FakeAri, controller: AriController
) -> None:
    """The caller hung up while Asterisk was still creating the bot's leg."""
    leftover = FakeChannel(
        id=f"voxpipe-media-{uuid.uuid4()}", name="AudioSocket/127.0.0.1:9092-x", state="Up"
    )
    fake.channels[leftover.id] = leftover
    other = FakeChannel(id="other-app-media", name="AudioSocket/10.0.0.9:4000-y", state="Up")
    fake.channels[other.id] = other

    await fake.emit({"type": "StasisStart", "args": [], "channel": other.json()})
    await fake.emit({"type": "StasisStart", "args": [], "channel": leftover.json()})

    await until(lambda: leftover.id not in fake.channels)
    assert fake.made("DELETE", f"/channels/{other.id}") == []
    assert controller.calls == {}


async def test_the_bots_leg_ending_before_the_bot_took_the_call_sends_the_caller_back(
    fake: FakeAri, controller: AriController
) -> None:
    """A bot at max_calls (or draining) closes the connection at once: that caller goes on in
    the dialplan (to its operators), it is not hung up."""
    caller = await fake.place_call()
    await until(lambda: any(c.bridged for c in controller.calls.values()))
    (ari_call,) = controller.calls.values()

    await fake.caller_hangs_up(ari_call.media_id)  # Asterisk hangs up the refused leg

    await until(lambda: not controller.calls)
    assert sent_back(fake, caller)
    assert fake.made("DELETE", f"/channels/{caller}") == []
    assert_nothing_left_but(fake, caller)


async def test_reconnects_after_the_events_websocket_drops(
    fake: FakeAri, controller: AriController
) -> None:
    assert controller.connections == 1
    await fake.drop_events()

    await until(lambda: len(fake.sockets) == 1)
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
    await until(lambda: fake.rejected >= 1)
    await fake.caller_hangs_up(caller)  # nobody hears of it

    fake.password = "secret"
    await until(lambda: ari_call.done.is_set())

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
            await until(lambda: fake.rejected >= 6)
            assert not ctl.connected.is_set()
            fake.password = "secret"
            # The fake counts the socket a moment before the controller has read the upgrade
            # reply and calls itself connected: wait for both.
            await until(lambda: len(fake.sockets) == 1 and ctl.connected.is_set())
        finally:
            await ctl.stop()
    delays = [r.args[0] for r in caplog.records if r.msg.startswith("reconnecting")]
    assert delays[:6] == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2])


async def test_a_stalled_request_is_given_up_after_the_timeout(
    fake: FakeAri, caplog: pytest.LogCaptureFixture
) -> None:
    ctl = AriController(settings_for(fake, timeout_s=0.3), BOT_ADDRESS)
    await ctl.start()
    await until(lambda: len(fake.sockets) == 1)
    fake.stall("POST", "/answer")
    try:
        with caplog.at_level(logging.WARNING, logger="voxpipe.ari"):
            caller = await fake.place_call()
            await until(lambda: bool(fake.made("POST", f"/channels/{caller}/continue")))
            await until(lambda: not ctl.calls)
        assert any("no answer within 0.3 s" in r.getMessage() for r in caplog.records)
        assert sent_back(fake, caller)
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

    await until(both_bridged)
    one = next(c for c in controller.calls.values() if c.caller_id == first)
    two = next(c for c in controller.calls.values() if c.caller_id == second)
    assert len({one.uuid, two.uuid}) == 2
    assert len({one.bridge_id, two.bridge_id}) == 2
    assert set(fake.bridges[one.bridge_id].channels) == {first, one.media_id}
    assert set(fake.bridges[two.bridge_id].channels) == {second, two.media_id}
    assert media_request(fake, first)["data"] == one.uuid
    assert media_request(fake, second)["data"] == two.uuid

    await fake.caller_hangs_up(first)
    await until(lambda: one.uuid not in controller.calls)
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
    with the UUID from ``data`` and puts it in Stasis after its reply, as Asterisk 22 does; a
    TransferFrame in the bot's pipeline ends in /continue, and the bot records a transfer even
    though Asterisk closes the bot's socket (the leg is hung up) before the transfer returns."""
    voice = load_wav(AUDIO / "caller_operator_16k.wav", 16000)[: 16000 * 2]
    fake.connect_media, fake.media_start, fake.media_audio = True, "after_reply", voice

    async with running_bot(Bot.from_yaml(ECHO_BOT)) as server:
        ctl = AriController(settings_for(fake), f"127.0.0.1:{server.port}")
        server.on_call_start.append(ctl.attach)
        await ctl.start()
        try:
            await until(lambda: len(fake.sockets) == 1)
            caller = await fake.place_call()
            await until(lambda: len(server.calls) == 1, timeout_s=10)
            (active,) = server.calls.values()
            ari_call = active.call.controller
            assert isinstance(ari_call, AriCall)
            assert ari_call.caller_id == caller
            await until(lambda: ari_call.bridged)
            assert media_request(fake, caller)["data"] == active.call.call_id

            await until(lambda: active.rate == 16000)
            await asyncio.sleep(1.0)  # the caller talks for a while, and hears their echo
            active.task.queue_frame(TransferFrame(context="transfer-to-operator", extension="100"))

            await until(lambda: not ctl.calls and not server.calls)
        finally:
            await ctl.stop()

    leg = fake.media_legs[ari_call.media_id]
    heard = array.array("h", bytes(leg.received))
    assert max(map(abs, heard), default=0) > 1000  # the caller heard their own voice, echoed
    assert not leg.closed_by_bot  # Asterisk closed it: the controller hung the leg up
    (moved,) = fake.made("POST", f"/channels/{caller}/continue")
    assert moved.params == {"context": "transfer-to-operator", "extension": "100", "priority": "1"}
    assert fake.made("DELETE", f"/channels/{caller}") == []
    assert outcomes.outcome_of(active.call) == "transfer,transfer-to-operator,100,1"
    assert active.task.end_reason == "transferred"
    assert_nothing_left_but(fake, caller)


async def test_end_to_end_a_bot_that_refuses_the_call_hands_the_caller_back(
    fake: FakeAri,
) -> None:
    """A draining bot closes the AudioSocket connection at once; Asterisk hangs that leg up,
    and the controller returns the caller to the dialplan (its operators)."""
    fake.connect_media, fake.media_start = True, "after_reply"
    async with running_bot(Bot.from_yaml(ECHO_BOT)) as server:
        server.draining = True
        ctl = AriController(settings_for(fake), f"127.0.0.1:{server.port}")
        server.on_call_start.append(ctl.attach)
        await ctl.start()
        try:
            await until(lambda: len(fake.sockets) == 1)
            caller = await fake.place_call()
            await until(lambda: bool(fake.made("POST", "/channels/externalMedia")))
            await until(lambda: not ctl.calls)
        finally:
            await ctl.stop()

    assert sent_back(fake, caller)
    assert fake.made("DELETE", f"/channels/{caller}") == []
    assert_nothing_left_but(fake, caller)


async def test_end_to_end_a_setup_failing_after_the_bot_took_the_call_is_an_error(
    fake: FakeAri,
) -> None:
    """Asterisk connected and sent the UUID, but the channel never entered Stasis: the caller
    goes back to the dialplan, and the bot's call ends as an error, not a caller hang-up."""
    fake.connect_media, fake.media_start = True, "never"
    ended: list[Call] = []
    async with running_bot(Bot.from_yaml(ECHO_BOT)) as server:
        ctl = AriController(settings_for(fake, media_timeout_s=0.5), f"127.0.0.1:{server.port}")

        async def keep(call: Call) -> None:
            ended.append(call)

        server.on_call_start.extend([ctl.attach, keep])
        await ctl.start()
        try:
            await until(lambda: len(fake.sockets) == 1)
            caller = await fake.place_call()
            await until(lambda: len(server.calls) == 1)
            await until(lambda: not ctl.calls and not server.calls)
        finally:
            await ctl.stop()

    assert sent_back(fake, caller)
    assert_nothing_left_but(fake, caller)
    (call,) = ended
    assert outcomes.outcome_of(call) == outcomes.ERROR


async def test_callers_still_being_set_up_at_shutdown_go_back_to_the_dialplan(
    fake: FakeAri,
) -> None:
    fake.media_start = "never"
    ctl = AriController(settings_for(fake, media_timeout_s=30.0), BOT_ADDRESS)
    await ctl.start()
    await until(lambda: len(fake.sockets) == 1)
    caller = await fake.place_call()
    await until(lambda: bool(fake.made("POST", "/channels/externalMedia")))

    await ctl.stop()

    assert sent_back(fake, caller)
    assert_nothing_left_but(fake, caller)


async def test_no_bot_listening_sends_the_caller_back(fake: FakeAri) -> None:
    """Asterisk cannot connect to external_host: externalMedia answers 500."""
    fake.connect_media = True
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    ctl = AriController(settings_for(fake), f"127.0.0.1:{closed_port}")
    await ctl.start()
    try:
        await until(lambda: len(fake.sockets) == 1)
        caller = await fake.place_call()
        await until(lambda: bool(fake.made("POST", "/channels/externalMedia")))
        await until(lambda: not ctl.calls)
    finally:
        await ctl.stop()

    assert sent_back(fake, caller)
    assert_nothing_left_but(fake, caller)


async def test_serve_starts_the_controller_for_a_bot_with_an_ari_block(fake: FakeAri) -> None:
    from voxpipe.bots.serve import _start_ari

    text = ECHO_BOT + (
        f'ari: {{url: "{fake.url}", username: {fake.username}, password: {fake.password}}}\n'
    )
    async with running_bot(Bot.from_yaml(text)) as server:
        ctl = await _start_ari(server.bot, server)
        assert ctl is not None
        try:
            assert ctl.attach in server.on_call_start
            assert ctl.external_host == f"127.0.0.1:{server.port}"
            await until(lambda: len(fake.sockets) == 1)
        finally:
            await ctl.stop()
        assert await _start_ari(Bot.from_yaml(ECHO_BOT), server) is None


async def test_another_client_taking_over_the_app_is_reported(
    fake: FakeAri, controller: AriController, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="voxpipe.ari"):
        await fake.emit({"type": "ApplicationReplaced"})
        await until(lambda: any("took over" in r.getMessage() for r in caplog.records))
