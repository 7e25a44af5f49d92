"""`projector serve`: the GraphQL API only."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress

from projector.errors import ConfigError
from projector.runtime import run_until_signal
from projector.settings import Settings

NAME = "serve"
HELP = "serve the GraphQL API (http://API_HOST:API_PORT/graphql)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (env API_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (env API_PORT, default 8000)")
    parser.add_argument("--insecure", action="store_true",
                        help="allow a non-loopback address with API_AUTH=none")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, insecure: bool) -> None:
    if settings.api_auth == "none" and not is_loopback(settings.api_host) and not insecure:
        raise ConfigError(
            f"refusing to serve on {settings.api_host} with API_AUTH=none: anyone who can reach "
            "it could read every order. Set API_AUTH=jwt (with API_JWT_SECRET or "
            "API_JWT_PUBLIC_KEY), bind to 127.0.0.1, or pass --insecure.")


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.with_(**{k: v for k, v in
                                 {"api_host": args.host, "api_port": args.port}.items() if v})
    settings.require_database()
    check_exposure(settings, args.insecure)
    from api.server import serve_api

    async def main(stopping: asyncio.Event) -> int:
        await serve_api(settings, stopping)
        return 0

    return run_until_signal(main)
