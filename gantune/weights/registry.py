"""The weights registry: ``weights.toml`` parsed into validated :class:`Entry` records.

The packaged copy (``gantune/weights.toml``, a symlink to the top-level file in a checkout, a real file in a wheel)
is read through ``importlib.resources``; the repository file is the fallback. ``GANTUNE_REGISTRY`` may point to
another TOML file (tests, private mirrors).
"""

from __future__ import annotations

import difflib
import importlib.resources
import os
import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from ..errors import WeightsError
from .formats import FORMATS as CHECKPOINT_FORMATS

KINDS = (
    "generator", "hypernetwork", "w-encoder", "wplus-encoder", "direction", "landmarks", "face-detector", "identity",
    "backbone", "lpips-backbone", "lpips-linear", "clip", "styleclip-stats",
)
# checkpoints: the names weights.formats gives them (what `gantune weights info` detects); other files: their layout
FILE_FORMATS = ("interfacegan-pt", "ganspace-pt", "dlib-dat", "torchvision-pth", "pytorch-pth", "lpips-pth",
                "openai-clip-jit", "styleclip-fs3-npy", "styleclip-s-mean-std")
FORMATS = tuple(f for f in CHECKPOINT_FORMATS if f != "unknown") + FILE_FORMATS
COMPRESSIONS = ("bz2",)
REQUIRED = ("name", "kind", "file", "urls", "sha256", "size", "format", "licence", "source")
OPTIONAL = ("sha256_note", "sha256_prefix", "compression", "package", "package_file", "description")
_HEX = re.compile(r"^[0-9a-f]*$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class Entry:
    name: str  # registry name, e.g. "ffhq-1024"
    kind: str  # what it is for, one of KINDS
    file: str  # local file name inside the cache's weights/ folder
    urls: tuple[str, ...]  # download URLs (http, https or file), tried in order
    sha256: str  # lowercase hex sha256 of the final file; "" when unknown
    size: int  # bytes of the final file; 0 when unknown
    format: str  # how it is read, one of FORMATS
    licence: str  # licence as stated by the publisher
    source: str  # where the link is published (repository + README line, human-readable page)
    sha256_note: str = ""  # why sha256 is what it is (required when sha256 is "")
    sha256_prefix: str = ""  # leading sha256 hex digits published in the file name (torchvision); checked when set
    compression: str = ""  # "bz2" when the URLs serve a compressed copy that is unpacked into `file`
    package: str = ""  # Python package that ships the file (used before any download), e.g. face_recognition_models
    package_file: str = ""  # path of the file inside that package's folder
    description: str = ""  # one line for `gantune weights info`

    @property
    def sha256_known(self) -> bool:
        return bool(self.sha256)

    def package_path(self) -> Path | None:
        """The file shipped by ``package`` when that package is installed and has it, else None.

        The package folder is located with ``find_spec`` without importing it (importing
        ``face_recognition_models`` fails with current setuptools because it imports ``pkg_resources``).
        """
        if not self.package:
            return None
        import importlib.util

        try:
            spec = importlib.util.find_spec(self.package)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        for folder in spec.submodule_search_locations:
            p = Path(folder) / self.package_file
            if p.is_file():
                return p
        return None

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in REQUIRED + OPTIONAL}
        d["urls"] = list(self.urls)
        return d


def _problem(where: str, msg: str) -> WeightsError:
    return WeightsError(f"weights registry {where}: {msg}", "fix weights.toml (see the field list at its top)")


def _parse_entry(raw: dict, index: int, origin: str) -> Entry:
    where = f"{origin} entry #{index + 1}" + (f" ({raw['name']!r})" if isinstance(raw.get("name"), str) else "")
    if not isinstance(raw, dict):
        raise _problem(where, "is not a table")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise _problem(where, f"missing field(s) {', '.join(missing)}")
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise _problem(where, f"unknown field(s) {', '.join(unknown)}")
    for k in REQUIRED + OPTIONAL:
        if k in raw and k not in ("urls", "size") and not isinstance(raw[k], str):
            raise _problem(where, f"field {k} must be a string")
    if not _NAME.match(raw["name"]):
        raise _problem(where, "name must be lowercase letters, digits, '.', '_' or '-'")
    if raw["kind"] not in KINDS:
        raise _problem(where, f"kind {raw['kind']!r} is not one of {', '.join(KINDS)}")
    if raw["format"] not in FORMATS:
        close = difflib.get_close_matches(str(raw["format"]), FORMATS, n=1)
        raise _problem(where, f"format {raw['format']!r} is not one of {', '.join(FORMATS)}"
                       + (f" (did you mean {close[0]!r}?)" if close else ""))
    urls = raw["urls"]
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise _problem(where, "urls must be a list of strings")
    if not urls and not raw.get("package"):
        raise _problem(where, "urls may be empty only for a file that a package ships (package, package_file)")
    for u in urls:
        if urlparse(u).scheme not in ("http", "https", "file"):
            raise _problem(where, f"url {u!r} is not http, https or file")
    if not isinstance(raw["size"], int) or isinstance(raw["size"], bool) or raw["size"] < 0:
        raise _problem(where, "size must be a whole number of bytes (0 = unknown)")
    sha = raw["sha256"]
    if sha and (len(sha) != 64 or not _HEX.match(sha)):
        raise _problem(where, "sha256 must be 64 lowercase hex digits or \"\"")
    if not sha and not raw.get("sha256_note", "").startswith("unknown"):
        raise _problem(where, 'sha256 is "" but sha256_note does not say "unknown: ..."')
    prefix = raw.get("sha256_prefix", "")
    if prefix and not _HEX.match(prefix):
        raise _problem(where, "sha256_prefix must be lowercase hex")
    if sha and prefix and not sha.startswith(prefix):
        raise _problem(where, "sha256 does not start with sha256_prefix")
    if raw.get("compression", "") not in ("",) + COMPRESSIONS:
        raise _problem(where, f"compression must be one of {', '.join(COMPRESSIONS)}")
    if bool(raw.get("package")) != bool(raw.get("package_file")):
        raise _problem(where, "package and package_file go together")
    name_part = raw["file"]
    if not name_part or "/" in name_part or "\\" in name_part or name_part.startswith("."):
        raise _problem(where, "file must be a plain file name")
    for k in ("licence", "source"):
        if not raw[k].strip():
            raise _problem(where, f"{k} must not be empty")
    fields = {k: raw[k] for k in REQUIRED + OPTIONAL if k in raw}
    fields["urls"] = tuple(urls)
    return Entry(**fields)


