"""`python -m radservice.healthcheck`: the container's HEALTHCHECK (exit 0 when /healthz answers 200).

It reads the same configuration as `radservice serve` (``RADSERVICE_CONFIG`` and the environment),
so a changed port is followed, and asks the API on this machine.
"""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request

from radservice.config import ConfigError, Settings, load_settings

#: Seconds to wait for the answer (Docker's own --timeout is the outer bound).
TIMEOUT_S = 4.0


def healthz_url(settings: Settings) -> str:
    """Where this machine's API answers: a wildcard bind address is asked on loopback."""
    host = settings.server.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.server.tls_cert is not None else "http"
    return f"{scheme}://{host}:{settings.server.port}/healthz"


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"healthcheck: configuration error: {exc}", file=sys.stderr)
        return 1
    url = healthz_url(settings)
    # our own API on this machine: liveness, not identity (its certificate names the public host)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # straight to this machine, never through an http(s)_proxy the environment names
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(url, timeout=TIMEOUT_S) as answer:
            status = int(answer.status)
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"healthcheck: {url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
