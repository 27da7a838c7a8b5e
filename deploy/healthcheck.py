#!/usr/bin/env python3
"""Health check of a running bot for the container image: asks its HTTP API ``/health``.

    voxpipe-healthcheck           exit 0 when /health answers 200 (ok, or degraded: Redis down)
    voxpipe-healthcheck --live    exit 0 when /health answers at all (503 while draining or
                                  with a provider down still means the process is alive)

The URL is ``$VOXPIPE_HEALTH_URL`` (default ``http://127.0.0.1:8080/health``, the ``http:``
listener of the image's bot); with ``$VOXPIPE_HTTP_TOKEN`` set it is sent as the bearer token.
Standard library only, so that it starts in a few milliseconds every interval.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8080/health"


def check(url: str, token: str | None, timeout_s: float, live: bool) -> tuple[bool, str]:
    """(healthy, one line saying why) for the ``/health`` at ``url``."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return True, f"{url}: {response.status}"
    except urllib.error.HTTPError as exc:  # answered, with a status of 400 or more
        body = exc.read(200).decode(errors="replace").strip()
        return live, f"{url}: {exc.code} {body}"
    except (OSError, ValueError) as exc:  # refused, timed out, not a URL
        return False, f"{url}: no answer ({exc})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voxpipe-healthcheck", description=__doc__.split("\n")[0])
    parser.add_argument("--live", action="store_true", help="any answer counts (liveness)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (3)")
    args = parser.parse_args(argv)
    url = os.environ.get("VOXPIPE_HEALTH_URL") or DEFAULT_URL
    healthy, why = check(url, os.environ.get("VOXPIPE_HTTP_TOKEN"), args.timeout, args.live)
    print(why, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
