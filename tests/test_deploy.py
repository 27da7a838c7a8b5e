"""Deployment, checked without a Docker engine or a cluster: the Dockerfile (hadolint, its COPY
sources, its extras), docker-compose.yml (``docker-compose config``), .env.example, the health
check script against a real API, and the Kubernetes manifests (kubernetes-validate, and that
they agree with the bot they run)."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from voxpipe.bots.config import HttpSettings, load_bot
from voxpipe.http import OperationsApi
from voxpipe.http.metrics import Metrics

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
BIN = Path(sys.executable).parent
PLACEHOLDER = re.compile(r"FROM_BENCH_[A-Z_]+")
# A Kubernetes resource quantity (apimachinery's resource.Quantity).
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
Completed = subprocess.CompletedProcess[str]
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:[:?-][^}]*)?\}")


# --- helpers -------------------------------------------------------------------------------------


def run(*command: str | Path, env: dict[str, str] | None = None) -> Completed:
    """Run ``command`` in the repository, its output captured as text."""
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, cwd=REPO, env=env
    )


def env_example() -> dict[str, str]:
    """The assignments of .env.example."""
    found: dict[str, str] = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            found[name.strip()] = value.strip()
    return found


@contextlib.contextmanager
def with_env(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = (REPO / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.strip().partition(" ") for line in joined.splitlines())
        if word
    ]


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's build stages, each the instructions from its FROM on."""
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile():
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (the last match decides)."""
    ignored = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        rule = line.strip()
        if not rule or rule.startswith("#"):
            continue
        negated = rule.startswith("!")
        pattern = rule.lstrip("!").strip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            ignored = not negated
    return ignored


def manifests() -> list[dict[str, Any]]:
    """Every Kubernetes resource in deploy/kubernetes."""
    found: list[dict[str, Any]] = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def resource(kind: str, name: str) -> dict[str, Any]:
    matches = [r for r in manifests() if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def bot_container() -> dict[str, Any]:
    containers = resource("Deployment", "voxpipe")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "bot")


def pod_env(**overrides: str) -> dict[str, str]:
    """The bot container's environment in the Deployment, with ``overrides``."""
    return {**{e["name"]: e["value"] for e in bot_container()["env"]}, **overrides}


def extras_closure(names: set[str], extras: dict[str, list[str]]) -> set[str]:
    """The requirements of ``names``, following ``voxpipe[...]`` references between extras."""
    found: set[str] = set()
    for name in names:
        for requirement in extras[name]:
            inner = re.fullmatch(r"voxpipe\[(.+)\]", requirement)
            if inner:
                found |= extras_closure({n.strip() for n in inner.group(1).split(",")}, extras)
            else:
                found.add(requirement)
    return found


