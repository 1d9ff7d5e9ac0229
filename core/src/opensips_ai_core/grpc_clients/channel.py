"""gRPC channels to the AI services that ride out a service restart.

`wait_for_ready` makes a call wait (up to its deadline) while the service is
restarting instead of failing at once; short reconnect backoffs bring the
channel back within a fraction of a second of the service listening again.
"""

from __future__ import annotations

import grpc

from opensips_ai_core.grpc_clients import status_fix

# Every channel of the core opens here: the services' own status, never grpcio's INTERNAL.
status_fix.install()

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.ABORTED})

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 20000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.enable_retries", 1),
]


def open_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


def is_retryable(err: BaseException) -> bool:
    return isinstance(err, grpc.aio.AioRpcError) and err.code() in RETRYABLE
