"""Keep the service's status when grpcio's asyncio client loses it to a failed write.

grpcio's asyncio client (1.85 and earlier; grpc/grpc issue 36066) replaces the status a
server sent with `INTERNAL: Internal error from Core` when a request write fails because
the server has just ended the stream: the ASR service refusing an oversized chunk
(INVALID_ARGUMENT) or a stream over its limit (RESOURCE_EXHAUSTED) reached the core as
INTERNAL about one time in three, and the log never said why. `_write` set that status
unconditionally on any failed write; this version waits for the status Core delivers for
a stream the server ended, and sets INTERNAL only when none comes (the case that
unconditional status was added for: a batch Core refused without ever ending the call).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

log = logging.getLogger(__name__)

# How long a failed write waits for the server's status before reporting INTERNAL.
STATUS_WAIT_S = 1.0
_MARK = "_voiceai_keeps_server_status"


def install() -> bool:
    """Patch grpcio's stream-request write once; False where grpcio's internals differ
    (the upstream fix may have landed: nothing to do then)."""
    try:
        from grpc import _common
        from grpc._cython import cygrpc
        from grpc.aio import _call
    except ImportError:  # pragma: no cover - grpcio moved its internals
        return False
    mixin = getattr(_call, "_StreamRequestMixin", None)
    if mixin is None or not hasattr(mixin, "_write"):  # pragma: no cover
        return False
    if getattr(mixin._write, _MARK, False):
        return True
    try:
        source = inspect.getsource(mixin._write)
    except (OSError, TypeError):  # pragma: no cover - no source to compare
        return False
    if "set_internal_error" not in source or "_raise_for_status" not in source:
        # Not the `_write` this replaces: grpcio changed it (perhaps fixed it); keep it.
        log.debug("grpcio's stream write is not the one status_fix knows; left as it is")
        return False

    async def _write(self: Any, request: Any) -> None:
        # grpcio's own `_write`, but for what a failed send does (see the module doc).
        if self.done():
            raise asyncio.InvalidStateError(_call._RPC_ALREADY_FINISHED_DETAILS)
        if self._done_writing_flag:
            raise asyncio.InvalidStateError(_call._RPC_HALF_CLOSED_DETAILS)
        if not self._metadata_sent.is_set():
            await self._metadata_sent.wait()
            if self.done():
                await self._raise_for_status()
        serialized = _common.serialize(request, self._request_serializer)
        try:
            await self._cython_call.send_serialized_message(serialized)
        except cygrpc.InternalError as err:
            if not self._cython_call.done():
                try:
                    await asyncio.wait_for(self._cython_call.status(), STATUS_WAIT_S)
                except TimeoutError:
                    self._cython_call.set_internal_error(str(err))
            await self._raise_for_status()
        except asyncio.CancelledError:
            if not self.cancelled():
                self.cancel()
            raise

    setattr(_write, _MARK, True)
    mixin._write = _write
    return True
