"""The CLIP model StyleCLIP embeds with: built with open_clip from a file (the OpenAI TorchScript archive, read without
running it, or a state dict with OpenAI's key names), and generator images turned into its image input."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import InputError, WeightsError
from ..weights import resolve, safe_torch_load
from ..weights.torchscript import is_torchscript, read_jit_state_dict

CLIP_MODEL = "ViT-B-32"  # the OpenAI CLIP the published statistics were made with
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's image normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_from_state_dict(state: dict[str, torch.Tensor]):
    """An open_clip CLIP model built from an OpenAI-layout state dict (the architecture is read from the keys)."""
    from open_clip.model import build_model_from_openai_state_dict

    keep = {k: v for k, v in state.items() if not k.endswith("attn_mask")}
    try:
        model = build_model_from_openai_state_dict(keep)
        model.float().load_state_dict(keep)  # the builder rounds to float16 on the way; keep the file's values
    except (KeyError, RuntimeError, IndexError) as e:
        raise WeightsError(f"the CLIP weights do not have the OpenAI CLIP layout ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:120]})", "give the OpenAI ViT-B/32 file (clip-vit-b-32)") from None
    return model.float().eval()


def load_clip(spec: str | os.PathLike = "clip-vit-b-32", device="cpu"):
    """(CLIP model, tokenizer) from a registry name or a file: the OpenAI TorchScript archive or a plain state dict
    (``.pt`` / ``.safetensors``) with OpenAI's key names."""
    try:
        import open_clip
    except ImportError:
        raise InputError("text editing needs the open_clip package", "pip install open-clip-torch") from None
    given = Path(spec).is_file()  # the user's own file, not one gantune downloaded into its cache
    p = Path(resolve(spec))
    try:
        model = clip_from_state_dict(_clip_state(p)).to(device)
    except WeightsError as e:
        if not given:
            raise
        # the cache's hint (delete the file to download it again) is wrong for a file of the user's
        raise WeightsError(str(e), f"--clip {spec}: give the OpenAI CLIP ViT-B/32 .pt file, or a state dict (.pt, "
                           ".safetensors) with OpenAI's key names") from None
    return model, open_clip.get_tokenizer(CLIP_MODEL)


def _clip_state(p: Path) -> dict:
    """The state dict of a CLIP file: safetensors, the OpenAI TorchScript archive, or a pickled state dict."""
    if p.suffix == ".safetensors":
        try:
            return load_file(str(p))
        except (SafetensorError, OSError) as e:
            raise WeightsError(f"{p.name} is not a readable safetensors file ({str(e)[:120]})") from None
    if is_torchscript(p):
        return read_jit_state_dict(p)
    state = safe_torch_load(p)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{p.name} holds a {type(state).__name__}, not a CLIP state dict")
    return state


def clip_image_input(img: torch.Tensor, size: int) -> torch.Tensor:
    """Generator images (B, 3, H, W) in [-1, 1] -> CLIP's input: bicubic resize to ``size`` (antialiased), scaled to
    [0, 1] and normalised with CLIP's mean and std."""
    x = (img.float().clamp(-1, 1) + 1) / 2
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN, device=x.device)[None, :, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[None, :, None, None]
    return (x - mean) / std


def clip_image_size(model) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)
