"""A real container registry on 127.0.0.1 for pull tests: Debian's `docker-registry` (distribution 2.8).

No public registry is reachable from the test hosts; scripts/test-host-setup.sh installs the package,
which starts nothing by itself. :func:`local_registry` runs one with a temp storage dir and stops it by
PID. Podman reaches it through a registries.conf that marks it insecure (plain HTTP), given to every
podman call that pulls with ``CONTAINERS_REGISTRIES_CONF``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support.testhost import free_port, podman, wait_for

REGISTRY = Path("/usr/bin/docker-registry")


@dataclass
class LocalRegistry:
    address: str  # 127.0.0.1:PORT
    pid: int
    storage: Path

    def registries_conf(self, path: Path) -> Path:
        """A registries.conf (for CONTAINERS_REGISTRIES_CONF) that trusts this registry over HTTP."""
        path.write_text(f'[[registry]]\nlocation = "{self.address}"\ninsecure = true\n')
        return path

    def push(self, local: str, name: str) -> str:
        """Push a local image as NAME (repository:tag) and return its full reference here."""
        ref = f"{self.address}/{name}"
        podman("push", "-q", "--tls-verify=false", local, ref, timeout=300)
        return ref

    def has(self, name: str, tag: str) -> bool:
        url = f"http://{self.address}/v2/{name}/manifests/{tag}"
        request = urllib.request.Request(
            url,
            method="HEAD",
            headers={
                "Accept": "application/vnd.oci.image.manifest.v1+json, "
                "application/vnd.docker.distribution.manifest.v2+json"
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False


def _v2_answers(address: str) -> bool:
    with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as response:
        return bool(response.status == 200)


@contextlib.contextmanager
def local_registry() -> Iterator[LocalRegistry]:
    """docker-registry serving a temp dir on a free 127.0.0.1 port; stopped (by PID) and removed after."""
    if not REGISTRY.is_file():
        raise FileNotFoundError(f"{REGISTRY} missing (apt-get install docker-registry)")
    root = Path(tempfile.mkdtemp(prefix="sparc-registry-"))
    address = f"127.0.0.1:{free_port()}"
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: {address}\n"
    )
    log = open(root / "registry.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [str(REGISTRY), "serve", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        try:
            wait_for(lambda: proc.poll() is None and _v2_answers(address), 15, what=f"registry on {address}")
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n{(root / 'registry.log').read_text(errors='replace')}") from exc
        yield LocalRegistry(address, proc.pid, root / "data")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
