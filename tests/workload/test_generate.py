"""Image work: deterministic, valid PNGs, cost proportional to steps × pixels × cost."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from inference_workload import generate
from inference_workload.generate import GenParams

SMALL = GenParams(prompt="A dog", steps=4, width=64, height=48, seed=-1)


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


def test_txt2img_is_deterministic_valid_png() -> None:
    first, seeds = generate.txt2img(SMALL, count=2, cost=1)
    again, seeds_again = generate.txt2img(SMALL, count=2, cost=1)
    assert first == again and seeds == seeds_again
    assert seeds[1] == seeds[0] + 1 and first[0] != first[1]
    image = png(first[0])
    assert image.size == (64, 48) and image.mode == "RGB"
    assert f"Seed: {seeds[0]}" in image.text["parameters"]
    assert image.getextrema() != ((0, 0), (0, 0), (0, 0))


def test_inputs_change_pixels() -> None:
    base = generate.txt2img(SMALL, cost=1)[0][0]
    for changed in (GenParams(**{**SMALL.__dict__, "prompt": "A cat"}),
                    GenParams(**{**SMALL.__dict__, "seed": 42}),
                    GenParams(**{**SMALL.__dict__, "steps": 5})):
        assert generate.txt2img(changed, cost=1)[0][0] != base


def test_seed_minus_one_is_derived_from_the_request() -> None:
    assert generate.resolve_seed(SMALL) == generate.resolve_seed(SMALL)
    assert generate.resolve_seed(GenParams(prompt="other")) != generate.resolve_seed(GenParams(prompt="A dog"))
    assert generate.resolve_seed(GenParams(seed=7)) == 7


@pytest.mark.parametrize(("steps", "cost"), [(4, 1), (4, 3), (9, 2)])
def test_cost_is_steps_times_passes(monkeypatch: pytest.MonkeyPatch, steps: int, cost: int) -> None:
    passes: list[tuple[int, ...]] = []
    real = generate._smooth
    monkeypatch.setattr(generate, "_smooth", lambda x, scratch: passes.append(x.shape) or real(x, scratch))
    generate.txt2img(GenParams(steps=steps, width=32, height=16), cost=cost)
    assert len(passes) == steps * cost
    assert set(passes) == {(16, 32, 3)}  # each pass covers every pixel


def test_img2img_uses_init_image(monkeypatch: pytest.MonkeyPatch) -> None:
    red, blue = Image.new("RGB", (20, 20), "red"), Image.new("RGB", (20, 20), "blue")
    params = GenParams(prompt="x", steps=10, width=64, height=64, seed=3, denoising_strength=0.4)
    from_red = generate.img2img(params, red, cost=1)[0][0]
    assert from_red == generate.img2img(params, red, cost=1)[0][0]
    assert from_red != generate.img2img(params, blue, cost=1)[0][0]
    r, _, b = png(from_red).resize((1, 1)).getpixel((0, 0))
    assert r > b  # the red start shows through
    passes: list[int] = []
    real = generate._smooth
    monkeypatch.setattr(generate, "_smooth", lambda x, scratch: passes.append(1) or real(x, scratch))
    generate.img2img(params, red, cost=1)
    assert len(passes) == 4  # steps × denoising_strength, as the WebUI runs img2img


def test_smooth_is_the_wrapping_five_point_stencil() -> None:
    x = np.random.default_rng(0).standard_normal((5, 7, 3), dtype=np.float32)
    expected = 0.5 * x + 0.125 * (np.roll(x, 1, 0) + np.roll(x, -1, 0) + np.roll(x, 1, 1) + np.roll(x, -1, 1))
    generate._smooth(x, np.empty_like(x))
    np.testing.assert_allclose(x, expected, rtol=1e-6)


def test_upscale_by_factor_and_to_size() -> None:
    image = png(generate.txt2img(SMALL, cost=1)[0][0])
    assert png(generate.upscale(image, factor=4, upscaler_1="R-ESRGAN 4x+")).size == (256, 192)
    assert png(generate.upscale(image, size=(100, 30), upscaler_1="Lanczos")).size == (100, 30)
    blended = generate.upscale(image, factor=2, upscaler_1="Nearest", upscaler_2="Lanczos", upscaler_2_visibility=0.5)
    assert blended != generate.upscale(image, factor=2, upscaler_1="Nearest")
    assert generate.upscale(image, factor=2) == generate.upscale(image, factor=2)
    with pytest.raises(ValueError, match="outside"):
        generate.upscale(image, factor=100)
