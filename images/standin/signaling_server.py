#!/usr/bin/python3
"""Stand-in for Unity Render Streaming's signaling server (WebApp), installed as `node` so that the
example's `node build/index.js -p 8080` starts it; `-t http` selects HTTP polling, `-m private` the
private mode. Like the real one (commander), an unknown flag such as `--httpPort` makes it exit 1.
Written from the protocol (WebApp/src/class/websockethandler.ts and httphandler.ts), not its code.

WebSocket: JSON messages connect/disconnect/offer/answer/candidate; public mode broadcasts offers and
candidates to every other client and pairs a connection with whoever answers; private mode pairs
two clients that connect with the same connectionId. HTTP: /signaling with a Session-Id header.
A plain GET / answers 200, so TCP/HTTP/WebSocket probes work too.

Installed as `riva-websocket-gateway` (examples/sparc-backend.yaml's bridge), it echoes WebSocket
messages on --port instead.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import struct
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, "/srv")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from standin import log, setup

NAME = "signaling"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------- WebSocket framing (server side)


def frame(opcode: int, data: bytes) -> bytes:
    n = len(data)
    if n < 126:
        return struct.pack("!BB", 0x80 | opcode, n) + data
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + data
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + data


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
    data = await reader.readexactly(n)
    return b0 & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


class Client:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.ids: set[str] = set()

    def send(self, msg: dict[str, Any]) -> None:
        self.writer.write(frame(0x1, json.dumps(msg).encode()))


# ---------------------------------------------------------------- the URS protocol, WebSocket


class WsSignaling:
    def __init__(self, private: bool) -> None:
        self.private = private
        self.clients: list[Client] = []
        self.pairs: dict[str, list[Client | None]] = {}

    def other(self, cid: str, me: Client) -> Client | None:
        pair = self.pairs.get(cid)
        if not pair:
            return None
        return pair[1] if pair[0] is me else pair[0]

    def on_message(self, me: Client, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        data = msg.get("data") or {}
        if kind == "connect":
            self.connect(me, str(msg.get("connectionId")))
        elif kind == "disconnect":
            cid = str(msg.get("connectionId"))
            me.ids.discard(cid)
            other = self.other(cid, me)
            if other is not None:
                other.send({"type": "disconnect", "connectionId": cid})
            self.pairs.pop(cid, None)
            me.send({"type": "disconnect", "connectionId": cid})
        elif kind == "offer":
            self.offer(me, data)
        elif kind == "answer":
            self.answer(me, data)
        elif kind == "candidate":
            cid = str(data.get("connectionId"))
            cand = {k: data.get(k) for k in ("candidate", "sdpMLineIndex", "sdpMid")} | {"datetime": now_ms()}
            self.relay(me, cid, {"from": cid, "to": "", "type": "candidate", "data": cand})

    def connect(self, me: Client, cid: str) -> None:
        polite = True
        if self.private:
            pair = self.pairs.get(cid)
            if pair and pair[0] is not None and pair[1] is not None:
                me.send({"type": "error", "message": f"{cid}: This connection id is already used."})
                return
            if pair:
                pair[1] = me
            else:
                self.pairs[cid] = [me, None]
                polite = False
        me.ids.add(cid)
        me.send({"type": "connect", "connectionId": cid, "polite": polite})

    def offer(self, me: Client, data: dict[str, Any]) -> None:
        cid = str(data.get("connectionId"))
        offer = {"sdp": data.get("sdp"), "datetime": now_ms(), "polite": False}
        if self.private:
            other = self.other(cid, me)
            if other is not None:
                other.send({"from": cid, "to": "", "type": "offer", "data": offer | {"polite": True}})
            return
        self.pairs[cid] = [me, None]
        for c in self.clients:
            if c is not me:
                c.send({"from": cid, "to": "", "type": "offer", "data": offer})

    def answer(self, me: Client, data: dict[str, Any]) -> None:
        cid = str(data.get("connectionId"))
        me.ids.add(cid)
        other = self.other(cid, me)
        if cid not in self.pairs or other is None:
            return
        if not self.private:
            self.pairs[cid] = [other, me]
        other.send(
            {"from": cid, "to": "", "type": "answer", "data": {"sdp": data.get("sdp"), "datetime": now_ms()}}
        )

    def relay(self, me: Client, cid: str, msg: dict[str, Any]) -> None:
        if self.private:
            other = self.other(cid, me)
            if other is not None:
                other.send(msg)
            return
        for c in self.clients:
            if c is not me:
                c.send(msg)

    def remove(self, me: Client) -> None:
        for cid in me.ids:
            other = self.other(cid, me)
            if other is not None:
                other.send({"type": "disconnect", "connectionId": cid})
            self.pairs.pop(cid, None)
        self.clients.remove(me)


# ---------------------------------------------------------------- the URS protocol, HTTP


class HttpSignaling:
    def __init__(self, private: bool) -> None:
        self.private = private
        self.clients: dict[str, set[str]] = {}
        self.pairs: dict[str, list[str | None]] = {}
        self.offers: dict[str, dict[str, dict[str, Any]]] = {}
        self.answers: dict[str, dict[str, dict[str, Any]]] = {}
        self.candidates: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def handle(self, method: str, path: str, query: dict[str, str], sid: str, body: dict[str, Any]) -> Any:
        if path == "":
            if method == "PUT":
                new = str(uuid.uuid4())
                self.clients[new], self.offers[new], self.answers[new], self.candidates[new] = (
                    set(),
                    {},
                    {},
                    {},
                )
                return {"sessionId": new}
            if method == "DELETE":
                for table in (self.clients, self.offers, self.answers, self.candidates):
                    table.pop(sid, None)
                return None
        if sid not in self.clients:
            return 404
        since = int(query.get("fromtime", "0") or 0)
        cid = str(body.get("connectionId", ""))
        route = (method, path)
        if route == ("GET", "/connection"):
            return {"connections": [{"connectionId": c} for c in self.clients[sid]]}
        if route == ("PUT", "/connection"):
            return self.create_connection(sid, cid)
        if route == ("DELETE", "/connection"):
            self.clients[sid].discard(cid)
            self.pairs.pop(cid, None)
            for table in (self.offers, self.answers, self.candidates):
                table[sid].pop(cid, None)
            return {"connectionId": cid}
        if route == ("GET", "/offer"):
            return {"offers": self.get_offers(sid, since)}
        if route == ("GET", "/answer"):
            got = [(c, a) for c, a in self.answers[sid].items() if a["datetime"] > since]
            return {"answers": [{"connectionId": c, "sdp": a["sdp"]} for c, a in got]}
        if route == ("GET", "/candidate"):
            return {"candidates": self.get_candidates(sid, since)}
        if route == ("POST", "/offer"):
            return self.post_offer(sid, cid, body)
        if route == ("POST", "/answer"):
            return self.post_answer(sid, cid, body)
        if route == ("POST", "/candidate"):
            cand = {k: body.get(k) for k in ("candidate", "sdpMLineIndex", "sdpMid")} | {"datetime": now_ms()}
            self.candidates[sid].setdefault(cid, []).append(cand)
            return None
        return 404

    def create_connection(self, sid: str, cid: str) -> Any:
        if not cid:
            return 400
        polite = True
        if self.private:
            pair = self.pairs.get(cid)
            if pair and pair[0] is not None and pair[1] is not None:
                return 400
            if pair:
                pair[1] = sid
                self.clients.setdefault(str(pair[0]), set()).add(cid)
            else:
                self.pairs[cid] = [sid, None]
                polite = False
        self.clients[sid].add(cid)
        return {"connectionId": cid, "polite": polite}

    def get_offers(self, sid: str, since: int) -> list[dict[str, Any]]:
        if self.private:
            found = list(self.offers.get(sid, {}).items())
        else:
            found = [(c, o) for s, table in self.offers.items() if s != sid for c, o in table.items()]
        return [
            {"connectionId": c, "sdp": o["sdp"], "polite": o["polite"]}
            for c, o in found
            if o["datetime"] > since
        ]

    def get_candidates(self, sid: str, since: int) -> list[dict[str, Any]]:
        out = []
        for cid in self.clients[sid]:
            pair = self.pairs.get(cid)
            if pair is None:
                continue
            other = pair[1] if pair[0] == sid else pair[0]
            got = [c for c in self.candidates.get(str(other), {}).get(cid, []) if c["datetime"] > since]
            if got:
                out.append({"connectionId": cid, "candidates": got})
        return out

    def post_offer(self, sid: str, cid: str, body: dict[str, Any]) -> Any:
        if self.private:
            pair = self.pairs.get(cid)
            if pair:
                other = pair[1] if pair[0] == sid else pair[0]
                if other is not None:
                    self.offers[other][cid] = {"sdp": body.get("sdp"), "datetime": now_ms(), "polite": True}
            return None
        self.pairs[cid] = [sid, None]
        self.offers[sid][cid] = {"sdp": body.get("sdp"), "datetime": now_ms(), "polite": False}
        return None

    def post_answer(self, sid: str, cid: str, body: dict[str, Any]) -> Any:
        self.clients[sid].add(cid)
        pair = self.pairs.get(cid)
        if pair is None:
            return None
        other = pair[1] if pair[0] == sid else pair[0]
        if not self.private:
            self.pairs[cid] = [other, sid]
        if other is not None and other in self.answers:
            self.answers[other][cid] = {"sdp": body.get("sdp"), "datetime": now_ms()}
            for cand in self.candidates[other].get(cid, []):
                cand["datetime"] = now_ms()
        return None


# ---------------------------------------------------------------- the server


class Server:
    def __init__(self, mode: str, private: bool, echo: bool) -> None:
        self.mode, self.echo = mode, echo
        self.ws = WsSignaling(private)
        self.http = HttpSignaling(private)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self.request(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
        body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
        if headers.get("upgrade", "").lower() == "websocket" and "sec-websocket-key" in headers:
            await self.websocket(reader, writer, headers["sec-websocket-key"])
            return False
        path, _, qs = target.partition("?")
        query = dict(p.partition("=")[::2] for p in qs.split("&") if p)
        if self.mode == "http" and (path == "/signaling" or path.startswith("/signaling/")):
            data = json.loads(body) if body.strip() else {}
            result = self.http.handle(
                method, path[len("/signaling") :], query, headers.get("session-id", ""), data
            )
        else:
            result = {"ok": True} if method == "GET" else 404
        if isinstance(result, int):
            self.reply(writer, result, b"")
        elif result is None:
            self.reply(writer, 200, b"OK", "text/plain")
        else:
            self.reply(writer, 200, json.dumps(result).encode())
        await writer.drain()
        return headers.get("connection", "").lower() != "close"

    @staticmethod
    def reply(writer: asyncio.StreamWriter, code: int, body: bytes, ctype: str = "application/json") -> None:
        writer.write(
            f"HTTP/1.1 {code} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    async def websocket(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        me = Client(writer)
        self.ws.clients.append(me)
        try:
            while True:
                opcode, data = await read_frame(reader)
                if opcode == 0x8:
                    writer.write(frame(0x8, data[:2]))
                    break
                if opcode == 0x9:
                    writer.write(frame(0xA, data))
                elif self.echo and opcode in (0x1, 0x2):
                    writer.write(frame(opcode, data))
                elif opcode == 0x1 and self.mode == "websocket":
                    msg = json.loads(data)
                    if isinstance(msg, dict):
                        self.ws.on_message(me, msg)
                await writer.drain()
        finally:
            self.ws.remove(me)


def parse(argv: list[str]) -> argparse.Namespace:
    bridge = os.path.basename(sys.argv[0]) == "riva-websocket-gateway"
    parser = argparse.ArgumentParser(prog=os.path.basename(sys.argv[0]))
    if bridge:
        parser.add_argument("--port", type=int, default=8080)
        args, _ = parser.parse_known_args(argv)
        args.type, args.mode, args.echo = "websocket", "public", True
        return args
    parser.add_argument("script", nargs="?", help="build/index.js (ignored)")
    parser.add_argument("-p", "--port", type=int, default=int(os.environ.get("PORT", "80")))
    parser.add_argument("-t", "--type", choices=("websocket", "http"), default="websocket")
    parser.add_argument("-m", "--mode", choices=("public", "private"), default="public")
    parser.add_argument("-s", "--secure", action="store_true")
    parser.add_argument("-l", "--logging", default="dev")
    args = parser.parse_args(argv)  # an unknown flag (--httpPort) exits, as the real server does
    args.echo = False
    return args


async def serve(args: argparse.Namespace) -> None:
    server = Server(args.type, args.mode == "private", args.echo)
    listener = await asyncio.start_server(server.handle, "0.0.0.0", args.port)
    log(NAME, f"{'echo' if args.echo else 'URS ' + args.type + ' ' + args.mode} on :{args.port}")
    async with listener:
        await listener.serve_forever()


def main() -> None:
    args = parse(sys.argv[1:])
    setup(NAME)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
