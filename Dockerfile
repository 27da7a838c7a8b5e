# syntax=docker/dockerfile:1
# voxpipe in a slim image: `run-pipeline serve` as a non-root user, with every provider and the
# offline speech models inside (whisper tiny.en, the piper voice and pocketsphinx's models ship
# in pip packages: nothing is downloaded when the bot starts).
#   docker build -t voxpipe .
#   docker run --rm -p 9092:9092 -p 8080:8080 voxpipe                  # the baked bot.yaml
#   docker run --rm -p 9092:9092 -p 8080:8080 -v ./mybot.yaml:/app/bot.yaml:ro voxpipe
#   docker run --rm voxpipe configs/echo.yaml                           # another baked bot
# The health check asks the bot's HTTP API (its `http:` block, port 8080 unless
# VOXPIPE_HEALTH_URL says otherwise), so a bot run in this image needs one.

ARG PYTHON_VERSION=3.11

# --- build: install voxpipe and its extras into a virtual environment ----------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The extras of pyproject.toml to install: `all` is every provider (tests/test_deploy.py checks
# that these cover every extra but `dev`). Every dependency has a manylinux wheel: no compiler.
ARG EXTRAS=all
RUN python -m venv /opt/voxpipe
WORKDIR /src
COPY pyproject.toml README.md ./
COPY voxpipe ./voxpipe
RUN /opt/voxpipe/bin/pip install ".[${EXTRAS}]"

# --- runtime: the virtual environment, the bots and a user without privileges -------------------
FROM python:${PYTHON_VERSION}-slim-bookworm
# espeak-ng is run by the espeak text-to-speech provider; libgomp1 and libstdc++6 are the system
# libraries the speech engines' wheels (ctranslate2, onnxruntime) expect to find.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng libgomp1 libstdc++6 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin voxpipe
COPY --from=build /opt/voxpipe /opt/voxpipe
WORKDIR /app
COPY configs ./configs
COPY deploy/bot.yaml ./bot.yaml
COPY --chmod=0755 deploy/healthcheck.py /usr/local/bin/voxpipe-healthcheck
# Nothing leaves or enters at run time: no model hub, no onnxruntime telemetry (which would also
# try to write a device id under the read-only home directory).
ENV PATH=/opt/voxpipe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    VOXPIPE_HEALTH_URL=http://127.0.0.1:8080/health
USER 10001:10001
# AudioSocket (transport.audiosocket.listen) and the HTTP API (http.listen) of bot.yaml.
EXPOSE 9092 8765 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["voxpipe-healthcheck"]
# SIGTERM (docker stop) drains: calls get transport.audiosocket.drain_s to finish, so give
# `docker stop -t` (compose: stop_grace_period) more than that.
ENTRYPOINT ["run-pipeline", "serve"]
CMD ["bot.yaml"]
