"""The generators a batch of records needs, each loaded once, and the one a record was made with."""

from __future__ import annotations

import logging

from ..errors import InputError
from .render import record_generator_spec
from ..weights import load_generator

log = logging.getLogger("gantune")


class GeneratorCache:
    """Loads each generator once per run (on ``device``, in ``dtype`` when given)."""

    def __init__(self, device, dtype=None) -> None:
        self.device, self.dtype, self._cache = device, dtype, {}

    def get(self, spec: str):
        """(Generator in eval mode, info) for a registry name, path or URL."""
        if spec not in self._cache:
            G, info = load_generator(spec, device=self.device)
            if self.dtype is not None:
                G.set_precision(self.dtype)
            self._cache[spec] = (G.eval(), info)
        return self._cache[spec]


def generator_for(cache: GeneratorCache, weights: str | None, rec):
    """The generator to render ``rec`` with: ``weights`` when given, else the one the record names (a registry name
    or a local path; never a URL from a record). A note when its sha256 is not the one the record was made with."""
    spec = weights or record_generator_spec(rec)
    if not spec:
        raise InputError("the record does not name its generator", "pass --weights")
    G, info = cache.get(spec)
    want = (rec.meta.get("generator") or {}).get("sha256")
    if weights is None and want and info.get("sha256") and want != info.get("sha256"):
        log.warning(f"note: {spec} has sha256 {info['sha256'][:12]}…, the record was made with {want[:12]}…")
    return G
