"""``gantune weights``: list, fetch, verify, inspect and import checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import GantuneError, WeightsError
from .common import console

weights_app = typer.Typer(
    name="weights",
    help=(
        "Pretrained files: the registry (weights.toml), the local cache, format conversion.\n\n"
        "Examples:\n\n"
        "  gantune weights list --kind generator\n\n"
        "  gantune weights fetch ffhq-1024 hyperstyle-ffhq\n\n"
        "  gantune weights info stylegan2-ffhq-config-f.pt\n\n"
        "  gantune weights import ffhq.pkl -o ffhq.safetensors"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def _out() -> Console:
    """stdout for results; wide and plain when piped so that nothing is cut."""
    c = Console(highlight=False)
    return c if c.is_terminal else Console(highlight=False, width=1000, soft_wrap=True)


def _size(n: int) -> str:
    if not n:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _local_state(entry) -> tuple[str, Path | None]:
    """('package' | 'cached' | 'partial' | 'no', local path or None)."""
    from ..weights.cache import cache_path, part_path

    pkg = entry.package_path()
    if pkg is not None:
        return "package", pkg
    p = cache_path(entry)
    if p.is_file():
        return "cached", p
    if part_path(p, entry.compression).is_file():
        return "partial", None
    return "no", None


# --- list -------------------------------------------------------------------------------------------------------------
@weights_app.command("list")
def list_command(
    kind: Annotated[Optional[str], typer.Option("--kind", "-k", help="Only this kind (generator, hypernetwork, w-encoder, direction, landmarks, ...).")] = None,
    long: Annotated[bool, typer.Option("--long", "-l", help="Also show where each file is published (source) and its URL.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output: every registry field plus the local state.")] = False,
) -> None:
    """Registry entries with kind, format, size, licence and whether a local copy exists.

    Example: gantune weights list --kind generator --long
    """
    from ..weights import entries

    rows = entries(kind)
    if as_json:
        out = []
        for e in rows:
            state, path = _local_state(e)
            out.append({**e.to_dict(), "local": state, "path": str(path) if path else None})
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table(title=f"gantune weights ({len(rows)})", show_lines=long)
    for col in ("name", "kind", "format", "size", "licence"):
        table.add_column(col, overflow="fold")
    if long:
        table.add_column("source", overflow="fold")
    table.add_column("local")
    for e in rows:
        state, _ = _local_state(e)
        cells = [e.name, e.kind, e.format, _size(e.size), e.licence]
        if long:
            cells.append(f"{e.source}\n{e.urls[0] if e.urls else 'ships inside the ' + e.package + ' package'}")
        cells.append({"package": "yes (package)", "cached": "yes", "partial": "partial", "no": "no"}[state])
        table.add_row(*cells)
    _out().print(table)


# --- fetch ------------------------------------------------------------------------------------------------------------
@weights_app.command("fetch")
def fetch_command(
    names: Annotated[list[str], typer.Argument(help="Registry names (gantune weights list) or URLs.", show_default=False)],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Download files into the cache (resumable, sha256-checked) and print their local paths.

    Example: gantune weights fetch ffhq-1024 w-encoder-ffhq hyperstyle-ffhq
    """
    from ..weights import fetch, get
    from ..weights.http import is_url

    failed = 0
    for name in names:
        try:
            path = fetch(name if is_url(name) else get(name), progress=not quiet)
        except GantuneError as e:
            if len(names) == 1:
                raise
            console.print(f"[bold red]error:[/] {name}: {e.one_line()}")
            failed += 1
            continue
        typer.echo(f"{name}\t{path}")
    if failed:
        raise typer.Exit(2)


# --- verify -----------------------------------------------------------------------------------------------------------
@weights_app.command("verify")
def verify_command(
    names: Annotated[Optional[list[str]], typer.Argument(help="Registry names or file paths; default: every local copy.", show_default=False)] = None,
) -> None:
    """Recompute the sha256 of local copies and compare with the registry. Unknown hashes are printed (and recorded).
    Exit status 1 when a file does not match.

    Example: gantune weights verify ffhq-1024
    """
    from ..weights import entries, get
    from ..io.hashing import sha256_file
    from ..weights.checksums import read_sidecar, write_sidecar

    out = _out()
    targets = []
    if names:
        for n in names:
            p = Path(n).expanduser()
            if p.is_file() and n not in {e.name for e in entries()}:
                targets.append((n, None, p))
            else:
                e = get(n)
                targets.append((n, e, _local_state(e)[1]))
    else:
        targets = [(e.name, e, path) for e in entries() for state, path in [_local_state(e)] if path is not None]
        if not targets:
            out.print("no local copies to verify (gantune weights fetch NAME)")
            return
    bad = 0
    for label, entry, path in targets:
        if path is None:
            out.print(f"missing   {label}: not in the cache")
            bad += 1
            continue
        digest = sha256_file(path, remember=False)  # verify reads the bytes, always
        if entry is None:
            out.print(f"computed  {label}  {digest}")
        elif entry.sha256:
            if digest == entry.sha256:
                out.print(f"ok        {label}  {digest}")
            else:
                out.print(f"MISMATCH  {label}  expected {entry.sha256}, got {digest}  ({path})")
                bad += 1
        elif entry.sha256_prefix and not digest.startswith(entry.sha256_prefix):
            out.print(f"MISMATCH  {label}  the published name says {entry.sha256_prefix}..., got {digest}  ({path})")
            bad += 1
        else:
            recorded = read_sidecar(path) if path.with_name(path.name + ".sha256").exists() else None
            if recorded and recorded != digest:
                out.print(f"CHANGED   {label}  recorded {recorded} at download, now {digest}  ({path})")
                bad += 1
                continue
            note = "no published sha256"
            if entry.package_path() != path:
                write_sidecar(path, digest)
                note += f"; recorded in {path.name}.sha256"
            out.print(f"computed  {label}  {digest}  ({note})")
    if bad:
        raise typer.Exit(1)


