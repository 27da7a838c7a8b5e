"""The Asterisk samples in asterisk/ hang together, and with the bots in configs/.

Every context and extension the dialplan jumps to exists, every application and function is a
real Asterisk one, the AudioSocket addresses are where a bot listens, the outcome the dialplan
asks for comes from that bot's HTTP API, the transfer targets of the bots exist, and ARI's user,
port and app match the bots that use ARI.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from voxpipe.bots.config import BotConfig, LoadedConfig, load_bot

ROOT = Path(__file__).resolve().parents[1]
ASTERISK = ROOT / "asterisk"
BOTS = sorted(
    p
    for p in [*(ROOT / "configs").glob("*.yaml"), *(ROOT / "asterisk").glob("*.yaml")]
    if not p.name.endswith(".test.yaml")  # conversation tests, not bots
)

# Dialplan applications of Asterisk 20-22, from docs.asterisk.org
# (Asterisk_22_Documentation/API_Documentation/Dialplan_Applications).
ASTERISK_APPLICATIONS = frozenset(
    """
    ADSIProg AELSub AGI AMD AddQueueMember AgentLogin AgentRequest AlarmReceiver Answer
    AttendedTransfer AudioSocket Authenticate BackGround BackgroundDetect BlindTransfer Bridge
    BridgeAdd BridgeWait Broadcast Busy CELGenUserEvent CallCompletionCancel
    CallCompletionRequest ChanIsAvail ChanSpy ChannelRedirect ClearHash ConfBridge ConfKick
    Congestion ContinueWhile ControlPlayback DBdeltree DISA DateTime DeadAGI Dial Dictate
    Directory DumpChan EAGI Echo Else ElseIf EndIf EndWhile Exec ExecIf ExecIfTime ExitIf
    ExitWhile ExtenSpy ExternalIVR Festival Flash FollowMe ForkCDR GetCPEID Gosub GosubIf Goto
    GotoIf GotoIfTime Hangup HangupCauseClear IAX2Provision IVRDemo If Incomplete JACK Log
    MP3Player MSet MeetMe MessageSend Milliwatt MixMonitor Morsecode MusicOnHold NoOp
    Originate PJSIPHangup PJSIPNotify Page Park ParkAndAnnounce ParkedCall PauseQueueMember
    Pickup PickupChan PlayTones Playback PrivacyManager Proceeding Progress Queue QueueLog
    QueueUpdate RaiseException Read ReadExten ReceiveFAX Record Reload RemoveQueueMember
    ResetCDR RetryDial Return Ringing SayAlpha SayAlphaCase SayDigits SayNumber SayPhonetic
    SendDTMF SendFAX SendImage SendText SendURL Set SetAMAFlags SoftHangup Stasis
    StopMixMonitor StopPlayTones System Transfer TryExec TrySystem UnpauseQueueMember
    UserEvent Verbose VoiceMail VoiceMailMain Wait WaitExten WaitForNoise WaitForRing
    WaitForSilence WaitUntil While Zapateller
    """.split()  # noqa: SIM905 - the list as the docs print it
)

# Dialplan functions used by the samples, from the same documentation (Dialplan_Functions).
ASTERISK_FUNCTIONS = frozenset({"CALLERID", "CURL", "CURLOPT", "CUT", "URIENCODE", "UUID"})

_CONTEXT = re.compile(r"^\[([^\]]+)\]")
_EXTEN = re.compile(r"^exten\s*=>\s*([^,]+),\s*(\w+)\s*,\s*(\w+)\((.*)\)\s*$")
_SAME = re.compile(r"^same\s*=>\s*(\w+)(?:\((\w+)\))?\s*,\s*(\w+)\((.*)\)\s*$")
_FUNCTION = re.compile(r"\$\{([A-Z_]+)\(")


@dataclass
class Step:
    """One dialplan priority: where it is and what it runs."""

    context: str
    extension: str
    app: str
    args: str
    line: int
    label: str = ""


@dataclass
class Dialplan:
    """extensions.conf as contexts -> extensions, and every step in order."""

    contexts: dict[str, set[str]] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)

    def has(self, context: str, extension: str) -> bool:
        return any(_matches(e, extension) for e in self.contexts.get(context, ()))


def _matches(pattern: str, extension: str) -> bool:
    if not pattern.startswith("_"):
        return pattern == extension
    regex = ""
    for part in re.findall(r"\[[^\]]+\]|.", pattern[1:]):
        regex += {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]", ".": ".+", "!": ".*"}.get(
            part.upper(), part if part.startswith("[") else re.escape(part)
        )
    return re.fullmatch(regex, extension) is not None


def parse_dialplan(text: str) -> Dialplan:
    plan = Dialplan()
    context = extension = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if m := _CONTEXT.match(line):
            context = m.group(1)
            plan.contexts.setdefault(context, set())
        elif m := _EXTEN.match(line):
            extension = m.group(1).strip()
            plan.contexts[context].add(extension)
            plan.steps.append(Step(context, extension, m.group(3), m.group(4), number))
        elif m := _SAME.match(line):
            step = Step(context, extension, m.group(3), m.group(4), number, m.group(2) or "")
            plan.steps.append(step)
        elif context != "general":
            raise AssertionError(f"extensions.conf:{number}: cannot read {raw!r}")
    return plan


def parse_conf(text: str) -> dict[str, dict[str, str]]:
    """An Asterisk .conf file: sections of ``key = value`` (later sections of a name merge)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if m := _CONTEXT.match(line):
            current = sections.setdefault(m.group(1), {})
        elif "=" in line:
            key, _, value = line.partition("=")
            current[key.strip()] = value.lstrip(">").strip()
    return sections


