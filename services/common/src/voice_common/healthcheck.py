"""Health-check command: `python -m voice_common.healthcheck HOST:PORT [SERVICE]`.

Exit 0 only when the server reports SERVING for SERVICE ("" = the whole
server); 1 when it answers anything else; 2 when it cannot be reached in time.
Readiness probes, dev-status and the production images all call this.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

EXIT_SERVING = 0
EXIT_NOT_SERVING = 1
EXIT_UNREACHABLE = 2


def check(target: str, service: str = "", timeout: float = 3.0) -> tuple[int, str]:
    """Return (exit code, status name) for one health check."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            # types-grpcio-health-checking declares HealthStub without its methods.
            reply = stub.Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as err:
            code = err.code()
            if code == grpc.StatusCode.NOT_FOUND:
                return EXIT_NOT_SERVING, "SERVICE_UNKNOWN"
            return EXIT_UNREACHABLE, code.name
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return (EXIT_SERVING if reply.status == health_pb2.HealthCheckResponse.SERVING
            else EXIT_NOT_SERVING), name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m voice_common.healthcheck", description=__doc__.splitlines()[0]
    )
    parser.add_argument("target", help="HOST:PORT of the gRPC server")
    parser.add_argument("service", nargs="?", default="", help="service name ('' = server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    args = parser.parse_args(argv)
    code, status = check(args.target, args.service, args.timeout)
    if not args.quiet:
        print(f"{args.target} {args.service or '(server)'}: {status}")
    return code


if __name__ == "__main__":
    sys.exit(main())