def parse_registry(text: str, origin: str = "weights.toml") -> dict[str, Entry]:
    """Parse and validate registry TOML text. Raises :class:`WeightsError` naming the faulty entry and field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _problem(origin, f"is not valid TOML ({e})") from None
    unknown_top = sorted(set(data) - {"weights"})
    if unknown_top:
        raise _problem(origin, f"unknown top-level key(s) {', '.join(unknown_top)}")
    raw_entries = data.get("weights", [])
    if not isinstance(raw_entries, list):
        raise _problem(origin, "use [[weights]] tables")
    out: dict[str, Entry] = {}
    files: dict[str, str] = {}
    for i, raw in enumerate(raw_entries):
        e = _parse_entry(raw, i, origin)
        if e.name in out:
            raise _problem(origin, f"name {e.name!r} appears twice")
        if e.file in files:
            raise _problem(origin, f"entries {files[e.file]!r} and {e.name!r} share the file name {e.file!r}")
        out[e.name], files[e.file] = e, e.name
    return out


def registry_text() -> tuple[str, str]:
    """(TOML text, where it came from): $GANTUNE_REGISTRY, else the packaged copy, else the repository file."""
    override = os.environ.get("GANTUNE_REGISTRY", "")
    if override:
        p = Path(override).expanduser()
        if not p.is_file():
            raise WeightsError(f"GANTUNE_REGISTRY={override}: no such file", "unset it or point it to a weights.toml")
        return p.read_text(encoding="utf-8"), str(p)
    try:
        res = importlib.resources.files("gantune").joinpath("weights.toml")
        if res.is_file():
            return res.read_text(encoding="utf-8"), str(res)
    except (FileNotFoundError, ModuleNotFoundError, OSError):
        pass
    repo = Path(__file__).resolve().parents[2] / "weights.toml"
    if repo.is_file():
        return repo.read_text(encoding="utf-8"), str(repo)
    raise WeightsError("the weights registry (weights.toml) is missing from the installation", "reinstall gantune")


@lru_cache(maxsize=4)
def _load_cached(text: str, origin: str) -> dict[str, Entry]:
    return parse_registry(text, origin)


def load_registry() -> dict[str, Entry]:
    """All entries by name, in file order."""
    return dict(_load_cached(*registry_text()))


def names() -> list[str]:
    return list(load_registry())


def close_matches(name: str, limit: int = 3) -> list[str]:
    reg = load_registry()
    hits = difflib.get_close_matches(name.lower(), list(reg), n=limit, cutoff=0.5)
    # substring matches catch "ffhq" -> ffhq-1024, ffhq-ada-1024 which difflib may rank low
    for n in reg:
        if name.lower() in n and n not in hits:
            hits.append(n)
    return hits[:limit] if hits else []


def get(name: str) -> Entry:
    """The entry called ``name``; an unknown name raises :class:`WeightsError` that lists close matches."""
    reg = load_registry()
    if name in reg:
        return reg[name]
    hits = close_matches(name)
    msg = f"unknown weights name {name!r}"
    if hits:
        msg += f"; did you mean {', '.join(hits)}?"
    raise WeightsError(msg, "run `gantune weights list` to see every name")


def entries(kind: str | None = None) -> list[Entry]:
    """Entries in file order, optionally only those of one ``kind``."""
    if kind is not None and kind not in KINDS:
        raise WeightsError(f"unknown kind {kind!r}", f"use one of {', '.join(KINDS)}")
    return [e for e in load_registry().values() if kind is None or e.kind == kind]
