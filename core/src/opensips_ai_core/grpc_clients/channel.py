"""gRPC channels to the AI services: replicated, health-checked, and riding out restarts.

A service address (CORE_ASR_TARGET etc.) names one replica or several:

    host:port                       one address; a DNS name resolving to several works too
    10.0.0.5:50051,10.0.0.6:50051   a list of IP addresses (gRPC's ipv4:/ipv6: resolver)
    dns:///asr.voice.svc:50051      any gRPC target, as gRPC's naming doc spells it

Every channel balances with gRPC's own `round_robin` policy over whatever the name
resolves to, and asks each replica's `grpc.health.v1` service (the service config's
`healthCheckConfig`): a replica that says NOT_SERVING (warming up, draining) gets no
new RPC. One RPC stays on the replica it started on, so a call's ASR stream stays on
its replica; a reopened stream (after that replica is lost) may go to another.

`wait_for_ready` makes a call wait (up to its deadline) while no replica is SERVING
(restarting, warming up) instead of failing at once; short reconnect backoffs bring
the channel back within a fraction of a second of a replica listening again.

The clients make one attempt per request and retry nothing themselves: retrying a
failed request is the pipeline's job (`pipeline/retry.py`), the one layer that knows
whether the caller already heard part of the answer. What stays here is gRPC's own
connection handling, which is no retry policy: waiting for a SERVING replica, and
gRPC's transparent retry of an RPC that never reached a server (no `retryPolicy` in
the service config). The ASR stream's reopen (`asr.py`) keeps a session alive for the
whole call rather than retrying a request.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import AsyncGenerator
from typing import Any, TypeVar

import grpc

from opensips_ai_core.grpc_clients import status_fix

# Every channel of the core opens here: the services' own status, never grpcio's INTERNAL.
status_fix.install()

# What a retry may cure (a restart, a replica lost, a deadline): read by the pipeline's
# retries and the ASR stream's reopen backoff.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.ABORTED})

# The health service name asked of each replica: "" is the server's overall status, which
# the services' runtime (voice_common.runtime) sets with its per-service names.
HEALTH_SERVICE = ""

# gRPC's resolver schemes (https://github.com/grpc/grpc/blob/master/doc/naming.md) a
# target may start with; anything else is host:port or a comma-separated list of them.
GRPC_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:", "xds:")

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 20000),
    ("grpc.keepalive_timeout_ms", 5000),
    # gRPC's transparent retry of an RPC that never left the client (a connection
    # closing under it); the service config sets no retryPolicy of its own.
    ("grpc.enable_retries", 1),
    # A DNS name is looked up again when a replica goes away; gRPC's default waits at
    # least 30 s between lookups, too long for a replaced Kubernetes pod.
    ("grpc.dns_min_time_between_resolutions_ms", 5000),
]


class TargetError(ValueError):
    pass


def service_config(health_service: str = HEALTH_SERVICE) -> str:
    """The channel's service config: round_robin over the replicas, health-checked."""
    return json.dumps({
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": health_service},
    })


def _split_host_port(address: str) -> tuple[str, int]:
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
    else:
        host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TargetError(f"{address!r} is not host:port")
    return host, int(port)


def _ip_family(host: str) -> int | None:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def grpc_target(value: str) -> str:
    """The gRPC target for a service address: one address, a list, or a gRPC target.

    A list must hold IP addresses of one family (gRPC has no resolver for a list of
    names); for names, give one DNS name that resolves to every replica.
    """
    value = value.strip()
    if not value:
        raise TargetError("the service address is empty")
    if value.startswith(GRPC_SCHEMES):
        return value
    addresses = [part.strip() for part in value.split(",")]
    if any(not part for part in addresses):
        raise TargetError(f"{value!r}: an empty entry in the list")
    parsed = [_split_host_port(part) for part in addresses]
    if len(parsed) == 1:
        return value
    families = {_ip_family(host) for host, _ in parsed}
    if None in families:
        names = ", ".join(host for host, _ in parsed if _ip_family(host) is None)
        raise TargetError(f"{value!r}: a list takes IP addresses only, not {names}; "
                          "for names give one DNS name that resolves to every replica, "
                          "e.g. dns:///asr.example:50051")
    if len(families) > 1:
        raise TargetError(f"{value!r}: a list takes IPv4 or IPv6 addresses, not both")
    if families == {4}:
        return "ipv4:" + ",".join(f"{host}:{port}" for host, port in parsed)
    return "ipv6:" + ",".join(f"[{host}]:{port}" for host, port in parsed)


def open_channel(target: str, health_service: str = HEALTH_SERVICE) -> grpc.aio.Channel:
    options = [*CHANNEL_OPTIONS, ("grpc.service_config", service_config(health_service))]
    return grpc.aio.insecure_channel(grpc_target(target), options=options)


def is_retryable(err: BaseException) -> bool:
    return isinstance(err, grpc.aio.AioRpcError) and err.code() in RETRYABLE


Response = TypeVar("Response")


async def responses(call: grpc.aio.UnaryStreamCall[Any, Response]
                    ) -> AsyncGenerator[Response, None]:
    """The responses of one server-streaming call; closing the generator early cancels
    the call. A failure is raised as it came: the caller decides whether to try again."""
    try:
        async for response in call:
            yield response
    finally:
        if not call.done():
            call.cancel()