# --- info -------------------------------------------------------------------------------------------------------------
def _print_fields(out: Console, fields) -> None:
    """``field:`` then its value, values aligned in one column."""
    for name, value in fields:
        out.print(f"{name}:".ljust(14) + f" {value}")


@weights_app.command("info")
def info_command(
    spec: Annotated[str, typer.Argument(help="A registry name or a local file.", show_default=False)],
) -> None:
    """Describe a registry entry and/or a checkpoint file: detected format, architecture (resolution, channels per
    resolution, mapping depth, noise, w_avg), and for a HyperStyle file the tuned layers. Never downloads.

    Example: gantune weights info ffhq-1024
    """
    from ..weights import load_registry

    out = _out()
    reg = load_registry()
    path: Path | None
    if spec in reg:
        e = reg[spec]
        state, path = _local_state(e)
        out.print(f"name:          {e.name}  ({e.kind})")
        if e.description:
            out.print(f"description:   {e.description}")
        out.print(f"format:        {e.format}")
        out.print(f"file:          {e.file}  ({_size(e.size)})")
        out.print(f"licence:       {e.licence}")
        out.print(f"source:        {e.source}")
        for u in e.urls:
            out.print(f"url:           {u}")
        out.print(f"sha256:        {e.sha256 or '(unknown) ' + e.sha256_note}")
        if path is None:
            from ..weights.cache import cache_path

            out.print(f"local:         not cached (gantune weights fetch {e.name}; or place it at {cache_path(e)})")
            return
        out.print(f"local:         {path}" + ("  (shipped by the " + e.package + " package)" if state == "package" else ""))
        if e.kind not in ("generator", "hypernetwork"):
            return
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            from ..weights.download import resolve

            resolve(spec)  # raises the right error (unknown name with close matches, or no such file)
            raise WeightsError(f"{spec}: not a local file", "info never downloads; fetch it first")
    _describe_file(path, out)


def _describe_file(path: Path, out: Console) -> None:
    from ..weights import load_generator_file
    from ..weights.formats import ACCEPTED, GENERATOR_FORMATS, identify_file
    from ..weights.inspect import checkpoint_contents, generator_summary

    fmt, desc = identify_file(path)
    if fmt == "unknown":
        raise WeightsError(desc, ACCEPTED)
    if fmt in GENERATOR_FORMATS:
        G, ginfo = load_generator_file(path, "cpu")  # a damaged file fails here, before anything is printed
        _print_fields(out, [("path", path), ("detected", fmt)])
        _print_fields(out, generator_summary(G, dict(ginfo), path, fmt))
        return
    _print_fields(out, [("path", path), ("detected", fmt), ("checkpoint", desc)])
    contents = checkpoint_contents(path, fmt)
    if contents is None:
        return
    _print_fields(out, [("top level", ", ".join(contents.top_level))])
    if contents.tensors is not None:
        _print_fields(out, [("tensors", contents.tensors)])
        return
    _print_fields(out, [(f"opts.{k}", v) for k, v in contents.opts.items()])
    if contents.tuned_layers is not None:
        _print_fields(out, [("tuned layers", f"{len(contents.tuned_layers)} (from the keys)")])
        for j, name, kind in contents.tuned_layers:
            out.print(f"  {j:>3}  {name:<12} {kind}")
    try:
        G, ginfo = load_generator_file(path, "cpu")
    except GantuneError as e:
        _print_fields(out, [("decoder", f"not readable ({e.one_line()})")])
        return
    out.print("decoder (generator stored in the checkpoint):")
    _print_fields(out, generator_summary(G, dict(ginfo), path, fmt))


# --- import -----------------------------------------------------------------------------------------------------------
@weights_app.command("import")
def import_command(
    file: Annotated[str, typer.Argument(help="A generator checkpoint (rosinality .pt, ADA .pkl, native), a registry name or a URL.", show_default=False)],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Output .safetensors file.")],
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite the output file.")] = False,
) -> None:
    """Convert a generator to gantune's native safetensors file (weights + architecture config + provenance).

    Example: gantune weights import stylegan2-ffhq-config-f.pt -o ffhq-1024.safetensors
    """
    from ..weights import identify_file, load_generator_file, save_native
    from ..weights.checksums import file_sha256
    from ..weights.download import registry_name_for, resolve

    from ..errors import InputError

    if out_path.is_dir():
        raise InputError(f"-o {out_path} is a folder", "give the output file, e.g. -o ffhq-1024.safetensors")
    if out_path.exists() and not force:
        raise WeightsError(f"{out_path} exists", "use --force to overwrite it")
    src = resolve(file)
    if out_path.exists() and out_path.resolve() == Path(src).resolve():
        raise InputError(f"-o {out_path} is the input file", "gantune never writes over its input; choose another -o")
    fmt = identify_file(src)[0]
    G, ginfo = load_generator_file(src, "cpu")  # raises a one-line WeightsError for files without a generator
    meta = {"source_file": src.name, "source_format": fmt, "source_sha256": ginfo.get("sha256") or file_sha256(src),
            "registry_name": registry_name_for(file) or registry_name_for(src),
            "w_avg_computed": bool(ginfo.get("w_avg_computed", False)), "w_avg_source": ginfo.get("w_avg_source")}
    save_native(G, out_path, meta=meta)
    console.print(f"{src.name} ({fmt}) -> {out_path}: {G.cfg.describe()}")


def register(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")
