"""The HTTP call API: POST /calls places an outbound call, GET/DELETE /calls/{id}.

`POST /calls` takes JSON `{"to": "sip:...", "from": "sip:...", "caller_id": "Bank",
"max_ring_s": 30, "bot": {"greeting": "..."}}` (only `to` is required) and answers
202 with the call's record (`call_id`, `state`); `GET /calls/{id}` shows the record,
`DELETE /calls/{id}` cancels a ringing call or hangs up. `GET /calls/{id}/transcript`
shows any call's transcript (inbound or outbound, by its id or SIP Call-ID): live while
it goes on, then kept a while after it ended (recording/archive.py). A malformed request gets 400
and `{"error": "<one line>"}`; a core at capacity 503 with Retry-After.

With a token (CORE_API_TOKEN) these routes need `Authorization: Bearer <token>`
(401 otherwise). On a non-loopback HTTP address without a token the call API is off
(`disabled`): each of its routes answers 403 with the reason, while /health, /live and
/metrics stay served for probes (deployments bind 0.0.0.0 for them).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from opensips_ai_core.outbound import OutboundCalls, OutboundRequestError
from opensips_ai_core.signalling.errors import SignallingError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A call's transcript by its id or SIP Call-ID (CallManager.transcript), None if unknown.
TranscriptFn = Callable[[str], dict[str, object] | None]


def error(status: int, why: str, **headers: str) -> web.Response:
    return web.json_response({"error": " ".join(why.split())}, status=status, headers=headers)


class CallApi:
    def __init__(self, outbound: OutboundCalls, token: str | None, *,
                 disabled: str | None = None, transcripts: TranscriptFn | None = None) -> None:
        self.outbound = outbound
        self.transcripts = transcripts
        self.token = token
        self.disabled = disabled  # why the API is off, or None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/calls", self._guarded(self._post))
        app.router.add_get("/calls/{call_id}", self._guarded(self._get))
        app.router.add_delete("/calls/{call_id}", self._guarded(self._delete))
        app.router.add_get("/calls/{call_id}/transcript", self._guarded(self._transcript))

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if self.disabled is not None:
                return error(403, self.disabled)
            if self.token is not None:
                given = request.headers.get("Authorization", "")
                expected = f"Bearer {self.token}"
                if not hmac.compare_digest(given.encode(), expected.encode()):
                    return error(401, "a bearer token is required",
                                 **{"WWW-Authenticate": "Bearer"})
            return await handler(request)
        return guarded

    async def _post(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return error(400, "the body must be JSON (Content-Type: application/json)")
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as err:
            return error(400, f"the body is not valid JSON: {err}")
        try:
            record = self.outbound.place(body)
        except OutboundRequestError as err:
            return error(400, str(err))
        except SignallingError as err:
            extra = {"Retry-After": str(err.retry_after)} if err.retry_after else {}
            status = 501 if err.code == 501 else 503
            return error(status, f"{err.code} {err.reason}", **extra)
        return web.json_response(record.snapshot(), status=202,
                                 headers={"Location": f"/calls/{record.id}"})

    async def _get(self, request: web.Request) -> web.Response:
        record = self.outbound.get(request.match_info["call_id"])
        if record is None:
            return error(404, "no such outbound call")
        return web.json_response(record.snapshot())

    async def _delete(self, request: web.Request) -> web.Response:
        record = await self.outbound.hang_up(request.match_info["call_id"])
        if record is None:
            return error(404, "no such outbound call")
        return web.json_response(record.snapshot())

    async def _transcript(self, request: web.Request) -> web.Response:
        found = self.transcripts(request.match_info["call_id"]) if self.transcripts else None
        if found is None:
            return error(404, "no such call (or it ended too long ago)")
        return web.json_response(found)
