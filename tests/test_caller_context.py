"""Who is calling: the caller context from the dialplan's POST and from ARI, the customer looked
up by number, and the templates of greetings, system prompts and tool arguments."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.ari import FakeAri
from pydantic import SecretStr
from sqlalchemy import text

from voxpipe.ari import AriController
from voxpipe.bots.bot import Bot
from voxpipe.bots.call import running_bot
from voxpipe.bots.config import AriSettings
from voxpipe.caller_context import CallerContext, Customer, render, render_arguments
from voxpipe.http import OperationsApi
from voxpipe.records.context import PendingContexts, context_from_form, settle_caller
from voxpipe.records.service import records_of
from voxpipe.testing import until
from voxpipe.tools import build_toolbox
from voxpipe.tools.settings import ToolSettings
from voxpipe.tools.toolbox import ToolCall
from voxpipe.transports.audiosocket.caller import (
    Hangup,
    WaitForBot,
    place_call,
)

TRICKY = "{x} ${HOME} {caller.number} {customer.name|y}"

GREETER = """
name: greeter
greeting: "Hello {{customer.name|caller.name|there}}."
transport:
  audiosocket: {{listen: "127.0.0.1:0", sample_rate: 8000, keepalive_s: 0.2}}
pipeline:
  - llm: {{provider: scripted, intents: [{{keywords: [hello], reply: "Hi."}}]}}
  - tts: {{provider: tone, word_ms: 20}}
