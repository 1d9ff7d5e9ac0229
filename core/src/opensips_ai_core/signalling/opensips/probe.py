"""`python -m opensips_ai_core.signalling.opensips.probe [HOST] [PORT]`: is OpenSIPS up?

Asks OpenSIPS's MI (mi_datagram, JSON-RPC over UDP) for `uptime`; exit 0 on any
JSON-RPC answer (a result, or an error such as a module refusing the command: the
MI process is alive either way), 1 when none comes within the timeout. mi_datagram
is UDP, so an open port proves nothing: only a reply does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from opensips_ai_core.signalling.opensips.mi import MiClient, MiError, MiTimeoutError


async def probe(host: str, port: int, timeout: float) -> tuple[bool, str]:
    client = MiClient(host, port, timeout)
    try:
        result = await client.call("uptime")
    except MiTimeoutError as err:
        return False, str(err)
    except MiError as err:
        return True, f"{host}:{port} answered: {err}"
    except OSError as err:
        return False, f"{host}:{port}: {err.strerror or err}"
    finally:
        await client.close()
    return True, f"{host}:{port} uptime {result}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host", nargs="?", default=os.environ.get("OPENSIPS_MI_HOST",
                                                                  "127.0.0.1"))
    parser.add_argument("port", nargs="?", type=int,
                        default=int(os.environ.get("OPENSIPS_MI_PORT", "8080")))
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    ok, message = asyncio.run(probe(args.host, args.port, args.timeout))
    print(message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
