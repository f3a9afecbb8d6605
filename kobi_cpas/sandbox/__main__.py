"""Run the Meta sandbox alone: ``python -m kobi_cpas.sandbox --port 8765 --registry tenants.yaml --seed 42``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from kobi_cpas.registry import RegistryError, load_registry
from kobi_cpas.sandbox.server import SandboxServer
from kobi_cpas.sandbox.state import World


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kobi_cpas.sandbox", description="Serve the Meta Graph API sandbox"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (0 picks a free one; default 8765)")
    parser.add_argument(
        "--registry",
        default=None,
        help="tenant registry YAML (default: $KOBI_CPAS_TENANTS or the demo registry)",
    )
    parser.add_argument(
        "--seed", type=int, default=int(os.environ.get("KOBI_CPAS_SANDBOX_SEED") or 42), help="world seed"
    )
    parser.add_argument(
        "--app-secret", default=os.environ.get("META_APP_SECRET"), help="verify appsecret_proof"
    )
    parser.add_argument("--quiet", action="store_true", help="do not log one line per request")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        loaded = load_registry(args.registry)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    world = World.from_registry(loaded, seed=args.seed)
    server = SandboxServer(
        world, host=args.host, port=args.port, app_secret=args.app_secret, log_requests=not args.quiet
    )
    try:
        # Bind first so the announced URL carries the real port when --port 0.
        server.start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("kobi_cpas.sandbox").info(
        "Meta sandbox on %s (registry %s, %d tenants, seed %d)",
        server.url,
        loaded.path,
        len(loaded.tenants),
        args.seed,
    )
    # SIGTERM (the devenv launcher stopping us) ends the server cleanly, like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