caller: {{variables: [ACCOUNT]}}
http: {{listen: "127.0.0.1:0", token: "t"}}
call_records: {{url: "sqlite+aiosqlite:///{db}", migrate: true, flush_interval_s: 0.05}}
"""


def test_values_are_put_in_literally_once() -> None:
    caller = CallerContext(number="+15551234", name=TRICKY, variables={"ACCOUNT": "{caller.name}"})
    assert render("Hi {caller.name}!", caller) == f"Hi {TRICKY}!"
    assert render("{caller.ACCOUNT}", caller) == "{caller.name}"
    assert render("{customer.name|friend}, {caller.number}", caller) == "friend, +15551234"
    caller.customer = Customer("+15551234", "${PATH}", {"tier": "gold", "orders": [1, 2]})
    assert render("{customer.name} {customer.tier} {customer.orders}", caller) == (
        "${PATH} gold [1, 2]"
    )
    # Braces that are not ours stay as written (a JSON example in a system prompt).
    assert render('Answer {"ok": true} {order} {caller.nope|-}', caller) == (
        'Answer {"ok": true} {order} -'
    )
    assert render("Hello {caller.name|there}.", None) == "Hello there."
    assert render("{customer.nick|caller.name|x}", caller) == TRICKY
    assert render("{customer.nick|caller.nope|x}", caller) == "x"
    assert render_arguments(
        {"a": ["{caller.number}", {"b": "{customer.tier}"}], "n": 3}, caller
    ) == {
        "a": ["+15551234", {"b": "gold"}],
        "n": 3,
    }


async def test_a_posted_context_keeps_number_name_and_variables_as_data() -> None:
    context = context_from_form(
        {"number": "5551234", "name": TRICKY + "\x07", "ACCOUNT": "42", "bad key": "x"}
    )
    assert (context.number, context.name) == ("5551234", TRICKY)
    assert context.variables == {"ACCOUNT": "42"}
    assert context_from_form({"caller": "100"}).number == "100"
    pending = PendingContexts(keep_s=60)
    await pending.put("a", context)
    assert await pending.take("a") is context and await pending.take("a") is None


async def test_a_context_posted_to_one_worker_reaches_another_through_redis(
    redis_port: int,
) -> None:
    url = f"redis://127.0.0.1:{redis_port}/0"
    posted_to, taking = PendingContexts(redis_url=url), PendingContexts(redis_url=url)
    try:
        await posted_to.put("c1", CallerContext("5550100", "{x}", {"ACCOUNT": "7"}))
        found = await taking.take("c1")
        assert found is not None
        assert (found.number, found.name, found.variables) == ("5550100", "{x}", {"ACCOUNT": "7"})
        assert await posted_to.take("c1") is not None  # its own copy
        assert await taking.take("c1") is None  # taken once
    finally:
        await posted_to.aclose()
        await taking.aclose()


async def test_the_dialplan_posts_the_caller_and_the_bot_greets_the_customer(
    tmp_path: Path,
) -> None:
    bot = Bot.from_yaml(GREETER.format(db=tmp_path / "calls.db"))
    await bot.prepare()
    records = records_of(bot)
    assert records is not None and records.engine is not None
    async with records.engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO customers (phone, name, data) VALUES (:p, :n, '{}')"),
            {"p": "5550100", "n": "Ada {caller.number} ${HOME}"},
        )
    api = OperationsApi.for_bot(bot)
    assert api is not None
    await api.start()
    auth = {"Authorization": "Bearer t"}
    known, stranger, anonymous = (str(uuid.uuid4()) for _ in range(3))
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}") as http,
            running_bot(bot) as server,
        ):
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            # What CURL(url,number=...&name=...&ACCOUNT=...) sends.
            body = "number=5550100&name=Ada&ACCOUNT=7&OTHER=x"
            refused = await http.post(f"/calls/{known}/context", content=body, headers=form)
            assert refused.status_code == 401
            answer = await http.post(
                f"/calls/{known}/context", content=body, headers={**form, **auth}
            )
            assert answer.status_code == 200 and answer.text == "ok"
            name = "%7Bx%7D%20%24%7BHOME%7D"  # {x} ${HOME}
            await http.post(
                f"/calls/{stranger}/context",
                content=f"number=5550199&name={name}",
                headers={**form, **auth},
            )
            bad = await http.post("/calls/not-a-uuid/context", content=body, headers=auth)
            assert bad.status_code == 400
            for call_id in (known, stranger, anonymous):
                await place_call(
                    "127.0.0.1", server.port, [WaitForBot(5), Hangup()], call_id=call_id
                )
            for call_id in (known, stranger, anonymous):
                await until(lambda c=call_id: c not in records._calls, 5)  # type: ignore[misc]
            assert await records.writer.flushed(5)  # type: ignore[union-attr]
            found = {c: await records.get_call(c) for c in (known, stranger, anonymous)}
    finally:
        await api.stop()
        await bot.close()
    greetings = {c: record["turns"][0]["text"] for c, record in found.items() if record}
    assert greetings == {
        known: "Hello Ada {caller.number} ${HOME}.",
        stranger: "Hello {x} ${HOME}.",
        anonymous: "Hello there.",
    }
    first = found[known]
    assert first is not None
    assert (first["caller_number"], first["caller_name"]) == ("5550100", "Ada")
    assert first["context"] == {
        "variables": {"ACCOUNT": "7"},
        "customer": {"phone": "5550100", "name": "Ada {caller.number} ${HOME}"},
    }


async def test_ari_gives_the_caller_and_the_listed_channel_variables(tmp_path: Path) -> None:
    fake = FakeAri()
    await fake.start()
    settings = AriSettings.model_validate(
        {"url": fake.url, "username": fake.username, "password": SecretStr(fake.password)}
    )
    controller = AriController(settings, "127.0.0.1:9092")
    await controller.start()
    bot = Bot.from_yaml(GREETER.format(db=tmp_path / "calls.db").replace("http: {listen", "#"))
    try:
        await until(lambda: len(fake.sockets) == 1)
        await fake.place_call(
            "5550100", name="Grace {y}", channelvars={"ACCOUNT": "42", "SECRET": "no"}
        )
        await until(lambda: len(controller.calls) == 1)
        (ari_call,) = controller.calls.values()
        call = bot.new_call(ari_call.uuid)
        await controller.attach(call)
        await bot.prepare()
        await settle_caller(bot, call, bot.config.caller)
    finally:
        await bot.close()
        await controller.stop()
        await fake.stop()
    assert call.caller is not None
    assert (call.caller.number, call.caller.name, call.caller.way_in) == (
        "5550100",
        "Grace {y}",
        "ari",
    )
    assert call.caller.variables == {"ACCOUNT": "42"}


async def test_a_system_prompt_naming_the_caller_is_filled_per_call(tmp_path: Path) -> None:
    bot = Bot.from_yaml(
        f"""
