#!/usr/bin/env python3
"""Time validate + render of a generated profile with N services (default 1,000).

Baseline, measured side by side in the same run: PyYAML's plain load of the same file
with the fastest loader installed (libyaml's CSafeLoader when present): the floor any
YAML-based tool pays, so the ratio shows what line tracking, bomb/depth guards,
validation, cross-checks and rendering cost on top. Best of --repeat runs.
Last line: `render: services=N seconds=S`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from sparc_agent.profile.load import load_profile
from sparc_agent.render import Target, render


def profile_text(services: int) -> str:
    ports = "\n".join(f'    - "{20000 + i}:{8000 + (i % 100)}"' for i in range(min(services, 1000)))
    lines = [
        "apiVersion: sparc-agent/v1",
        "name: bench",
        "pod:",
        "  ports:",
        ports,
        "volumes: {models: {}}",
        "secrets: {token: {env: TOKEN}}",
        "services:",
    ]
    for i in range(services):
        lines += [
            f"  s{i}:",
            f"    image: localhost/bench/s{i}:1.0",
            f'    command: ["serve", "--port", "{8000 + i % 100}", "--name", "s{i} 100%"]',
            '    env: {A: "x", B: 2, C: "$HOME"}',
            "    secrets: {TOKEN: token}",
            '    volumes: ["models:/m:ro"]',
            "    gpus: 1",
            "    resources: {cpus: 1, memory: 1g}",
            f"    health: {{http: {{port: {20000 + (i % 1000)}, path: /health}}, interval: 2s}}",
        ]
        if i:
            lines.append(f"    depends_on: {{s{i - 1}: healthy}}")
    return "\n".join(lines) + "\n"


def best_of(repeat: int, fn: object) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        text = profile_text(args.services)
        path.write_text(text)

        def ours() -> None:
            render(load_profile(str(path)).profile, Target.for_podman("5.4"))

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

        def baseline() -> None:
            yaml.load(path.read_text(), Loader=loader)

        files = render(load_profile(str(path)).profile, Target.for_podman("5.4"))
        ours_s = best_of(args.repeat, ours)
        base_s = best_of(args.repeat, baseline)
    print(f"profile: {len(text) / 1024:.0f} KiB, {args.services} services -> {len(files)} files")
    print(f"baseline yaml.load ({getattr(yaml, 'CSafeLoader', yaml.SafeLoader).__name__}): {base_s:.3f} s")
    print(f"sparc-agent validate+render: {ours_s:.3f} s (ratio {ours_s / base_s:.2f}x the bare YAML parse)")
    print(f"render: services={args.services} seconds={ours_s:.3f}")


if __name__ == "__main__":
    main()
