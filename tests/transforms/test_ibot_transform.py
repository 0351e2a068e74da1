from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.transforms import ibot_transform as lightly_ibot

from fastssl.transforms import ibot_transform
from fastssl.transforms.multi_view_transform import MultiViewTransform
from tests.transforms._images import (
    assert_same_signature,
    assert_same_structure,
    crop_box,
    random_pil,
    tagged_image,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # lightly's deprecated calls

SMALL = dict(global_crop_size=32, local_crop_size=16)


@pytest.mark.parametrize("name", ["IBOTTransform", "IBOTViewTransform"])
def test_signature_matches_lightly(name: str) -> None:
    assert_same_signature(getattr(ibot_transform, name), getattr(lightly_ibot, name))


@pytest.mark.parametrize("as_pil", [False, True])
@pytest.mark.parametrize("n_local_views", [0, 3])
def test_structure_matches_lightly(as_pil: bool, n_local_views: int) -> None:
    image: Any = random_pil(40) if as_pil else torch.randint(0, 256, (3, 40, 44)).byte()
    args: dict[str, Any] = dict(SMALL, n_local_views=n_local_views)
    if not as_pil:
        args["solarization_prob"] = 0.0  # lightly 1.6's solarization fails on tensors
    ours = ibot_transform.IBOTTransform(**args)
    assert isinstance(ours, MultiViewTransform)
    output = ours(image)
    assert [v.shape[-1] for v in output] == [32, 32] + [16] * n_local_views
    assert_same_structure(output, lightly_ibot.IBOTTransform(**args)(image))
    view_args = {"crop_size": 24, "solarization_prob": args.get("solarization_prob", 0.2)}
    view = ibot_transform.IBOTViewTransform(**view_args)(image)
    assert_same_structure([view], [lightly_ibot.IBOTViewTransform(**view_args)(image)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seeded_views_match_lightly(seed: int) -> None:
    # Blur and solarization off (lightly draws them from numpy): the torch draws (crop, flip,
    # jitter, grayscale) are then the same, and so are the views.
    args = dict(SMALL, n_local_views=2, gaussian_blur=(0.0, 0.0, 0.0), solarization_prob=0.0)
    image = torch.randint(0, 256, (3, 40, 48), generator=torch.Generator().manual_seed(seed))
    image = image.to(torch.uint8)
    torch.manual_seed(seed)
    ours = ibot_transform.IBOTTransform(**args)(image)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    theirs = lightly_ibot.IBOTTransform(**args)(image)
    for mine, ref in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, ref.as_subclass(torch.Tensor), rtol=1e-5, atol=1e-5)


def test_view_specs_per_view() -> None:
    specs = ibot_transform.IBOTTransform(n_local_views=2, cj_strength=1.0).view_specs
    assert [s.crop_size for s in specs] == [224, 224, 96, 96]
    assert [s.crop_scale for s in specs] == [(0.25, 1.0)] * 2 + [(0.05, 0.25)] * 2
    assert [s.blur_prob for s in specs] == [1.0, 0.1, 0.5, 0.5]
    assert [s.solarize_prob for s in specs] == [0.0, 0.2, 0.0, 0.0]
    assert all(s.interpolation == "bicubic" for s in specs)
    assert all((s.hf_prob, s.vf_prob, s.rr_prob) == (0.5, 0.0, 0.0) for s in specs)
    # cj_strength reaches every view (lightly 1.6 drops it for global view 1).
    assert [(s.cj_bright, s.cj_sat) for s in specs] == [(0.8, 0.4)] * 4
    assert len(ibot_transform.IBOTTransform().transforms) == 12  # 10 local views by default
    view_spec = ibot_transform.IBOTViewTransform().view_spec
    assert (view_spec.crop_scale, view_spec.blur_prob, view_spec.solarize_prob) == (
        (0.4, 1.0),
        1.0,
        0.2,
    )
    assert (view_spec.cj_bright, view_spec.cj_hue) == (0.4, 0.1)


def test_local_crops_are_small() -> None:
    transform = ibot_transform.IBOTTransform(
        global_crop_size=64,
        local_crop_size=64,
        n_local_views=3,
        hf_prob=0.0,
        cj_prob=0.0,
        random_gray_scale=0.0,
        gaussian_blur=(0.0, 0.0, 0.0),
        solarization_prob=0.0,
        normalize=None,
    )
    torch.manual_seed(0)
    for _ in range(30):
        views = transform(tagged_image())
        assert all(crop_box(v)[0] >= 0.25 - 0.035 for v in views[:2])
        assert all(crop_box(v)[0] <= 0.25 + 0.035 for v in views[2:])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"gaussian_blur must hold 3 probabilities"):
        ibot_transform.IBOTTransform(gaussian_blur=(1.0, 0.5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_local_views must be an int >= 0, got -2"):
        ibot_transform.IBOTTransform(n_local_views=-2)
