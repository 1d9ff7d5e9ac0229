"""dev-call's reading of the core's transcript (`devtools/dial.py`), against an HTTP
server on 127.0.0.1 that answers as the core's `GET /calls/{id}/transcript` does.
The whole of dev-call against a real core: test_dial_transcript.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from opensips_ai_core.devtools.dial import CoreTranscript, print_turn
from voice_testkit.http_server import serve

pytestmark = [pytest.mark.timeout(30)]

GREETING = {"index": 0, "kind": "greeting", "heard": None, "said": "Hello.",
            "interrupted": False, "latency_ms": None, "stages_ms": {}}
REPLY = {"index": 1, "kind": "reply", "heard": "what is my balance",
         "said": "Your balance is ten pounds.", "interrupted": True, "latency_ms": 640,
         "stages_ms": {"asr_final": 300, "first_rtp": 640}}


@pytest.fixture
async def core_http() -> AsyncIterator[tuple[str, list[str], list[dict]]]:
    paths: list[str] = []
    turns: list[dict] = []

    async def transcript(request: web.Request) -> web.Response:
        paths.append(request.path)
        if request.match_info["call_id"] != "abc@127.0.0.1":
            return web.json_response({"error": "no such call"}, status=404)
        if request.headers.get("Authorization") != "Bearer t0ken-t0ken-t0ken!":
            return web.json_response({"error": "a bearer token is required"}, status=401)
        return web.json_response({"turns": list(turns), "ended": None})

    app = web.Application()
    app.router.add_get("/calls/{call_id}/transcript", transcript)
    async with serve(app) as address:
        yield address, paths, turns


async def test_each_turn_is_shown_once_with_what_was_heard_and_said(core_http, capsys) -> None:
    http, paths, turns = core_http
    transcript = CoreTranscript(http, "abc@127.0.0.1", "t0ken-t0ken-t0ken!")
    turns.append(GREETING)
    shown = await transcript.new_turns(want_reply=False)
    assert shown == [GREETING] and paths == ["/calls/abc@127.0.0.1/transcript"]
    turns.append(REPLY)
    assert await transcript.new_turns(want_reply=True) == [REPLY]
    assert await transcript.new_turns(want_reply=False) == []
    print_turn(REPLY)
    out = capsys.readouterr().out
    assert out == ("  recognizer heard: what is my balance\n"
                   "bot: Your balance is ten pounds. [interrupted]\n"
                   "  core latency: 640 ms (end of speech -> first reply packet; "
                   "asr_final=300 first_rtp=640)\n")


async def test_a_core_that_cannot_say_is_reported_in_one_line(core_http) -> None:
    http, _paths, _turns = core_http
    unknown = CoreTranscript(http, "other@127.0.0.1", None)
    assert await unknown.new_turns(want_reply=True, wait_s=0.1) == []
    assert unknown.problem is not None and "404" in unknown.problem
    no_token = CoreTranscript(http, "abc@127.0.0.1", None)
    assert await no_token.fetch() is None and "401" in (no_token.problem or "")
