"""What apply asks the host before the profile is validated, so that the answers come while it is.

Light on purpose: the command line imports this and starts these questions before it imports the
validator and the renderer (pydantic, jinja2: ~0.1 s of a fresh process).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from sparc_agent.host import podman


@dataclass(frozen=True)
class EarlyImages:
    named: frozenset[str]  # the images the profile's files name
    missing: list[str]  # those not in local storage


def images_early(profile: str, overlays: Sequence[str]) -> EarlyImages | None:
    """Which images the profile's files name and which are missing, read plainly (no validation, no
    --set) so that podman is asked while the profile validates; None when the files do not read so.

    Trusted only when validation names the same images and none is missing: sparc-agent never removes
    an image, so "all present" can only turn false by hand (`podman rmi`), which asking under the lock
    would not see either; a "missing" answer is asked again under the lock (an apply we waited for may
    have pulled it)."""
    import yaml  # validation imports it too

    images: dict[str, str] = {}
    try:
        for path in (profile, *overlays):
            services = yaml.safe_load(Path(path).read_text()).get("services") or {}
            images.update({n: s["image"] for n, s in services.items() if isinstance(s.get("image"), str)})
    except (OSError, ValueError, AttributeError, yaml.YAMLError):  # validation will say what is wrong
        return None
    return EarlyImages(frozenset(images.values()), podman.missing_images(images.values()))


async def missing_images(images: list[str], early: Future[EarlyImages | None] | None) -> list[str]:
    """The images not in local storage: from images_early() when it asked about exactly these and found
    all, else asked now."""
    known = await asyncio.wrap_future(early) if early is not None else None
    if known is not None and known.named == set(images) and not known.missing:
        return []
    return await asyncio.to_thread(podman.missing_images, images)