def goto_targets(step: Step) -> list[tuple[str, str]]:
    """(context, extension) each Goto/GotoIf/Dial(Local/...) of a step may jump to.

    A jump to a priority label stays in the step's extension (see ``test_every_label_exists``);
    a target computed at run time (``${...}``, the bot's transfer) is checked against the bots.
    """
    if step.app in ("Goto", "Gosub"):
        labels = [step.args]
    elif step.app == "GotoIf":
        labels = [x for x in step.args.split("?", 1)[1].split(":") if x]
    elif step.app == "Dial":
        return [
            (m.group(2), m.group(1)) for m in re.finditer(r"Local/([^@/&,]+)@([^/&,]+)", step.args)
        ]
    else:
        return []
    targets = []
    for label in labels:
        if "${" in label:
            continue
        parts = [p.strip() for p in label.split(",")]
        if len(parts) == 3:
            targets.append((parts[0], parts[1]))
        elif len(parts) == 2:
            targets.append((step.context, parts[0]))
    return targets


def bot_port(config: BotConfig) -> int:
    return config.transport.audiosocket.port


@pytest.fixture(scope="module")
def plan() -> Dialplan:
    return parse_dialplan((ASTERISK / "extensions.conf").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def loaded_bots() -> dict[str, LoadedConfig]:
    assert BOTS, "configs/ holds no bot"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ARI_PASSWORD", "change-me")
        return {path.name: load_bot(path) for path in BOTS}


@pytest.fixture(scope="module")
def bots(loaded_bots: dict[str, LoadedConfig]) -> dict[str, BotConfig]:
    return {name: loaded.config for name, loaded in loaded_bots.items()}


def test_the_dialplan_has_the_three_ways_in_and_the_operator_context(plan: Dialplan) -> None:
    apps = {s.app for s in plan.steps}
    assert {"AudioSocket", "Dial", "Stasis"} <= apps
    assert any(s.app == "Dial" and s.args.startswith("AudioSocket/") for s in plan.steps)
    assert "transfer-to-operator" in plan.contexts
    assert any(
        s.app in ("Queue", "Dial") for s in plan.steps if s.context == "transfer-to-operator"
    )


def test_every_application_is_a_real_asterisk_application(plan: Dialplan) -> None:
    unknown = [f"line {s.line}: {s.app}" for s in plan.steps if s.app not in ASTERISK_APPLICATIONS]
    assert unknown == []


def test_every_function_is_a_real_asterisk_function(plan: Dialplan) -> None:
    used = {(s.line, f) for s in plan.steps for f in _FUNCTION.findall(s.args)}
    assert {"CURL", "CUT", "UUID"} <= {f for _, f in used}
    unknown = [f"line {n}: {f}" for n, f in sorted(used) if f not in ASTERISK_FUNCTIONS]
    assert unknown == []


def test_every_label_exists(plan: Dialplan) -> None:
    labels = {(s.context, s.extension, s.label) for s in plan.steps if s.label}
    jumps = [
        (s, target)
        for s in plan.steps
        if s.app == "GotoIf"
        for target in s.args.split("?", 1)[1].split(":")
        if target and "," not in target
    ]
    assert jumps, "the outcome branches jump to labels"
    missing = [f"line {s.line}: {t}" for s, t in jumps if (s.context, s.extension, t) not in labels]
    assert missing == []


def test_every_jump_lands_on_an_existing_extension(plan: Dialplan) -> None:
    targets = [(s, t) for s in plan.steps for t in goto_targets(s)]
    assert targets, "the samples jump to the transfer context"
    missing = [f"line {s.line}: {c},{e}" for s, (c, e) in targets if not plan.has(c, e)]
    assert missing == []


def test_the_audiosocket_application_is_answered_first(plan: Dialplan) -> None:
    for step in plan.steps:
        if step.app == "AudioSocket":
            before = [
                s.app
                for s in plan.steps
                if (s.context, s.extension) == (step.context, step.extension) and s.line < step.line
            ]
            assert "Answer" in before, f"line {step.line}: AudioSocket() needs Answer() first"
            after = [
                s
                for s in plan.steps
                if (s.context, s.extension) == (step.context, step.extension) and s.line > step.line
            ]
            assert after and goto_targets(after[0]), "after AudioSocket() the dialplan goes on"


def test_audiosocket_addresses_are_where_a_bot_listens(
    plan: Dialplan, bots: dict[str, BotConfig]
) -> None:
    addresses = []
    for step in plan.steps:
        if step.app == "AudioSocket":
            uuid_arg, address = step.args.split(",")[:2]
            assert uuid_arg == "${VOXPIPE_ID}"
            addresses.append((step.line, address))
        elif step.app == "Dial" and step.args.startswith("AudioSocket/"):
            _tech, address, uuid_arg, *options = step.args.split(",")[0].split("/")
            assert uuid_arg == "${VOXPIPE_ID}"
            assert options == ["c(slin16)"]
            addresses.append((step.line, address))
    assert len(addresses) == 2
    for line, address in addresses:
        host, _, port = address.rpartition(":")
        serving = [
            c.transport.audiosocket
            for c in bots.values()
            if bot_port(c) == int(port) and c.transport.audiosocket.host in (host, "0.0.0.0", "::")
        ]
        assert serving, f"line {line}: no bot in configs/ listens on {address}"
        # Asterisk runs on the same host in the samples: it connects from the loopback address.
        for settings in serving:
            networks = [ipaddress.ip_network(n, strict=False) for n in settings.allow_from]
            assert any(ipaddress.ip_address(host) in n for n in networks), address


def test_after_the_bot_the_dialplan_asks_the_bot_how_the_call_ended(
    plan: Dialplan, bots: dict[str, BotConfig]
) -> None:
    """100 and 200 give the call a UUID, pass it to the bot, then ask its HTTP API for the
    outcome and branch on the lines it answers (voxpipe.sessions.outcomes)."""
    bot_steps = [
        s for s in plan.steps if s.app == "AudioSocket" or s.args.startswith("AudioSocket/")
    ]
    assert len(bot_steps) == 2
    for bot_step in bot_steps:
        own = [
            s
            for s in plan.steps
            if (s.context, s.extension) == (bot_step.context, bot_step.extension)
        ]
        before = [s for s in own if s.line < bot_step.line]
        after = [s for s in own if s.line > bot_step.line]
        assert any(s.app == "Set" and s.args == "VOXPIPE_ID=${UUID()}" for s in before)
        assert ("voxpipe-outcome", "s") in {t for s in after for t in goto_targets(s)}
    asking = [s for s in plan.steps if "CURL(" in s.args and "/outcome" in s.args]
    assert len(asking) == 1 and asking[0].context == "voxpipe-outcome"
    url = re.fullmatch(r"OUTCOME=\$\{CURL\((http://([^/]+)/[^)]*)\)\}", asking[0].args)
    assert url, asking[0].args
    assert url.group(1).endswith("/calls/${VOXPIPE_ID}/outcome")
    host, _, port = url.group(2).rpartition(":")
    addresses = [
        s.args.split(",")[1] if s.app == "AudioSocket" else s.args.split("/")[1] for s in bot_steps
    ]
    audiosocket_ports = {int(address.rpartition(":")[2]) for address in addresses}
    answering = [
        name
        for name, c in bots.items()
        if c.http is not None
        and c.http.listen.rpartition(":")[2] == port
        and c.http.listen.rpartition(":")[0] in (host, "0.0.0.0")
        and bot_port(c) in audiosocket_ports
    ]
    assert answering, f"no bot that Asterisk reaches has its HTTP API on {url.group(2)}"
    branches = " ".join(s.args for s in plan.steps if s.context == "voxpipe-outcome")
    for line in ("transfer", "hangup", "caller"):
        assert f'"{line}"' in branches
    transfer = [s for s in plan.steps if s.context == "voxpipe-outcome" and s.app == "Goto"]
    assert transfer[0].args == ",".join(f"${{CUT(OUTCOME,\\,,{n})}}" for n in (2, 3, 4))


def test_before_the_bot_the_dialplan_posts_who_is_calling(
    plan: Dialplan, bots: dict[str, BotConfig]
) -> None:
    """100 and 200 tell the bot the caller's number and name, form-encoded, to the HTTP API of
    the bot they connect to, for the UUID they give the call (voxpipe.records.context)."""
    for app in ("AudioSocket", "Dial"):
        (bot_step,) = [s for s in plan.steps if s.app == app and "AudioSocket" in f"{app}{s.args}"]
        own = [
            s
            for s in plan.steps
            if (s.context, s.extension) == (bot_step.context, bot_step.extension)
        ]
        before = [s for s in own if s.line < bot_step.line]
        assert [s.args for s in before if s.app == "Gosub"] == ["voxpipe-context,s,1"]
        assert before[-1].app == "Gosub"  # after the UUID is set, just before connecting
    posting = [s for s in plan.steps if s.context == "voxpipe-context"]
    assert posting[-1].app == "Return"
    (curl,) = [s for s in posting if "CURL(" in s.args]
    found = re.fullmatch(
        r"\w+=\$\{CURL\((http://([^/]+)/calls/\$\{VOXPIPE_ID\}/context),(.*)\)\}", curl.args
    )
    assert found, curl.args
    fields = dict(part.split("=", 1) for part in found.group(3).split("&"))
    assert fields == {
        "number": "${URIENCODE(${CALLERID(num)})}",
        "name": "${URIENCODE(${CALLERID(name)})}",
    }
    port = found.group(2).rpartition(":")[2]
    assert any(c.http is not None and c.http.listen.endswith(f":{port}") for c in bots.values())
    assert any(s.app == "Set" and s.args.startswith("CURLOPT(httptimeout)=") for s in posting)


def transfer_targets(loaded: LoadedConfig) -> set[tuple[str, str]]:
    """Where a bot's `transfer` tool sends callers (the tool's defaults: default, 0)."""
    used = "transfer" in loaded.config.tools or any(
        "transfer" in (getattr(step.settings, "tools", None) or []) for step in loaded.steps
    )
    if not used:
        return set()
    tool = loaded.config.tools.get("transfer")
    context = (tool.context if tool else None) or "default"
    extension = (tool.extension if tool else None) or "0"
    return {(context, extension)}


def test_bot_transfer_targets_exist_in_the_dialplan(
    plan: Dialplan, loaded_bots: dict[str, LoadedConfig]
) -> None:
    targets = {(n, *t) for n, loaded in loaded_bots.items() for t in transfer_targets(loaded)}
    targets |= {("design.md", "transfer-to-operator", "100"), ("tool defaults", "default", "0")}
    missing = [f"{n}: {c},{e}" for n, c, e in targets if not plan.has(c, e)]
    assert missing == []


def test_ari_samples_match_the_bots_that_use_ari(
    plan: Dialplan, bots: dict[str, BotConfig]
) -> None:
    http = parse_conf((ASTERISK / "http.conf").read_text(encoding="utf-8"))["general"]
    ari = parse_conf((ASTERISK / "ari.conf").read_text(encoding="utf-8"))
    assert http["enabled"] == "yes"
    assert ari["general"]["enabled"] == "yes"
    stasis_apps = {s.args.split(",")[0] for s in plan.steps if s.app == "Stasis"}
    assert "voxpipe" in stasis_apps
    users = {name for name, section in ari.items() if section.get("type") == "user"}
    assert "voxpipe" in users
    for name, config in bots.items():
        if config.ari is None:
            continue
        assert config.ari.app in stasis_apps, name
        assert config.ari.username in users, name
        assert config.ari.url.endswith(f":{http['bindport']}"), name


def test_the_operator_queue_and_phones_are_declared() -> None:
    queues = parse_conf((ASTERISK / "queues.conf").read_text(encoding="utf-8"))
    pjsip = parse_conf((ASTERISK / "pjsip.conf").read_text(encoding="utf-8"))
    plan_text = (ASTERISK / "extensions.conf").read_text(encoding="utf-8")
    queue_names = set(re.findall(r"Queue\(([^,)]+)", plan_text))
    assert queue_names and queue_names <= set(queues)
    for member in re.findall(
        r"^member\s*=>\s*PJSIP/(\S+)",
        (ASTERISK / "queues.conf").read_text(encoding="utf-8"),
        re.MULTILINE,
    ):
        assert member in pjsip
    contexts = parse_dialplan(plan_text).contexts
    for name, section in pjsip.items():
        if "context" in section:
            assert section["context"] in contexts, name


def test_docker_compose_wires_the_samples() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"asterisk", "bot", "redis"} <= set(services)
    mounted = [v.split(":")[0] for v in services["asterisk"]["volumes"]]
    for source in mounted:
        assert (ROOT / source).exists(), source
    assert {f"./asterisk/{n}" for n in ("extensions.conf", "http.conf", "ari.conf")} <= set(mounted)
    bot_files = re.findall(r"(?:configs|asterisk)/[\w.-]+\.yaml", str(services["bot"]))
    assert bot_files and all((ROOT / f).exists() for f in bot_files)
