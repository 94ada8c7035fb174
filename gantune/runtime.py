"""Device and dtype selection shared by the library and the CLI."""

from __future__ import annotations

import functools
import logging

import torch

from .errors import InputError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@functools.cache
def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere oneDNN emulates it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU. ``cuda`` without a GPU is an error with a hint."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is visible", "use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}", "use auto, cpu, cuda or cuda:N") from None


def bf16_in_hardware(device: torch.device) -> bool:
    """bf16 computed in hardware: a CUDA GPU that supports it, or a CPU with AVX512-BF16 / AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and native_bf16_cpu()


_noted: set[str] = set()


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device | None = None) -> torch.dtype:
    """A compute dtype by name. ``auto``: bfloat16 where the hardware computes it (``device``; default the one
    ``auto`` picks), float32 elsewhere. bfloat16 or float16 asked for on a CPU without bf16 in hardware is said once,
    as a note: it runs there about 10x slower than float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    dev = resolve_device(device if device is not None else "auto")
    name = dtype.lower()
    if name == "auto":
        return torch.bfloat16 if bf16_in_hardware(dev) else torch.float32
    try:
        out = DTYPES[name]
    except KeyError:
        raise InputError(f"unknown dtype {dtype!r}", "use float32, bfloat16, float16 or auto") from None
    if out != torch.float32 and dev.type == "cpu" and not native_bf16_cpu() and name not in _noted:
        _noted.add(name)
        logging.getLogger("gantune").warning(
            f"note: this CPU computes no bf16 in hardware (no AVX512-BF16 / AMX): {name} runs about 10x slower than "
            "float32 here; --dtype float32 is the fast choice")
    return out


def check_compile_device(device: torch.device) -> None:
    """``--compile`` is for CUDA: elsewhere a one-line error (the CLI asks before anything else runs)."""
    if device.type != "cuda":
        raise InputError(f"--compile is for CUDA devices, not {device}", "drop --compile, or run with --device cuda")


def compile_synthesis(G, device: torch.device) -> None:
    """``torch.compile`` G's synthesis network in place (its state-dict keys unchanged), for inference on CUDA: the
    per-image convolutions then run one image at a time on channels-last maps (``gantune.accel.Settings.per_image_conv``) and
    the compiler fuses the element-wise passes around them (on an H200, bf16, batch 32: HyperStyle 5 iterations at
    1024 px 12.5 against 20 ms/img eager, the generator 1.05 against 2.6; the first call compiles for about a
    minute, and each new batch size compiles again). Opt-in (``--compile``): a one-photo run would not repay it."""
    check_compile_device(device)
    import torch._dynamo

    # one frame per input signature: with and without offsets, a cached prefix or not, each batch size
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    G.synthesis.compile(dynamic=False)


def uncompile_synthesis(G) -> None:
    """Undo :func:`compile_synthesis`: G's synthesis runs eagerly again (``nn.Module.compile`` keeps the compiled
    callable in a private attribute, and there is no public way back; this is the one place that touches it)."""
    G.synthesis._compiled_call_impl = None
