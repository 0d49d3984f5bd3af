"""Probes from inside a pod's network namespace, for ports the pod does not publish on the host.

A port published only so that the agent can probe it is a port every local user can reach (MAS spends
the owner's OpenAI key). So a probe whose port is not in `pod.ports` runs where the service listens:
inside the pod's network namespace, on 127.0.0.1 there.

One prober process per pod does it: started once (`nsenter` into the network namespace of the pod's
infra process, see host/netns.py) and then kept, so a probe costs a line on a pipe, not a process.
It runs the same probe functions as the host does. The wire is one JSON object per line:

    agent -> prober   {"id": 7, "probe": {"kind": "http", "port": 8000, "path": "/health", ...}}
    prober -> agent   {"ready": true, "netns": INODE}            once, when it is in the namespace
                      {"id": 7, "outcome": "ok", "latency_s": 0.002, "detail": "HTTP 200"}

The prober exits when its stdin closes (the agent went away) and, with POD_GONE, when the infra
process exits (the pod stopped: the namespace it holds is a dead one). A prober that dies or does
not answer within the probe's timeout plus GRACE_S is killed, its probes come back as ERROR (our
fault, never the service's) and the next probe starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Final

from sparc_agent.host.process import Process
from sparc_agent.probes import run_probe
from sparc_agent.probes.base import ProbeOutcome, ProbeResult
from sparc_agent.probes.kinds import KINDS, kind_of, spec_from_fields

GRACE_S: Final = 1.0  # the prober answers within the probe's own timeout; this much later it is hung
START_S: Final = 15.0  # podman inspect + nsenter + a Python start, on a busy node
CLOSE_S: Final = 2.0
POD_GONE: Final = 3  # the prober's exit code when the pod's infra process exited
MAX_LINE: Final = 1 << 16
TAIL: Final = 2048  # bytes of the prober's stderr kept for the error detail


# ---------------------------------------------------------------- the wire


def encode_probe(spec: Any) -> dict[str, Any]:
    kind = kind_of(spec)
    if kind is None or kind.transport == "exec":
        raise ValueError(f"{type(spec).__name__} does not run in a pod's network namespace")
    return {"kind": kind.name, **dataclasses.asdict(spec)}


def decode_probe(data: dict[str, Any]) -> Any:
    if KINDS[data["kind"]].transport == "exec":
        raise ValueError(f"{data['kind']} probes do not run in the prober")
    return spec_from_fields(data["kind"], data)


def encode_result(rid: int, result: ProbeResult) -> bytes:
    msg = {"id": rid, "outcome": result.outcome.value, "latency_s": result.latency_s, "detail": result.detail}
    return json.dumps(msg).encode() + b"\n"


def decode_result(msg: dict[str, Any]) -> ProbeResult:
    return ProbeResult(ProbeOutcome(msg["outcome"]), float(msg["latency_s"]), str(msg["detail"]))


# ---------------------------------------------------------------- the prober (inside the pod)


def _send(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


async def _answer(line: bytes) -> None:
    rid = 0
    try:
        request = json.loads(line)
        rid = int(request["id"])
        result = await run_probe(decode_probe(request["probe"]))
    except (ValueError, KeyError, TypeError) as exc:
        result = ProbeResult(ProbeOutcome.ERROR, 0.0, f"bad request to the in-pod prober: {exc}")
    _send(encode_result(rid, result))


async def serve(infra_pid: int) -> int:
    """Answer probe requests from stdin until it closes (0) or the infra process exits (POD_GONE)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    gone = asyncio.Event()
    pidfd = os.pidfd_open(infra_pid)  # readable when the infra process exits
    loop.add_reader(pidfd, gone.set)
    _send(json.dumps({"ready": True, "netns": own_netns()}).encode() + b"\n")
    answering: set[asyncio.Task[None]] = set()
    watch = asyncio.ensure_future(gone.wait())
    while True:
        read = asyncio.ensure_future(reader.readline())
        await asyncio.wait({read, watch}, return_when=asyncio.FIRST_COMPLETED)
        if watch.done():
            read.cancel()
            return POD_GONE
        line = read.result()
        if not line:
            watch.cancel()
            return 0
        task = asyncio.create_task(_answer(line))
        answering.add(task)
        task.add_done_callback(answering.discard)


