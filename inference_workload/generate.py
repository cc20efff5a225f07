"""Deterministic image work standing in for the diffusion model: txt2img, img2img, upscale.

The cost has the shape of the real thing: each of ``steps`` "denoising" steps runs ``cost``
smoothing passes over a ``height × width × 3`` float32 latent, so time grows with
``steps × width × height × cost``. The default cost makes a 512×512, 16-step image take about
a second on one core (the GPU reference: 2.3 s). Output is a real PNG carrying the WebUI's
``parameters`` text chunk; the same inputs always give the same bytes (a seed of -1 is derived
from the request instead of drawn at random, so retries are reproducible).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageFilter
from PIL.PngImagePlugin import PngInfo

__all__ = ["DEFAULT_COST", "GenParams", "encode_png", "img2img", "resolve_seed", "txt2img", "upscale"]

DEFAULT_COST = 40
MAX_SIDE = 4096
# Upscaler names the WebUI offers, mapped to the Pillow filter that stands in for each.
RESAMPLERS = {"nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
              "bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class GenParams:
    """The generation inputs that change pixels."""

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    steps: int = 20
    width: int = 512
    height: int = 512
    cfg_scale: float = 7.0
    sampler_name: str = "Euler a"
    denoising_strength: float = 0.75
    model: str = "sdxl-turbo"


def resolve_seed(params: GenParams) -> int:
    """The seed actually used: the given one, or one derived from the request when it is -1."""
    if params.seed >= 0:
        return params.seed
    digest = hashlib.sha256(repr(replace(params, seed=-1)).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def txt2img(params: GenParams, count: int = 1, cost: int = DEFAULT_COST) -> tuple[list[bytes], list[int]]:
    """``count`` PNGs for a prompt, with the seed of each (seed, seed+1, ... as the WebUI does)."""
    seed = resolve_seed(params)
    seeds = [seed + i for i in range(count)]
    images = [_render(replace(params, seed=s), None, params.steps, cost) for s in seeds]
    return images, seeds


def img2img(params: GenParams, init: Image.Image, count: int = 1,
            cost: int = DEFAULT_COST) -> tuple[list[bytes], list[int]]:
    """Like ``txt2img`` but starting from ``init``; runs ``steps × denoising_strength`` steps."""
    seed = resolve_seed(params)
    seeds = [seed + i for i in range(count)]
    start = _to_latent(init.convert("RGB").resize((params.width, params.height), Image.Resampling.LANCZOS))
    steps = max(1, int(params.steps * params.denoising_strength))
    images = [_render(replace(params, seed=s), start, steps, cost) for s in seeds]
    return images, seeds


def upscale(image: Image.Image, *, factor: float = 2.0, size: tuple[int, int] | None = None,
            upscaler_1: str = "Lanczos", upscaler_2: str = "None", upscaler_2_visibility: float = 0.0) -> bytes:
    """Resize by ``factor`` (or to ``size``), blending a second upscaler like the WebUI's extras tab."""
    image = image.convert("RGB")
    target = size or (round(image.width * factor), round(image.height * factor))
    if not (0 < target[0] <= MAX_SIDE and 0 < target[1] <= MAX_SIDE):
        raise ValueError(f"upscaled size {target[0]}x{target[1]} is outside 1..{MAX_SIDE}")
    first = _resize(image, target, upscaler_1)
    if upscaler_2.lower() != "none" and upscaler_2_visibility > 0:
        first = Image.blend(first, _resize(image, target, upscaler_2), min(1.0, upscaler_2_visibility))
    return encode_png(first, None)


