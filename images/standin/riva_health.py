"""Stand-in for nvcr.io/nvidia/riva/riva-speech: a gRPC server on :50051 whose
grpc.health.v1.Health/Check answers SERVING. All command-line arguments are ignored
(the real image is started with riva_start.sh-style arguments)."""

from __future__ import annotations

import os
import threading
from concurrent import futures

import grpc
from standin import log, setup

NAME = "riva"
SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}, encoded by hand: no generated stubs needed


def _check(_request: bytes, _context: grpc.ServicerContext) -> bytes:
    return SERVING


def _watch(_request: bytes, context: grpc.ServicerContext):  # type: ignore[no-untyped-def]
    yield SERVING
    threading.Event().wait()  # keep the stream open like the real Watch


def main() -> None:
    setup(NAME)
    port = int(os.environ.get("RIVA_STANDIN_PORT", "50051"))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {
            "Check": grpc.unary_unary_rpc_method_handler(_check),
            "Watch": grpc.unary_stream_rpc_method_handler(_watch),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    log(NAME, f"gRPC health SERVING on :{port}")
    server.wait_for_termination()


if __name__ == "__main__":
    main()