# --- the image -----------------------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint() -> None:
    result = run(BIN / "hadolint", "--no-color", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_multi_stage_non_root_with_a_health_check_and_serve_as_entry_point() -> None:
    *build, runtime = stages()
    assert build, "a build stage, then the runtime stage"
    final = dict(runtime)  # the last instruction of each kind wins
    assert final["USER"].split(":")[0] not in ("", "0", "root")
    assert "voxpipe-healthcheck" in final["HEALTHCHECK"]
    assert final["ENTRYPOINT"] == '["run-pipeline", "serve"]'
    assert not any("pip install" in rest for _, rest in runtime), "installed in the build stage"


def test_every_file_the_dockerfile_copies_exists_and_is_in_the_build_context() -> None:
    copies = [rest for keyword, rest in dockerfile() if keyword == "COPY"]
    sources = []
    for arguments in copies:
        words = [word for word in shlex.split(arguments) if not word.startswith("--")]
        if any(word.startswith("--from") for word in shlex.split(arguments)):
            continue
        sources += words[:-1]
    assert "pyproject.toml" in sources and "voxpipe" in sources
    tracked = run("git", "ls-files").stdout.splitlines()
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such file"
        assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"
        inside = [f for f in tracked if f == source or f.startswith(source.rstrip("/") + "/")]
        assert inside, f"COPY {source}: nothing tracked by git"
        left_out = [f for f in inside if dockerignored(f) and "__pycache__" not in f]
        assert not left_out, f"COPY {source}: .dockerignore drops {left_out[:5]}"
    assert dockerignored(".env") and dockerignored(".venv/bin/python") and dockerignored(".git")


def test_the_image_installs_every_extra_but_dev_and_a_python_pyproject_allows() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    arguments = dict(
        rest.split("=", 1) for keyword, rest in dockerfile() if keyword == "ARG" and "=" in rest
    )
    installs = [rest for word, rest in dockerfile() if word == "RUN" and "pip install" in rest]
    assert installs == ['/opt/voxpipe/bin/pip install ".[${EXTRAS}]"']
    chosen = {name.strip() for name in arguments["EXTRAS"].split(",")}
    assert chosen <= set(extras), f"unknown extras {chosen - set(extras)}"
    every = extras_closure(set(extras) - {"dev"}, extras)
    assert extras_closure(chosen, extras) == every
    minimum = re.fullmatch(r">=(\d+)\.(\d+)", project["requires-python"])
    assert minimum is not None
    image = tuple(int(part) for part in arguments["PYTHON_VERSION"].split("."))
    assert image >= (int(minimum.group(1)), int(minimum.group(2)))


def test_the_images_bot_is_the_demo_with_container_listeners_and_redis() -> None:
    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    baked = yaml.safe_load((DEPLOY / "bot.yaml").read_text())
    for key in ("name", "greeting", "pipeline", "tools"):
        assert baked[key] == demo[key], f"deploy/bot.yaml {key} differs from configs/demo.yaml"
    with with_env(env_example()):
        config = load_bot(DEPLOY / "bot.yaml").config
    final = dict(stages()[-1])
    health_port = urlport(final["ENV"].split("VOXPIPE_HEALTH_URL=")[1].split()[0])
    assert config.http is not None and config.http.listen == f"0.0.0.0:{health_port}"
    assert config.session_store.redis is not None
    exposed = {int(port) for port in final["EXPOSE"].split()}
    chan_ws = config.transport.asterisk_websocket
    assert chan_ws is not None, "the image's bot takes chan_websocket calls too"
    assert exposed == {config.transport.audiosocket.port, chan_ws.port, health_port}
    assert final["CMD"] == '["bot.yaml"]'
    assert "deploy/bot.yaml ./bot.yaml" in [r for k, r in dockerfile() if k == "COPY"]


def urlport(url: str) -> int:
    found = re.match(r"https?://[^/:]+:(\d+)/", url)
    assert found is not None, url
    return int(found.group(1))


# --- the health check ----------------------------------------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[OperationsApi]:
    api = OperationsApi(HttpSettings(listen="127.0.0.1:0", token="s3cret"), bots=["desk"])
    await api.start()
    yield api
    await api.stop()


async def healthcheck(port: int, *args: str, token: str | None = "s3cret") -> tuple[int, str]:
    env = {**os.environ, "VOXPIPE_HEALTH_URL": f"http://127.0.0.1:{port}/health"}
    env.pop("VOXPIPE_HTTP_TOKEN", None)
    if token is not None:
        env["VOXPIPE_HTTP_TOKEN"] = token
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(DEPLOY / "healthcheck.py"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return await process.wait(), out.decode()


async def test_the_health_check_passes_on_200_and_fails_while_draining_unless_asked_liveness(
    api: OperationsApi,
) -> None:
    healthy = await healthcheck(api.port)
    api.state.draining = True
    draining = await healthcheck(api.port)
    alive = await healthcheck(api.port, "--live")
    assert healthy[0] == 0, healthy[1]
    assert draining[0] == 1 and "503" in draining[1] and "draining" in draining[1]
    assert alive[0] == 0, alive[1]


async def test_the_health_check_sends_the_token_and_fails_without_an_answer(
    api: OperationsApi,
) -> None:
    no_token = await healthcheck(api.port, token=None)
    port = api.port
    await api.stop()
    nobody = await healthcheck(port, "--live")
    await api.start()
    assert no_token[0] == 1 and "401" in no_token[1]
    assert nobody[0] == 1 and "no answer" in nobody[1]


# --- compose and .env.example -------------------------------------------------------------------


def test_compose_config_parses_with_the_example_environment() -> None:
    result = run(BIN / "docker-compose", "--env-file", ".env.example", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) >= {"bot", "asterisk", "redis", "postgres"}
    bot = services["bot"]
    assert bot["image"].startswith("voxpipe") and bot["build"]["dockerfile"] == "Dockerfile"
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    others = set(services) - {"bot"}
    assert {name: d["condition"] for name, d in bot["depends_on"].items()} == dict.fromkeys(
        others, "service_healthy"
    )
    for volume in bot["volumes"]:
        assert Path(volume["source"]).exists(), volume
    mounted = {Path(v["target"]): Path(v["source"]) for v in bot["volumes"]}
    bot_file = mounted[Path(bot["command"][0])]
    with with_env(env_example()):
        config = load_bot(bot_file).config
    grace = float(bot["stop_grace_period"].rstrip("s"))  # compose normalises to seconds here
    assert grace > config.transport.audiosocket.drain_s
    assert config.http is not None and urlport(env_example()["VOXPIPE_HEALTH_URL"]) == int(
        config.http.listen.rpartition(":")[2]
    )


def test_compose_refuses_to_start_without_the_passwords() -> None:
    result = run(BIN / "docker-compose", "config", "--quiet", env={"PATH": os.environ["PATH"]})
    assert result.returncode != 0
    assert "PASSWORD" in result.stderr


def test_env_example_lists_every_variable_the_samples_and_compose_use() -> None:
    files = [
        *REPO.glob("configs/*.yaml"),
        *REPO.glob("asterisk/*.yaml"),
        *DEPLOY.rglob("*.yaml"),
        REPO / "docker-compose.yml",
    ]
    used = {name for path in files for name in VARIABLE.findall(path.read_text())}
    used |= set(re.findall(r'environ.get\("([A-Z_]+)"', (DEPLOY / "healthcheck.py").read_text()))
    assert {"ARI_PASSWORD", "ANTHROPIC_API_KEY", "POSTGRES_PASSWORD", "VOXPIPE_MAX_CALLS"} <= used
    missing = used - set(env_example())
    assert not missing, f".env.example lacks {sorted(missing)}"


def test_env_files_are_ignored_by_git_except_the_example() -> None:
    ignored = run("git", "check-ignore", ".env", ".env.local", ".env.example").stdout.split()
    assert ignored == [".env", ".env.local"]


# --- Kubernetes ----------------------------------------------------------------------------------


def test_the_kubernetes_manifests_are_valid_against_the_api_schemas() -> None:
    resources = manifests()
    kinds = {r["kind"] for r in resources}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= kinds
    for item in resources:
        kubernetes_validate.validate(item, kubernetes_validate.latest_version(), strict=True)
    broken = {**resources[0], "spec": {**resources[0]["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_services_and_the_autoscaler_point_at_the_bot_pods_and_their_ports() -> None:
    deployment = resource("Deployment", "voxpipe")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"]: p["containerPort"] for p in bot_container()["ports"]}
    for name in ("voxpipe-audiosocket", "voxpipe-http"):
        service = resource("Service", name)["spec"]
        assert service["selector"].items() <= labels.items()
        assert all(p["targetPort"] in ports for p in service["ports"])
    assert resource("Service", "voxpipe-audiosocket")["spec"]["ports"][0]["port"] == 9092
    hpa = resource("HorizontalPodAutoscaler", "voxpipe")["spec"]
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "voxpipe"}
    assert hpa["scaleTargetRef"] == target
    redis_host = re.match(r"redis://([^:/]+)", pod_env()["REDIS_URL"])
    assert redis_host is not None
    resource("Service", redis_host.group(1))


def test_the_pods_run_the_bot_they_are_probed_and_drained_for() -> None:
    container = bot_container()
    with with_env(pod_env(VOXPIPE_MAX_CALLS="40")):
        config = load_bot(DEPLOY / "bot.yaml").config
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["audiosocket"] == config.transport.audiosocket.port
    assert config.http is not None and ports["http"] == int(config.http.listen.rpartition(":")[2])
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["livenessProbe"]["exec"]["command"] == ["voxpipe-healthcheck", "--live"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    spec = resource("Deployment", "voxpipe")["spec"]["template"]["spec"]
    drain = config.transport.audiosocket.drain_s
    assert drain == float(pod_env()["VOXPIPE_DRAIN_S"])
    assert spec["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain


def test_capacity_figures_are_quantities_the_bot_agrees_with_and_the_guide_gives() -> None:
    hpa = resource("HorizontalPodAutoscaler", "voxpipe")["spec"]["metrics"][0]["pods"]
    resources = bot_container()["resources"]
    figures = {
        "max_calls": pod_env()["VOXPIPE_MAX_CALLS"],
        "scale_at": str(hpa["target"]["averageValue"]),
        "cpu": str(resources["requests"]["cpu"]),
        "memory": str(resources["requests"]["memory"]),
    }
    assert resources["limits"]["memory"] == resources["requests"]["memory"]
    guide = (REPO / "docs" / "operations.md").read_text()
    for what, value in figures.items():
        assert not PLACEHOLDER.search(value), f"{what}: {value!r} was never measured"
        assert QUANTITY.match(value), f"{what}: {value!r} is no quantity"
        assert f"`{value}`" in guide, f"{what} {value} is not where docs/operations.md says"
    assert float(figures["scale_at"]) < float(figures["max_calls"]), "scale out before refusing"
    with with_env(pod_env()):
        config = load_bot(DEPLOY / "bot.yaml").config
    assert config.transport.audiosocket.max_calls == int(figures["max_calls"])


def test_the_adapter_rule_serves_a_metric_the_bots_export_as_the_autoscalers_metric() -> None:
    values = yaml.safe_load((DEPLOY / "prometheus-adapter.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    series = re.match(r"([a-z_]+)\{", rule["seriesQuery"])
    assert series is not None
    exported = Metrics().render().decode()
    assert re.search(rf"^# TYPE {series.group(1)} gauge$", exported, re.M)
    assert re.fullmatch(rule["name"]["matches"], series.group(1))
    hpa = resource("HorizontalPodAutoscaler", "voxpipe")["spec"]["metrics"][0]
    assert hpa["pods"]["metric"]["name"] == rule["name"]["as"] == "voxpipe_active_calls"
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