def main() -> None:
    sys.exit(asyncio.run(serve(int(sys.argv[1]))))


# ---------------------------------------------------------------- the agent's side


@dataclass
class _Session:
    """One prober process and the probes sent to it that await an answer."""

    proc: Process
    pending: dict[int, asyncio.Future[ProbeResult]] = field(default_factory=dict)
    stderr: bytes = b""
    done: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # held: the loop keeps weak references

    def finish(self, result: ProbeResult) -> None:
        self.done = True
        for fut in self.pending.values():
            if not fut.done():
                fut.set_result(result)
        self.pending.clear()


def own_netns() -> int:
    """The inode of this process's network namespace."""
    return os.stat("/proc/self/ns/net").st_ino


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    return f"killed by signal {-code}" if code < 0 else f"exit {code}"


class PodProber:
    """The prober of one pod, started on first use and again after it died."""

    def __init__(self, pod: str) -> None:
        self.pod = pod
        self.starts = 0  # processes started so far (the first and every restart)
        self._session: _Session | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._news: str | None = None  # how the last prober died, when no probe was there to say it

    @property
    def pid(self) -> int | None:
        s = self._session
        return s.proc.pid if s is not None and not s.done else None

    def _error(self, t0: float, what: str) -> ProbeResult:
        return ProbeResult(
            ProbeOutcome.ERROR, time.monotonic() - t0, f"in-pod prober of pod {self.pod} {what}"
        )

    async def probe(self, spec: Any) -> ProbeResult:
        """Never raises (but for cancellation), as run_probe."""
        from sparc_agent.errors import SparcError
        from sparc_agent.host.netns import PodNotRunning

        t0 = time.monotonic()
        news, self._news = self._news, None
        try:
            payload = encode_probe(spec)
            session = await self._running()
        except PodNotRunning as exc:
            return ProbeResult(ProbeOutcome.FAILED, time.monotonic() - t0, str(exc))
        except (SparcError, OSError, ValueError) as exc:
            return self._error(t0, f"did not start: {exc}")
        if news is not None:  # our fault, reported once; the probe itself runs next time
            return self._error(t0, f"{news}; a new one runs (pid {session.proc.pid})")
        rid = next(self._ids)
        answer: asyncio.Future[ProbeResult] = asyncio.get_running_loop().create_future()
        session.pending[rid] = answer
        try:
            assert session.proc.stdin is not None
            session.proc.stdin.write(json.dumps({"id": rid, "probe": payload}).encode() + b"\n")
            with contextlib.suppress(ConnectionError):  # it died: the reader answers for it
                await session.proc.stdin.drain()
            async with asyncio.timeout(spec.timeout_s + GRACE_S):
                result = await answer
        except TimeoutError:
            hung = self._error(t0, f"did not answer within {spec.timeout_s + GRACE_S:g}s: killed")
            self._kill(session, hung)
            return hung
        finally:
            session.pending.pop(rid, None)
        return result

    def _from_prober(self, result: ProbeResult) -> ProbeResult:
        """A result of the prober itself; a failure says where it was seen."""
        if result.outcome is ProbeOutcome.OK:
            return result
        return dataclasses.replace(result, detail=f"{result.detail} (inside pod {self.pod})")

    async def _running(self) -> _Session:
        async with self._lock:
            if self._session is None or self._session.done:
                self._session = await self._start()
            return self._session

    async def _start(self) -> _Session:
        from sparc_agent.host.netns import infra_pid, spawn_inside

        pid = await infra_pid(self.pod)
        # -P: never import from the agent's working directory
        proc = await spawn_inside(pid, [sys.executable, "-P", "-m", __name__, str(pid)])
        session = _Session(proc)
        assert proc.stdout is not None and proc.stderr is not None
        session.tasks.append(asyncio.create_task(self._drain_stderr(session, proc.stderr)))
        try:
            async with asyncio.timeout(START_S):
                hello = await proc.stdout.readline()
                if not hello:
                    await asyncio.gather(proc.wait(), *session.tasks)
                    why = session.stderr.decode(errors="replace").strip()
                    raise OSError(f"{_exit_text(proc.returncode)}: {why}")
            if json.loads(hello).get("netns") == own_netns():  # never probe the host and call it the pod
                raise OSError("it runs in the agent's own network namespace, not the pod's")
        except BaseException:
            self._kill(session, ProbeResult(ProbeOutcome.ERROR, 0.0, "did not start"))
            await asyncio.shield(asyncio.gather(proc.wait(), *session.tasks))
            raise
        self.starts += 1
        session.tasks.append(asyncio.create_task(self._read(session, proc.stdout)))
        return session

    @staticmethod
    async def _drain_stderr(session: _Session, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(4096):
            session.stderr = (session.stderr + chunk)[-TAIL:]

    async def _read(self, session: _Session, stream: asyncio.StreamReader) -> None:
        with contextlib.suppress(ValueError, ConnectionError):  # a line too long: treat as dead
            while line := await stream.readline():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    msg = json.loads(line)
                    fut = session.pending.get(int(msg["id"]))
                    if fut is not None and not fut.done():
                        fut.set_result(self._from_prober(decode_result(msg)))
        code = await session.proc.wait()
        if session.done:  # we killed or closed it: its probes have their answers
            return
        if code == POD_GONE:
            why = f"pod {self.pod} stopped: its network namespace went away"
            session.finish(ProbeResult(ProbeOutcome.FAILED, 0.0, why))
            return
        tail = session.stderr.decode(errors="replace").strip().splitlines()[-1:]
        died = f"died ({_exit_text(code)}{': ' + tail[0] if tail else ''})"
        if not session.pending:
            self._news = died  # between probes: the next one says so
        session.finish(self._error(time.monotonic(), f"{died}; a new one starts with the next probe"))

    def _kill(self, session: _Session, result: ProbeResult) -> None:
        with contextlib.suppress(ProcessLookupError):
            session.proc.kill()
        session.finish(result)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is None or session.proc.returncode is not None:
            return
        session.finish(ProbeResult(ProbeOutcome.ERROR, 0.0, f"in-pod prober of pod {self.pod} closed"))
        assert session.proc.stdin is not None
        session.proc.stdin.close()  # EOF: it exits by itself
        try:
            async with asyncio.timeout(CLOSE_S):
                await session.proc.wait()
        except TimeoutError:
            self._kill(session, ProbeResult(ProbeOutcome.ERROR, 0.0, "closed"))
        await asyncio.gather(session.proc.wait(), *session.tasks)


class PodProbers:
    """Where each probe runs: on the host, or (`pod` given) through that pod's prober."""

    def __init__(self) -> None:
        self._probers: dict[str, PodProber] = {}

    def prober(self, pod: str) -> PodProber:
        return self._probers.setdefault(pod, PodProber(pod))

    async def run(self, spec: Any, *, container: str | None = None, pod: str | None = None) -> ProbeResult:
        kind = kind_of(spec)
        if pod is None or kind is None or kind.transport == "exec":  # exec runs in the container anyway
            return await run_probe(spec, container=container)
        return await self.prober(pod).probe(spec)

    async def aclose(self) -> None:
        probers, self._probers = list(self._probers.values()), {}
        await asyncio.gather(*(p.close() for p in probers))

    async def __aenter__(self) -> PodProbers:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


if __name__ == "__main__":
    main()
