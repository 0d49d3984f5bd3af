"""Stand-in for the SPARC MAS server: HTTP/1.1 on :8000. GET /health is 200 only while a TCP
connection to RIVA_API_URL (host:port, optionally with a scheme) succeeds, else 503, so the
profile's depends_on riva matters. A command like `uvicorn main:app --host H --port P` (the v1
backend example) is appended to the entrypoint: --host/--port are honoured, the rest ignored."""

from __future__ import annotations

import argparse
import json
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from standin import log, setup

NAME = "mas"


def riva_address() -> tuple[str, int]:
    url = os.environ.get("RIVA_API_URL", "localhost:50051")
    parts = urlsplit(url if "//" in url else f"//{url}")
    return parts.hostname or "localhost", parts.port or 50051


def riva_reachable() -> bool:
    try:
        with socket.create_connection(riva_address(), timeout=1):
            return True
    except OSError:
        return False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # else http.server answers HTTP/1.0

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/health":
            ok = riva_reachable()
            host, port = riva_address()
            # says whether the secret arrived, never its value
            body = {
                "status": "ok" if ok else "riva unreachable",
                "riva": f"{host}:{port}",
                "openai_api_key": bool(os.environ.get("OPENAI_API_KEY")),
            }
            self._send(200 if ok else 503, body)
        else:
            self._send(404, {"status": "not found"})

    def _send(self, code: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode() + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        log(NAME, fmt % args)


def main() -> None:
    # honours --host/--port of a `uvicorn main:app --host H --port P` command; other words are ignored
    parser = argparse.ArgumentParser(prog="mas-server")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("MAS_STANDIN_PORT", "8000")))
    args, _ignored = parser.parse_known_args()
    setup(NAME)
    port = args.port
    server = ThreadingHTTPServer((args.host, port), Handler)
    log(NAME, f"HTTP on :{port}, RIVA_API_URL={os.environ.get('RIVA_API_URL', '')}")
    server.serve_forever()


if __name__ == "__main__":
    main()
