"""Profile -> an NGINX reverse-proxy file: what a PubApps user asks UF Research Computing to install.

PubApps serves each VM behind NGINX; the ticket asks for `/api` -> the MAS and `/signal` -> the URS
signaling server (WebSocket: the Upgrade/Connection headers must be passed on, and idle sessions must
not be cut after NGINX's default 60 s). The output is one file for the `http` context
(`/etc/nginx/conf.d/STACK.conf`): a `map` for the Connection header and one `server` block.

The prefix is stripped (`proxy_pass http://host:port/`): `/api/health` reaches the MAS as `/health`,
`wss://site/signal/` reaches signaling at `/`, where URS serves its WebSocket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sparc_agent.errors import InvalidInput
from sparc_agent.export import host_ip, is_loopback, published, source_label
from sparc_agent.profile.model import Profile

API_TIMEOUT_S = 300  # an LLM answer can take minutes; NGINX's default read timeout is 60 s
SIGNAL_TIMEOUT_S = 3600  # a signaling WebSocket idles between offers; 1 h before NGINX closes it

# what may reach the file from the command line: no spaces, quotes, `;`, braces or `$`
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+")
_SERVER_NAME = re.compile(r"[A-Za-z0-9_*.~^-]+(\s+[A-Za-z0-9_*.~^-]+)*")
_LISTEN = re.compile(r"(\[[0-9A-Fa-f:.]+\]:|[A-Za-z0-9.-]+:)?[0-9]{1,5}( ssl)?")


@dataclass(frozen=True)
class NginxOptions:
    api: str = "mas"  # SERVICE or SERVICE:HOST_PORT
    signal: str = "signaling"
    server_name: str = "_"
    listen: str = "80"
    upstream: str = "127.0.0.1"  # where NGINX reaches the pod's published ports


@dataclass(frozen=True)
class Route:
    location: str
    service: str
    port: int
    websocket: bool


def _probe_port(profile: Profile, service: str) -> int | None:
    health = profile.services[service].health
    return getattr(health.probe, "port", None) if health is not None else None


def resolve_route(
    profile: Profile, location: str, choice: str, option: str, *, websocket: bool, upstream: str
) -> Route:
    """SERVICE[:PORT] -> the service and its published TCP host port (default: its probe's port)."""
    service, _, port_text = choice.partition(":")
    if service not in profile.services:
        raise InvalidInput(
            f"{option} {choice}: stack {profile.name} has no service {service!r}"
            f" (services: {', '.join(profile.services)}); name one as {option} SERVICE[:PORT]"
        )
    if port_text and not port_text.isdigit():
        raise InvalidInput(f"{option} {choice}: the port must be a number")
    port = int(port_text) if port_text else _probe_port(profile, service)
    if port is None:
        raise InvalidInput(
            f"{option} {choice}: {service} has no probe port; give it as {option} {service}:PORT"
        )
    found = published(profile, port, "tcp")
    if found is None:
        raise InvalidInput(
            f"{option} {choice}: TCP port {port} is not published in pod.ports"
            f' (add "127.0.0.1:{port}:{port}": NGINX reaches the service through it)'
        )
    if is_loopback(host_ip(profile, found[0])) and not (is_loopback(upstream) or upstream == "localhost"):
        raise InvalidInput(
            f"{option} {choice}: port {port} is published on {host_ip(profile, found[0])} only, which NGINX"
            f" at {upstream} cannot reach (publish it on the VM's address in pod.ports, or run NGINX on it)"
        )
    return Route(location, service, port, websocket)


def _check(value: str, pattern: re.Pattern[str], option: str, example: str) -> str:
    if not pattern.fullmatch(value):
        raise InvalidInput(f"{option} {value!r}: not allowed here (e.g. {example})")
    return value


def _location(route: Route, upstream: str, connection_var: str) -> list[str]:
    lines = [
        f"    location {route.location} {{",
        f"        proxy_pass http://{upstream}:{route.port}/;",
        "        proxy_http_version 1.1;",
        "        proxy_set_header Host $host;",
        "        proxy_set_header X-Real-IP $remote_addr;",
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "        proxy_set_header X-Forwarded-Proto $scheme;",
    ]
    if route.websocket:
        lines += [
            "        proxy_set_header Upgrade $http_upgrade;",
            f"        proxy_set_header Connection ${connection_var};",
            f"        proxy_read_timeout {SIGNAL_TIMEOUT_S}s;",
            f"        proxy_send_timeout {SIGNAL_TIMEOUT_S}s;",
            "        proxy_buffering off;",
        ]
    else:
        lines += [f"        proxy_read_timeout {API_TIMEOUT_S}s;"]
    return [*lines, "    }"]


def export_nginx(profile: Profile, options: NginxOptions, source: str) -> str:
    upstream = _check(options.upstream, _HOST, "--upstream", "127.0.0.1 or vm.example.org")
    server_name = _check(options.server_name, _SERVER_NAME, "--server-name", "sparc.rc.ufl.edu")
    listen = _check(options.listen, _LISTEN, "--listen", "80, 127.0.0.1:8081 or 443 ssl")
    routes = [
        resolve_route(profile, "/api/", options.api, "--api", websocket=False, upstream=upstream),
        resolve_route(profile, "/signal/", options.signal, "--signal", websocket=True, upstream=upstream),
    ]
    connection_var = f"{profile.name.replace('-', '_')}_connection_upgrade"
    out = [
        f"# Generated by sparc-agent export nginx from {source_label(source)} (stack {profile.name}).",
        f"# For NGINX's http context, e.g. /etc/nginx/conf.d/{profile.name}.conf; then `nginx -t`.",
    ]
    out += [
        f"# {r.location:<9} -> {r.service} on {upstream}:{r.port}"
        + (f" (WebSocket, {SIGNAL_TIMEOUT_S}s timeouts)" if r.websocket else f" ({API_TIMEOUT_S}s timeout)")
        for r in routes
    ]
    out += [
        "# The prefix is stripped: /api/health reaches the service as /health.",
        f"map $http_upgrade ${connection_var} {{",
        "    default upgrade;",
        "    ''      close;",
        "}",
        "",
        "server {",
        f"    listen {listen};",
        f"    server_name {server_name};",
    ]
    for route in routes:
        out += ["", *_location(route, upstream, connection_var)]
    return "\n".join([*out, "}", ""])
