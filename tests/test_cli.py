"""``run-pipeline``: exit codes and messages, run as the installed console script."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import AUDIO

from voxpipe.bots.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "tests" / "configs"
SCRIPT = Path(sys.executable).with_name("run-pipeline")


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run the console script; never longer than two minutes."""
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "command",
    [[], ["serve"], ["call"], ["test"], ["validate"], ["list"], ["schema"], ["docs"], ["graph"]],
)
def test_help_everywhere(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: run-pipeline")


def test_validate_a_valid_file() -> None:
    result = run("validate", str(CONFIGS / "valid.yaml"))
    assert result.returncode == 0
    assert result.stdout == f"{CONFIGS / 'valid.yaml'}: valid ('front-desk', 2 steps)\n"


def test_validate_counts_a_single_step_in_the_singular(tmp_path: Path) -> None:
    bot = tmp_path / "one.yaml"
    bot.write_text("name: one\npipeline: [echo: ]\n")
    assert run("validate", str(bot)).stdout == f"{bot}: valid ('one', 1 step)\n"


def test_validate_prints_every_problem_of_every_file_and_exits_1() -> None:
    valid, typos, wrong = (
        CONFIGS / n for n in ("valid.yaml", "unknown_key.yaml", "wrong_types.yaml")
    )
    result = run("validate", str(valid), str(typos), str(wrong))
    assert result.returncode == 1
    no_traceback(result)
    lines = result.stdout.splitlines()
    assert lines[0].endswith("valid ('front-desk', 2 steps)")
    assert f"{typos}:2:1: trasport: unknown key 'trasport' (did you mean 'transport'?)" in lines
    assert sum(line.startswith(f"{typos}:") for line in lines) == 3
    assert sum(line.startswith(f"{wrong}:") for line in lines) == 5
    assert lines[-1] == "2 of 3 files are invalid"


def test_validate_a_missing_file() -> None:
    result = run("validate", "no/such/bot.yaml")
    assert result.returncode == 1
    assert (
        result.stdout == "no/such/bot.yaml:0:0: cannot read the file: No such file or directory\n"
    )


@pytest.mark.parametrize("name", ["syntax_error.yaml", "missing_required.yaml"])
def test_serve_refuses_an_invalid_file_and_starts_nothing(name: str) -> None:
    result = run("serve", str(CONFIGS / name), "--port", "0")
    assert result.returncode == 1
    no_traceback(result)
    assert result.stdout == ""
    assert result.stderr.startswith(f"{CONFIGS / name}:")
    assert "; nothing started" in result.stderr


def test_call_an_invalid_file_prints_each_problem_with_its_place() -> None:
    bot = CONFIGS / "unknown_key.yaml"
    result = run("call", str(bot), "--say", "hello")
    assert result.returncode == 1
    no_traceback(result)
    assert "internal error" not in result.stderr
    assert f"{bot}:2:1: trasport: unknown key 'trasport'" in result.stderr.splitlines()[0]


def test_call_with_a_file_that_is_not_a_wav_is_one_clear_line(tmp_path: Path) -> None:
    text = tmp_path / "words.wav"
    text.write_text("hello, I would like to check my order\n" * 100)
    result = run("call", str(CONFIGS / "valid.yaml"), "--wav", str(text))
    assert result.returncode == 1
    no_traceback(result)
    assert (
        result.stderr
        == f"run-pipeline call: {text}: not a PCM WAV file (file does not start with RIFF id)\n"
    )


def test_call_refuses_a_record_path_it_cannot_write_before_calling(tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "dir" / "heard.wav"
    result = run(
        "call",
        str(CONFIGS / "valid.yaml"),
        "--wav",
        str(AUDIO / "caller_yes_8k.wav"),
        "--record",
        str(out),
    )
    assert result.returncode == 1
    no_traceback(result)
    assert result.stdout == ""  # no call was placed
    assert result.stderr.startswith("run-pipeline call: [Errno 2] No such file or directory")


def test_serve_reports_a_provider_that_cannot_start(tmp_path: Path) -> None:
    (tmp_path / "voxpipe_broken_provider.py").write_text(
        textwrap.dedent(
            '''
            from voxpipe.pipelines.settings import ProcessorSettings, ProviderError

            class BrokenSettings(ProcessorSettings):
                """Needs a model that is not installed."""

                async def prepare(self, bot):
                    raise ProviderError("model 'large-v9' is not installed (pip install ...)")
            '''
        )
    )
    dist = tmp_path / "voxpipe_broken_provider-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[voxpipe.processors]\nbroken = voxpipe_broken_provider:BrokenSettings\n"
    )
    bot = tmp_path / "bot.yaml"
    bot.write_text(
        "name: b\ntransport: {audiosocket: {listen: '127.0.0.1:0'}}\npipeline: [broken: ]\n"
    )
    result = run("serve", str(bot), env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1
    no_traceback(result)
    assert f"{bot}: a provider cannot start: model 'large-v9' is not installed" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["call", "b.yaml"], "give the caller's words: --say TEXT or --wav FILE"),
        (["test", "b.yaml", "--concurrency", "0"], "at least 1"),
        (["test", "b.yaml", "--connect", "nowhere"], "expected HOST:PORT"),
        (["call", "b.yaml", "--say", "hi", "--connect", "nowhere"], "expected HOST:PORT"),
        (["call", "b.yaml", "--say", "hi", "--rate", "44100"], "invalid choice: 44100"),
        (["call", "b.yaml", "--say", "hi", "--dtmf", "12x"], "DTMF digits are 0-9 * # A-D"),
        (["serve", "b.yaml", "--port", "http"], "expected a TCP port"),
        (["serve", "b.yaml", "--workers", "0"], "at least 1"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_usage_mistakes_exit_2_with_one_clear_line(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    no_traceback(result)
    assert message in result.stderr.splitlines()[-1]


def test_say_and_wav_turns_keep_the_order_they_were_given_in() -> None:
    args = build_parser().parse_args(
        ["call", "bot.yaml", "--say", "one", "--wav", "two.wav", "--say", "three"]
    )
    assert args.turns == [("say", "one"), ("wav", "two.wav"), ("say", "three")]


def test_call_arguments_reach_the_simulated_caller_under_their_names() -> None:
    args = build_parser().parse_args(
        [
            "call",
            "bot.yaml",
            "--say",
            "where is my order",
            "--rate",
            "16000",
            "--dtmf",
            "12#",
            "--record",
            "out.wav",
            "--connect",
            "127.0.0.1:9092",
            "--json",
        ]
    )
    assert (args.bot, args.turns, args.rate, args.dtmf) == (
        "bot.yaml",
        [("say", "where is my order")],
        16000,
        "12#",
    )
    assert (args.record, args.connect, args.json) == ("out.wav", "127.0.0.1:9092", True)


def test_graph_draws_the_chain_as_mermaid() -> None:
    result = run("graph", str(CONFIGS / "valid.yaml"))
    assert result.returncode == 0
    assert result.stdout == textwrap.dedent(
        """\
        flowchart LR
            in["audiosocket in<br/>127.0.0.1:9092, 8000 Hz"]
            s0["echo<br/>passthrough=false"]
            s1["echo"]
            a0["conversation<br/>added: call state, turns, session store"]
            out["audiosocket out"]
            in --> s0 --> s1 --> a0 --> out
        """
    )


def test_graph_of_an_invalid_file_exits_1() -> None:
    result = run("graph", str(CONFIGS / "unknown_type.yaml"))
    assert result.returncode == 1
    assert "unknown processor type 'ecko'" in result.stderr


def test_schema_to_stdout_and_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    to_file = run("schema", "--builtin-only", "-o", str(out))
    to_stdout = run("schema", "--builtin-only")
    assert to_file.returncode == 0 and to_stdout.returncode == 0
    assert out.read_text() == to_stdout.stdout
    assert '"title": "voxpipe bot"' in to_stdout.stdout


def test_schema_to_an_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    result = run("schema", "-o", str(tmp_path / "no" / "such" / "dir" / "schema.json"))
    assert result.returncode == 1
    no_traceback(result)
    assert result.stderr.startswith("run-pipeline: error: cannot write ")


STALE_PAGE = "# bot\n\n<!-- yaml-reference:start -->\nSTALE\n<!-- yaml-reference:end -->\n"


def test_docs_refreshes_the_reference_page_by_default(tmp_path: Path) -> None:
    page = tmp_path / "docs" / "reference.md"
    page.parent.mkdir()
    page.write_text(STALE_PAGE)
    first = run("docs", "--builtin-only", cwd=tmp_path)
    second = run("docs", "--builtin-only", cwd=tmp_path)
    assert first.stdout == "docs/reference.md: updated\n"
    assert second.stdout == "docs/reference.md: already up to date\n"
    text = page.read_text()
    assert "STALE" not in text
    assert "### `transport.audiosocket`" in text
    assert text.startswith("# bot\n\n<!-- yaml-reference:start -->\n### Top level")


@pytest.mark.parametrize("option", ["--file", "--readme"])
def test_docs_refreshes_the_reference_in_another_page(tmp_path: Path, option: str) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(STALE_PAGE)
    first = run("docs", "--builtin-only", option, str(readme))
    second = run("docs", "--builtin-only", option, str(readme))
    assert first.stdout == f"{readme}: updated\n"
    assert second.stdout == f"{readme}: already up to date\n"
    text = readme.read_text()
    assert "STALE" not in text
    assert "### `transport.audiosocket`" in text
    assert text.startswith("# bot\n\n<!-- yaml-reference:start -->\n### Top level")


def test_docs_away_from_the_repository_says_what_to_do(tmp_path: Path) -> None:
    result = run("docs", "--builtin-only", cwd=tmp_path)
    assert result.returncode == 1
    no_traceback(result)
    assert result.stderr.startswith("run-pipeline: error: docs/reference.md not found: ")
    assert "--file FILE" in result.stderr and "--print" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_docs_prints_the_reference() -> None:
    result = run("docs", "--builtin-only", "--print")
    assert result.returncode == 0
    assert result.stdout.startswith("### Top level")
    assert "### `transport.audiosocket`" in result.stdout
    assert (
        result.stdout
        == (ROOT / "docs" / "reference.md")
        .read_text()
        .split("<!-- yaml-reference:start -->\n", 1)[1]
        .split("<!-- yaml-reference:end -->", 1)[0]
    )


def test_secrets_stay_out_of_output_and_debug_logs() -> None:
    env = {"VOXPIPE_TEST_ARI_PASSWORD": "hunter2-from-env"}
    for args in (["-v", "validate"], ["graph"], ["validate", "-v"]):
        result = run(*args, str(CONFIGS / "valid.yaml"), env=env)
        assert result.returncode == 0
        assert "hunter2-from-env" not in result.stdout + result.stderr
    verbose = run("-v", "validate", str(CONFIGS / "valid.yaml"), env=env)
    assert "pipeline[0] echo {'passthrough': False}" in verbose.stderr


def test_importing_the_engine_is_fast() -> None:
    """Measured in a fresh interpreter; the 150 ms target is tracked by bench/frames.py."""
    code = (
        "import time; t = time.perf_counter(); import voxpipe.bots.bot, voxpipe.bots.cli;"
        " print(time.perf_counter() - t)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert float(result.stdout) < 1.0
    heavy = (
        "import sys, voxpipe.bots.bot;"
        " print(sorted({'numpy', 'anthropic', 'grpc'} & set(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", heavy], capture_output=True, text=True, timeout=120, check=True
    )
    assert loaded.stdout.strip() == "[]"


def test_serve_on_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    bot = tmp_path / "echo.yaml"
    bot.write_text(
        "name: e\ntransport: {audiosocket: {listen: '127.0.0.1:0'}}\npipeline: [echo: ]\n"
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run("serve", str(bot), "--port", str(busy.getsockname()[1]))
    assert result.returncode == 1
    no_traceback(result)
    assert result.stderr.startswith(f"run-pipeline: error: cannot serve {bot}: ")


def test_serve_names_the_http_listener_whose_port_is_busy(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        listen = f"127.0.0.1:{busy.getsockname()[1]}"
        bot = tmp_path / "echo.yaml"
        bot.write_text(
            "name: e\ntransport: {audiosocket: {listen: '127.0.0.1:0'}}\npipeline: [echo: ]\n"
            f"http: {{listen: '{listen}'}}\n"
        )
        result = run("serve", str(bot))
    assert result.returncode == 1
    no_traceback(result)
    assert f"the HTTP API cannot listen on {listen}: Address already in use" in result.stderr


def test_serve_on_ipv6_prints_bracketed_addresses_asterisk_can_dial(tmp_path: Path) -> None:
    bot = tmp_path / "echo.yaml"
    bot.write_text("name: e\npipeline: [echo: ]\n")
    proc = subprocess.Popen(
        [str(SCRIPT), "serve", str(bot), "--host", "::1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    banner = []
    try:
        for line in proc.stdout:
            banner.append(line)
            if "test call:" in line:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    text = "".join(banner)
    assert "listening for AudioSocket on [::1]:" in text, text
    assert "AudioSocket(${UUID()},[::1]:" in text and "--connect [::1]:" in text, text


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    """``run-pipeline schema | head -c 10``: no traceback, no message."""
    proc = subprocess.Popen(
        [str(SCRIPT), "schema"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 1
    assert err == ""


async def test_call_connect_listens_to_a_long_greeting_before_speaking() -> None:
    """``call --connect`` cannot know the greeting, so it waits for one that starts (here 3 s long)
    to end, instead of talking over it and taking its end for the reply."""
    import asyncio

    from voxpipe.transports.audiosocket.caller import VOICE_PEAK
    from voxpipe.transports.audiosocket.protocol import Kind, encode, read_message

    frame = (VOICE_PEAK * 4).to_bytes(2, "little", signed=True) * 160  # 20 ms at 8 kHz
    heard: list[float] = []
    greeting_end: list[float] = []

    async def bot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        await read_message(reader, 5.0)  # the call's UUID

        async def greet() -> None:
            for _ in range(150):
                writer.write(encode(Kind.AUDIO_8K, frame))
                await asyncio.sleep(0.02)
            greeting_end.append(loop.time())

        greeting = asyncio.create_task(greet())
        while not heard:
            message = await read_message(reader, 5.0)
            if message.kind is Kind.AUDIO_8K and any(message.payload):
                heard.append(loop.time())
        await greeting
        writer.write(encode(Kind.HANGUP))
        writer.close()

    server = await asyncio.start_server(bot, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    wav = AUDIO / "caller_operator_8k.wav"
    async with server:
        proc = await asyncio.create_subprocess_exec(
            str(SCRIPT),
            "call",
            str(CONFIGS / "valid.yaml"),
            "--connect",
            f"127.0.0.1:{port}",
            "--wav",
            str(wav),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert heard and greeting_end and heard[0] >= greeting_end[0], out.decode()
    assert "still speaking" not in out.decode()
    assert "hung up by: bot" in out.decode()


def _running(pid: int) -> bool:
    """Whether a process exists and has not exited (a zombie waits only to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _descendants(pid: int) -> set[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_serve_loads_the_models_in_workers_sizes_max_calls_and_stops_them(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(SCRIPT), "serve", str(ROOT / "configs" / "demo.yaml"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "test call:" in line:
                break
        workers = _descendants(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[0]
    text = "".join(lines)
    assert "loading models (stt whisper, tts piper) in " in text, text
    limit = re.search(r"max_calls auto = (\d+)", text)
    assert limit is not None, text
    assert f"up to {limit.group(1)} calls" in text
    assert proc.returncode == 0, rest
    # The model workers (and their fork server) ran beside the bot, and stopped with it.
    assert len(workers) >= 2
    deadline = time.monotonic() + 10
    while [pid for pid in workers if _running(pid)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if _running(pid)]
