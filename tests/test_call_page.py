"""The page at / (``http: {web: true}``) in a real browser: Debian's chromium driven by
Playwright, with a WAV file as the microphone, talking to the offline demo over the call API."""

from __future__ import annotations

import contextlib
import re
import shutil
import struct
import wave
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

from helpers import AUDIO
from playwright.async_api import Browser, async_playwright

from voxpipe.bots.bot import Bot
from voxpipe.http import OperationsApi

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The greeting lasts about 3.5 s; the caller speaks once it is over.
GREETING_S = 4.5


def demo_with_page(token: str | None = None) -> Bot:
    text = (ROOT / "configs" / "demo.yaml").read_text()
    text = text.replace('listen: "0.0.0.0:9092"', 'listen: "127.0.0.1:0"')
    text, added = re.subn(r"(?m)^(    max_calls: .*\n)", r"\1  websocket: {}\n", text)
    assert added == 1, "configs/demo.yaml no longer has transport.audiosocket.max_calls"
    text += 'http: {listen: "127.0.0.1:0", web: true'
    text += f", token: {token}}}\n" if token else "}\n"
    return Bot.from_yaml(text)


def microphone(path: Path) -> Path:
    """A WAV file for the fake microphone: quiet through the greeting, then the caller asks
    about an order, then quiet again."""
    with wave.open(str(AUDIO / "caller_order_status_16k.wav")) as wav:
        rate, pcm = wav.getframerate(), wav.readframes(wav.getnframes())
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(int(rate * GREETING_S) * 2) + pcm + bytes(rate * 4))
    return path


@contextlib.asynccontextmanager
async def chromium(mic: Path | None = None) -> AsyncIterator[Browser]:
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
    ]
    if mic is not None:
        args.append(f"--use-file-for-fake-audio-capture={mic}%noloop")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def serving(bot: Bot) -> AsyncIterator[OperationsApi]:
    await bot.prepare()
    api = OperationsApi.for_bot(bot)
    assert api is not None
    await api.start()
    try:
        yield api
    finally:
        await api.stop()
        await bot.close()


async def test_a_caller_talks_to_the_demo_from_the_page(tmp_path: Path) -> None:
    """Call, speak into the (fake) microphone, read the bot's answer in the transcript with the
    turn's latency, hear it (audio reached the page's player), hang up."""
    mic = microphone(tmp_path / "mic.wav")
    async with serving(demo_with_page("s3cret")) as api, chromium(mic) as browser:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{api.port}/#token=s3cret")
        await page.click("#call")
        answered = "#transcript li.bot:last-child"
        await page.wait_for_function(
            f"document.querySelector('{answered}')?.innerText.includes('order number?')",
            timeout=40_000,
        )
        transcript = await page.inner_text("#transcript")
        assert "Hello, this is the ACME order desk." in transcript
        assert "status of my order" in transcript.lower()
        assert "ms" in await page.inner_text("#transcript li.bot .latency")
        assert "mean" in await page.inner_text("#latencies")
        assert "In a call" in await page.inner_text("#status")
        heard_s = await page.evaluate("audioBytes / 2 / ctx.sampleRate")
        assert heard_s > 3.0  # the greeting and the answer reached the player
        assert await page.is_enabled("#hangup") and not await page.is_enabled("#call")
        assert api.call_api is not None and len(api.call_api.calls) == 1
        await page.click("#hangup")
        await page.wait_for_function("document.querySelector('#call').disabled === false")
        assert await page.inner_text("#status") == "You hung up."
    assert api.call_api is not None and api.call_api.calls == {}


def png_colours(png: bytes) -> tuple[int, int, int]:
    """Width, height and the number of distinct byte values in the image data of a PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, data, width, height = 8, b"", 0, 0
    while pos < len(png):
        (size,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + size]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            data += body
        pos += 12 + size
    return width, height, len(set(zlib.decompress(data)))


async def test_the_page_renders_its_parts(tmp_path: Path) -> None:
    """Title, call and hang-up buttons, token field, transcript, latency: shown, and a
    screenshot of them that is a real picture (kept as a test artefact)."""
    bot = Bot.from_yaml(
        "name: front-desk\ntransport:\n  websocket: {}\n"
        'http: {listen: "127.0.0.1:0", web: true}\npipeline:\n  - echo: {}\n'
    )
    async with serving(bot) as api, chromium() as browser:
        page = await browser.new_page(viewport={"width": 900, "height": 600})
        response = await page.goto(f"http://127.0.0.1:{api.port}/")
        assert response is not None and response.status == 200
        assert await page.title() == "front-desk · voxpipe"
        for part in ("h1", "#status", "#call", "#hangup", "#token", "#transcript", "#summary"):
            assert await page.is_visible(part), part
        assert await page.is_enabled("#call") and not await page.is_enabled("#hangup")
        shot = tmp_path / "page.png"
        await page.screenshot(path=str(shot))
    png = shot.read_bytes()
    width, height, values = png_colours(png)
    assert (width, height) == (900, 600)
    assert len(png) > 5_000 and values > 50, "the screenshot is blank"
