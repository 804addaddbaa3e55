"""Start the server: ``python api/app.py [--host 0.0.0.0] [--port 8000] [--reload]``.

Serves through :mod:`api.server` (``python -m api.server``: uvicorn with the connection limits).
``--reload`` (development) and ``--workers N`` run uvicorn's own supervisor instead, with the limits
uvicorn enforces itself (header size, keep-alive, graceful shutdown, trusted proxies) but not the
launcher's request deadline, connection cap and header-field count. Either way uvicorn's own access
log is off: the app writes one JSON line per request (``soundsentry.access``, see api/observability.py).
"""

from __future__ import annotations

import argparse

import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--reload", action="store_true", help="restart on code changes (development)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    from api.core.config import get_settings
    from api.server import main as serve
    from api.server import uvicorn_options

    if args.reload or args.workers > 1:
        uvicorn.run("api.main:app", host=args.host, port=args.port, reload=args.reload, workers=args.workers,
                    access_log=False, **uvicorn_options(get_settings()))
    else:
        serve(["--host", args.host, "--port", str(args.port)])


if __name__ == "__main__":
    main()
