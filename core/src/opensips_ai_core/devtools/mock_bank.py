"""A mock bank HTTP API for the demo's tools (BotConfig.tools): accounts in memory.

    python -m opensips_ai_core.devtools.mock_bank [--host 127.0.0.1] [--port 8090]

- `POST /get_balance` `{"account": "12345678"}` -> `{"account", "balance", "currency"}`;
- `POST /block_card` `{"account": "12345678"}` -> `{"account", "blocked": true}`;
- an unknown account: 404 `{"error": "no such account"}`; a body that is not a JSON
  object with a string `account`: 400 `{"error": ...}`;
- `GET /health` -> 200 `ok` (the dev stack's readiness probe).

The dev stack runs it on 127.0.0.1:8090 (process-compose.yaml). Development only:
no authentication, loopback by default, state lost on restart.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field

from aiohttp import web

log = logging.getLogger("mock_bank")

DEFAULT_PORT = 8090
MAX_BODY_BYTES = 4096


@dataclass
class Account:
    balance: float
    currency: str = "dollars"
    card_blocked: bool = False


@dataclass
class Bank:
    accounts: dict[str, Account] = field(default_factory=lambda: {
        "12345678": Account(1250.40),
        "87654321": Account(83.15),
        "1234": Account(42.00),
    })


BANK_KEY = web.AppKey("bank", Bank)


async def _account(request: web.Request) -> tuple[str, Account] | web.Response:
    try:
        body = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return web.json_response({"error": "the body is not JSON"}, status=400)
    number = body.get("account") if isinstance(body, dict) else None
    if not isinstance(number, str):
        return web.json_response({"error": "send {\"account\": \"<digits>\"}"}, status=400)
    account = request.app[BANK_KEY].accounts.get(number)
    if account is None:
        return web.json_response({"error": "no such account"}, status=404)
    return number, account


async def get_balance(request: web.Request) -> web.Response:
    found = await _account(request)
    if isinstance(found, web.Response):
        return found
    number, account = found
    log.info("get_balance %s -> %.2f", number, account.balance)
    return web.json_response({"account": number, "balance": account.balance,
                              "currency": account.currency})


async def block_card(request: web.Request) -> web.Response:
    found = await _account(request)
    if isinstance(found, web.Response):
        return found
    number, account = found
    account.card_blocked = True
    log.info("block_card %s", number)
    return web.json_response({"account": number, "blocked": True})


async def health(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app(bank: Bank | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[BANK_KEY] = bank or Bank()
    app.router.add_post("/get_balance", get_balance)
    app.router.add_post("/block_card", block_card)
    app.router.add_get("/health", health)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m opensips_ai_core.devtools.mock_bank",
                                     description="Mock bank HTTP API for the demo's tools.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    web.run_app(make_app(), host=args.host, port=args.port, print=None,
                handle_signals=True, shutdown_timeout=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
