"""Request and response shapes of the Stable Diffusion WebUI API (AUTOMATIC1111's ``/sdapi/v1``).

Only the fields that change the output are interpreted; the WebUI accepts many more
(``alwayson_scripts``, ``override_settings``, ...) and so do these models, which keep them so
they are echoed back in ``parameters`` like the WebUI does.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import replace
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from inference_workload.generate import GenParams, infotext

__all__ = ["ExtraSingleImageRequest", "ExtrasResponse", "ImageResponse", "Img2ImgRequest", "Txt2ImgRequest",
           "decode_image", "encode_image", "gen_params", "info_json"]


class Txt2ImgRequest(BaseModel):
    """``POST /sdapi/v1/txt2img``."""

    model_config = ConfigDict(extra="allow")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = Field(default_factory=list)
    seed: int = -1
    subseed: int = -1
    sampler_name: str = "Euler a"
    batch_size: int = Field(1, ge=1, le=8)
    n_iter: int = Field(1, ge=1, le=8)
    steps: int = Field(50, ge=1, le=150)
    cfg_scale: float = Field(7.0, ge=0, le=30)
    width: int = Field(512, ge=64, le=2048)
    height: int = Field(512, ge=64, le=2048)
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    override_settings: dict[str, Any] = Field(default_factory=dict)
    send_images: bool = True
    save_images: bool = False


class Img2ImgRequest(Txt2ImgRequest):
    """``POST /sdapi/v1/img2img``: a txt2img request plus the images to start from."""

    init_images: list[str] = Field(min_length=1)
    denoising_strength: float = Field(0.75, ge=0, le=1)
    resize_mode: int = 0
    include_init_images: bool = False


class ExtraSingleImageRequest(BaseModel):
    """``POST /sdapi/v1/extra-single-image``: upscale one image."""

    model_config = ConfigDict(extra="allow")

    image: str
    resize_mode: Literal[0, 1] = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = 0
    codeformer_visibility: float = 0
    codeformer_weight: float = 0
    upscaling_resize: float = Field(2, gt=0, le=8)
    upscaling_resize_w: int = Field(512, ge=1, le=4096)
    upscaling_resize_h: int = Field(512, ge=1, le=4096)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1)
    upscale_first: bool = False


class ImageResponse(BaseModel):
    """What txt2img and img2img answer: base64 PNGs, the request echoed, and a JSON ``info``."""

    images: list[str]
    parameters: dict[str, Any]
    info: str


class ExtrasResponse(BaseModel):
    """What extra-single-image answers."""

    image: str
    html_info: str


def gen_params(request: Txt2ImgRequest, model: str) -> GenParams:
    """The generation inputs of a WebUI request."""
    strength = request.denoising_strength if isinstance(request, Img2ImgRequest) else 0.75
    return GenParams(request.prompt, request.negative_prompt, request.seed, request.steps, request.width,
                     request.height, request.cfg_scale, request.sampler_name, strength, model)


def info_json(params: GenParams, seeds: list[int], request: Txt2ImgRequest) -> str:
    """The ``info`` string: generation details as JSON, as the WebUI returns them."""
    texts = [infotext(replace(params, seed=s)) for s in seeds]
    return json.dumps({
        "prompt": params.prompt, "all_prompts": [params.prompt] * len(seeds),
        "negative_prompt": params.negative_prompt, "all_negative_prompts": [params.negative_prompt] * len(seeds),
        "seed": seeds[0], "all_seeds": seeds,
        "subseed": request.subseed, "all_subseeds": [request.subseed] * len(seeds),
        "width": params.width, "height": params.height, "sampler_name": params.sampler_name,
        "cfg_scale": params.cfg_scale, "steps": params.steps, "batch_size": request.batch_size,
        "sd_model_name": params.model, "infotexts": texts,
    })


def decode_image(data: str) -> Image.Image:
    """A base64 image (optionally a ``data:`` URI). Raises ``ValueError`` when it is not one."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        image.load()
    except (binascii.Error, UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"not a base64-encoded image ({exc})") from None
    return image


def encode_image(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")