name: assistant
call_records: {{url: "sqlite+aiosqlite:///{tmp_path / "calls.db"}", migrate: true}}
pipeline:
  - llm:
      provider: openai_compatible
      model: m
      base_url: "http://127.0.0.1:9/v1"
      system: "You talk to {{caller.name|a caller}} ({{customer.tier|new customer}})."
"""
    )
    await bot.prepare()
    try:
        call = bot.new_call()
        call.caller = CallerContext(number="1", name="{caller.number} ${X}")
        call.caller.customer = Customer("1", "", {"tier": "gold"})
        processor: Any = bot.steps[0].settings.create(call, bot)
        plain: Any = bot.steps[0].settings.create(bot.new_call(), bot)
    finally:
        await bot.close()
    assert processor.client.settings.system == "You talk to {caller.number} ${X} (gold)."
    assert plain.client.settings.system == "You talk to a caller (new customer)."
    assert processor.client.sdk is plain.client.sdk  # one SDK client for the bot's calls


def remember(**arguments: Any) -> dict[str, Any]:
    """A Python tool that gives back what it got."""
    return arguments


async def test_tool_arguments_take_the_caller_context() -> None:
    tools = {
        "note": ToolSettings.model_validate(
            {
                "parameters": {"phone": {"type": "string"}, "who": {"type": "string"}},
                "python": "test_caller_context:remember",
            }
        )
    }
    toolbox = build_toolbox(["note"], tools)
    caller = CallerContext(number="5550100", name="{customer.name}")
    call = ToolCall("1", "note", {"phone": "{caller.number}", "who": "{caller.name|?}"})
    outcome = await toolbox.run(call, caller)
    assert outcome.arguments == {"phone": "5550100", "who": "{customer.name}"}
    assert '"phone": "5550100"' in outcome.result and not outcome.error
    assert outcome.duration_ms >= 0


@pytest.mark.parametrize("variables", [["number"], ["has space"]])
def test_caller_variables_are_checked(variables: list[str]) -> None:
    from voxpipe.bots.config import ConfigError, parse_bot

    with pytest.raises(ConfigError, match=r"caller\.variables"):
        parse_bot(f"name: x\npipeline: [{{vad: {{}}}}]\ncaller: {{variables: {variables}}}\n")


def test_templates_asking_for_context_the_bot_cannot_have_are_load_errors() -> None:
    from voxpipe.bots.config import ConfigError, parse_bot

    bot = """name: x
greeting: "Hi {customer.name|caller.nick|there}."
pipeline:
  - llm:
      provider: scripted
      tools: [note]
      intents:
        - {keywords: [hi], reply: "Hello {caller.name}"}
        - {keywords: [note], tool: {name: note, arguments: {phone: "{caller.number}"}}}
tools:
  note: {python: "test_caller_context:remember"}
"""
    with pytest.raises(ConfigError) as error:
        parse_bot(bot, "x.yaml")
    lines = [str(p) for p in error.value.problems]
    assert lines == [
        "x.yaml:2:11: greeting: {customer.name} needs the customers of call_records "
        "(a call_records: block, and caller.customers: true)",
        "x.yaml:2:11: greeting: {caller.nick} is not kept: list nick under caller.variables "
        "(kept: none)",
        "x.yaml:8:11: pipeline[0].llm.intents[0]: reply uses {caller.name}: the caller context "
        "fills the greeting, system prompts and tool arguments, not scripted replies",
    ]