def encode_png(image: Image.Image, parameters: str | None) -> bytes:
    """PNG bytes, with the WebUI's ``parameters`` text chunk when given."""
    info = None
    if parameters is not None:
        info = PngInfo()
        info.add_text("parameters", parameters)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def infotext(params: GenParams) -> str:
    """The generation summary the WebUI stores in each PNG and returns as ``infotexts``."""
    return (f"{params.prompt}\nNegative prompt: {params.negative_prompt}\n"
            f"Steps: {params.steps}, Sampler: {params.sampler_name}, CFG scale: {params.cfg_scale}, "
            f"Seed: {params.seed}, Size: {params.width}x{params.height}, Model: {params.model}")


def _resize(image: Image.Image, size: tuple[int, int], upscaler: str) -> Image.Image:
    name = upscaler.lower()
    if name == "none":
        return image.resize(size, Image.Resampling.NEAREST) if image.size != size else image
    resample = next((f for key, f in RESAMPLERS.items() if key in name), None)
    if resample is not None:
        return image.resize(size, resample)
    # A model upscaler (ESRGAN, SwinIR, ...): Lanczos then sharpening stands in for the network.
    return image.resize(size, Image.Resampling.LANCZOS).filter(ImageFilter.UnsharpMask(radius=2, percent=80))


def _render(params: GenParams, start: np.ndarray | None, steps: int, cost: int) -> bytes:
    rng = np.random.default_rng(params.seed)
    noise = rng.standard_normal((params.height, params.width, 3), dtype=np.float32)
    target = _prompt_field(params)
    if start is not None:
        target = 0.5 * target + 0.5 * start
        strength = np.float32(params.denoising_strength)
        latent = (1 - strength) * start + strength * noise
    else:
        latent = noise
    guidance = np.float32(min(params.cfg_scale, 30.0) / 30.0)
    scratch = np.empty_like(latent)
    for step in range(steps):
        for _ in range(cost):
            _smooth(latent, scratch)
        # Never a full blend: the seed's noise must survive into the image, as in a real sampler.
        blend = np.float32(0.7 * (step + 1) / steps)
        latent = (1 - blend) * latent + blend * (target + guidance * (target - latent.mean(axis=(0, 1))))
    pixels = np.clip((latent + 1.0) * 127.5, 0, 255).astype(np.uint8)
    return encode_png(Image.fromarray(pixels, "RGB"), infotext(params))


def _smooth(x: np.ndarray, scratch: np.ndarray) -> None:
    """One pass of a 5-point stencil with wrap-around borders, in place: x = x/2 + (4 neighbours)/8.

    The cost per pass is proportional to the pixel count, like a convolution layer. Everything
    happens in preallocated arrays: fresh temporaries would make the time depend on the
    allocator (page faults in the main thread cost 3x what a worker thread's arena costs).
    """
    scratch[1:] = x[:-1]
    scratch[0] = x[-1]
    scratch[:-1] += x[1:]
    scratch[-1] += x[0]
    scratch[:, 1:] += x[:, :-1]
    scratch[:, 0] += x[:, -1]
    scratch[:, :-1] += x[:, 1:]
    scratch[:, -1] += x[:, 0]
    scratch *= np.float32(0.125)
    x *= np.float32(0.5)
    x += scratch


def _prompt_field(params: GenParams) -> np.ndarray:
    """A smooth colour field fixed by the prompt: what the "model" steers the noise towards."""
    digest = hashlib.sha256(f"{params.prompt}\0{params.negative_prompt}".encode()).digest()
    coeffs = np.frombuffer(digest, dtype=np.uint8).astype(np.float32) / 255.0
    ys = np.linspace(0, 1, params.height, dtype=np.float32)[:, None]
    xs = np.linspace(0, 1, params.width, dtype=np.float32)[None, :]
    channels = []
    for c in range(3):
        a, b, p, q = coeffs[4 * c:4 * c + 4]
        channels.append(0.8 * np.sin(2 * np.pi * (a * 3 * xs + b * 3 * ys) + 6 * p) * (0.5 + 0.5 * q))
    return np.stack(channels, axis=-1).astype(np.float32)


def _to_latent(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 127.5 - 1.0
