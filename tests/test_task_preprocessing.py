"""Preprocessing of models without a timm data config: letterbox, fixed height, no resize and
grayscale. The reference transform (``timm_eval_transform`` → ``task_transforms``) is checked
against the documented sizes and pad placement; the composed graph (``build_preprocessing``,
in ONNX Runtime) against the reference, on real photos of several sizes and a small synthetic
image; the stage end to end on an identity "model"; and the recipe fields' validation.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from edgepipe.artifacts import Artifact, ArtifactKind
from edgepipe.imaging.preprocess_graph import Preprocessing, build_preprocessing
from edgepipe.imaging.samples import fit_fixed_size, load_images
from edgepipe.imaging.timm_eval import timm_eval_transform
from edgepipe.models.data_config_override import DataConfigOverride
from edgepipe.models.torch_model import data_config_of
from edgepipe.stages.base import StageContext
from edgepipe.stages.compose import ComposePreprocessingSpec, ComposePreprocessingStage

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
GRAY = {"mean": (0.45,), "std": (0.27,)}
# as tests/test_compose.py: PIL's fixed-point resampling rounds a pixel the other way at most
# 1 grey level from the graph's float weights (rarely: mean ~1e-4 on photos; upscaling the noise
# image bilinearly puts a whole row on an exact tie, 2%, as in center/squash); nearest and no
# resize are exact
MAX_LEVELS, MEAN_LEVELS = 1.03, 0.01


@pytest.fixture(scope="module")
def photos() -> list[tuple[str, Image.Image]]:
    """Four photos (512x512 to 300x451, portrait and landscape) and a tiny odd-sized noise
    image, which letterbox and height upscale."""
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (37, 23, 3), dtype=np.uint8))
    return [*load_images(None, 4), ("noise", noise)]


def reference(config: dict, image: Image.Image) -> np.ndarray:
    return timm_eval_transform(config)(image).numpy()


def normalised(levels: np.ndarray, mean, std) -> np.ndarray:
    """ToTensor + Normalize of uint8 levels [H, W, C], in float32 as torchvision computes it."""
    tensor = torch.from_numpy(np.ascontiguousarray(levels.transpose(2, 0, 1))).float() / 255
    return ((tensor - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]).numpy()


def config_of(pre: Preprocessing) -> dict:
    return {
        "input_size": [pre.model_channels, *pre.crop_size],
        "interpolation": pre.interpolation,
        "mean": list(pre.mean),
        "std": list(pre.std),
        "crop_pct": pre.crop_pct,
        "crop_mode": pre.crop_mode,
        "pad_value": pre.pad_value,
    }


# --- the reference: documented sizes and placement --------------------------------------------


@pytest.mark.parametrize(("box", "pad_value"), [((160, 128), 114), ((96, 200), 0)])
def test_letterbox_reference_fits_keeps_aspect_and_pads(photos, box, pad_value):
    config = {"input_size": [3, *box], "crop_mode": "letterbox", "pad_value": pad_value}
    config.update(interpolation="bicubic", **IMAGENET)
    pad = normalised(np.full((1, 1, 3), pad_value, np.uint8), IMAGENET["mean"], IMAGENET["std"])
    for name, photo in photos:
        tensor = reference(config, photo)
        assert tensor.shape == (3, *box), name
        h, w = photo.height, photo.width
        scale = min(box[0] / h, box[1] / w)
        nh, nw = round(h * scale), round(w * scale)
        top, left = (box[0] - nh) // 2, (box[1] - nw) // 2
        assert nh == box[0] or nw == box[1], name  # one side fills the box
        inside = np.zeros(box, bool)
        inside[top : top + nh, left : left + nw] = True
        assert (tensor[:, ~inside] == pad[:, 0]).all(), name  # pad: (v/255 - mean) / std
        resized = np.asarray(photo.resize((nw, nh), Image.Resampling.BICUBIC))
        expected = normalised(resized, IMAGENET["mean"], IMAGENET["std"])
        np.testing.assert_array_equal(tensor[:, top : top + nh, left : left + nw], expected)


def test_letterbox_rounds_half_to_even_and_clamps():
    config = {"input_size": [3, 100, 100], "crop_mode": "letterbox", **IMAGENET}
    for (h, w), size in {(5, 200): (2, 100), (7, 200): (4, 100), (1, 900): (1, 100)}.items():
        image = Image.new("RGB", (w, h), (200, 10, 30))
        tensor = reference(config, image)
        rows = (tensor[0] != tensor[0, 0, 0]).any(axis=1).sum()  # the corner is padding
        assert rows == size[0], ((h, w), rows)  # 2.5 → 2, 3.5 → 4 (Python's round), 0.1 → 1


def test_height_reference_keeps_aspect_with_any_width(photos):
    config = {"input_size": [3, 32, 100], "crop_mode": "height", "interpolation": "bilinear"}
    config.update(IMAGENET)
    for name, photo in photos:
        tensor = reference(config, photo)
        width = max(1, round(photo.width * 32 / photo.height))
        assert tensor.shape == (3, 32, width), name
        resized = np.asarray(photo.resize((width, 32), Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(tensor, normalised(resized, **IMAGENET))


def test_none_reference_keeps_the_image_size(photos):
    config = {"input_size": [3, 64, 64], "crop_mode": "none", **IMAGENET}
    for name, photo in photos:
        tensor = reference(config, photo)
        assert tensor.shape == (3, photo.height, photo.width), name
        np.testing.assert_array_equal(tensor, normalised(np.asarray(photo), **IMAGENET))


def test_grayscale_reference_is_pil_luma_then_resize(photos):
    for mode in ("center", "letterbox", "height", "none"):
        config = {"input_size": [1, 48, 64], "crop_mode": mode, "interpolation": "bicubic"}
        config.update(GRAY, pad_value=7)
        for name, photo in photos:
            tensor = reference(config, photo)
            expected = timm_eval_transform({**config, "input_size": [3, 48, 64], **IMAGENET})(
                photo.convert("L").convert("RGB")
            ).numpy()  # 3 equal channels of the luma: same resize, other normalisation
            levels = expected[0] * IMAGENET["std"][0] + IMAGENET["mean"][0]
            assert tensor.shape == (1, *expected.shape[1:]), (mode, name)
            np.testing.assert_allclose(
                tensor[0] * GRAY["std"][0] + GRAY["mean"][0], levels, 0, 1e-6
            )


def test_existing_configs_still_use_timms_transform():
    from timm.data import create_transform

    config = {"input_size": [3, 64, 64], "crop_mode": "squash", "crop_pct": 0.9, **IMAGENET}
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (70, 90, 3), np.uint8))
    expected = create_transform(**config, is_training=False)(image).numpy()
    np.testing.assert_array_equal(reference(config, image), expected)


# --- the composed graph against the reference ---------------------------------------------------

GRAPH_CASES = {
    "letterbox": dict(crop_size=(160, 128), crop_mode="letterbox", **IMAGENET),
    "letterbox-bilinear-pad0": dict(
        crop_size=(96, 160),
        crop_mode="letterbox",
        interpolation="bilinear",
        pad_value=0,
        **IMAGENET,
    ),
    "letterbox-fixed-image": dict(
        crop_size=(160, 128), crop_mode="letterbox", height=240, width=320, **IMAGENET
    ),
    "letterbox-gray-nchw-float": dict(
        crop_size=(128, 128),
        crop_mode="letterbox",
        model_channels=1,
        layout="NCHW",
        dtype="float32",
        **GRAY,
    ),
    "letterbox-gray-nearest-opset12": dict(
        crop_size=(128, 96),
        crop_mode="letterbox",
        model_channels=1,
        interpolation="nearest",
        antialias=False,
        pad_value=255,
        **GRAY,
    ),
    "height": dict(crop_size=(32, 100), crop_mode="height", **IMAGENET),
    "height-gray-bilinear-nchw-bgr": dict(
        crop_size=(48, 100),
        crop_mode="height",
        model_channels=1,
        interpolation="bilinear",
        layout="NCHW",
        channels="BGR",
        **GRAY,
    ),
    "height-gray-fixed-image": dict(
        crop_size=(32, 100), crop_mode="height", model_channels=1, height=240, width=320, **GRAY
    ),
    "none": dict(crop_size=(64, 64), crop_mode="none", **IMAGENET),
    "none-gray-bgr": dict(
        crop_size=(64, 64), crop_mode="none", model_channels=1, channels="BGR", **GRAY
    ),
    "gray-center": dict(crop_size=(96, 96), crop_pct=0.9, model_channels=1, **GRAY),
}
EXACT = {"letterbox-gray-nearest-opset12", "none", "none-gray-bgr"}


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("case", list(GRAPH_CASES))
def test_graph_matches_the_reference(photos, case):
    pre = Preprocessing(**GRAPH_CASES[case])
    graph = session(build_preprocessing(pre, opset=12 if "opset12" in case else 18))
    std = np.array(pre.std)[:, None, None]
    worst = 0.0
    for name, photo in photos:
        photo = fit_fixed_size(photo, {"height": pre.height, "width": pre.width})
        expected = reference(config_of(pre), photo)[None]
        (actual,) = graph.run(None, {"image": pre.feed(np.asarray(photo))})
        assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
        error = np.abs(actual - expected)
        levels = error * std * 255
        worst = max(worst, float(error.max()))
        limit = 0.0 if case in EXACT else MAX_LEVELS
        assert levels.max() <= limit, (name, levels.max())
        assert name == "noise" or levels.mean() <= MEAN_LEVELS, (name, levels.mean())
    print(f"{case}: max abs error {worst:.3g}")


def test_graph_sizes_for_any_image_size():
    """Letterbox and height sizes (rounding, clamping, centring) against the reference on
    random sizes, flat images: any misplaced row or column shows."""
    rng = np.random.default_rng(3)
    for mode in ("letterbox", "height"):
        pre = Preprocessing(crop_size=(64, 48), crop_mode=mode, pad_value=0, **IMAGENET)
        graph = session(build_preprocessing(pre))
        sizes = [*rng.integers(1, 300, (12, 2)), (5, 200), (7, 200), (1, 900), (900, 1), (1, 1)]
        for height, width in sizes:
            image = np.full((int(height), int(width), 3), 255, np.uint8)
            expected = reference(config_of(pre), Image.fromarray(image))[None]
            (actual,) = graph.run(None, {"image": pre.feed(image)})
            assert actual.shape == expected.shape, (mode, height, width)
            assert np.abs(actual - expected).max() < 1e-6, (mode, height, width)


def test_graph_luma_is_pils_convert_l_exactly():
    """Every grey, the extremes and 200k random colours: PIL's integer rounding, bit for bit."""
    rng = np.random.default_rng(4)
    colours = [
        np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1),
        np.array(np.meshgrid(*[[0, 1, 127, 128, 254, 255]] * 3)).reshape(3, -1).T,
        rng.integers(0, 256, (200_000 - 256 - 216, 3)),
    ]
    rgb = np.concatenate(colours).astype(np.uint8).reshape(400, 500, 3)
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    weights = rgb.astype(np.int64) @ np.array([19595, 38470, 7471])
    np.testing.assert_array_equal(luma, (weights + 0x8000) >> 16)  # what PIL documents
    for layout, channels, dtype in [("NHWC", "RGB", "uint8"), ("NCHW", "BGR", "float32")]:
        pre = Preprocessing(
            crop_size=(1, 1), mean=(0.0,), std=(1.0,), crop_mode="none", model_channels=1,
            layout=layout, channels=channels, dtype=dtype,
        )  # fmt: skip
        (tensor,) = session(build_preprocessing(pre)).run(None, {"image": pre.feed(rgb)})
        np.testing.assert_array_equal(tensor[0, 0], luma.astype(np.float32) / np.float32(255))


def test_graph_output_shapes_name_the_dynamic_sizes():
    def dims(**fields):
        model = build_preprocessing(Preprocessing(**IMAGENET, **fields))
        shape = model.graph.output[0].type.tensor_type.shape.dim
        return [d.dim_value or d.dim_param for d in shape]

    assert dims(crop_size=(32, 100), crop_mode="letterbox") == ["batch", 3, 32, 100]
    assert dims(crop_size=(32, 100), crop_mode="height") == ["batch", 3, 32, "resized_width"]
    assert dims(crop_size=(32, 100), crop_mode="height", height=64, width=80) == [
        "batch", 3, 32, 40,
    ]  # fmt: skip
    assert dims(crop_size=(32, 100), crop_mode="none") == ["batch", 3, "height", "width"]


def test_meta_of_existing_modes_is_unchanged():
    meta = Preprocessing(crop_size=(224, 224), **IMAGENET).meta()
    assert "pad_value" not in meta and "model_channels" not in meta
    assert meta["resize_size"] == 256
    gray = Preprocessing(crop_size=(32, 100), crop_mode="letterbox", model_channels=1, **GRAY)
    assert (gray.meta()["pad_value"], gray.meta()["model_channels"]) == (114, 1)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in gray.meta().items()}
    assert Preprocessing(**fields) == gray  # downstream stages rebuild it from the meta


# --- the stage, on an identity "model" ----------------------------------------------------------


def identity_model(path, dims: list) -> None:
    tensor = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["input"], ["output"])],
        "identity",
        [tensor("input", onnx.TensorProto.FLOAT, dims)],
        [tensor("output", onnx.TensorProto.FLOAT, dims)],
    )
    path.mkdir(parents=True)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    onnx.save(model, str(path / "model.onnx"))


def compose(tmp_path, dims: list, data_config: dict, **fields) -> tuple[dict, str]:
    source = tmp_path / "source"
    identity_model(source, dims)
    artifact = Artifact(ArtifactKind.ONNX_MODEL, source, {"data_config": data_config}, "model")
    out = tmp_path / "out"
    out.mkdir()
    ctx = StageContext("e2e", tmp_path, [artifact], out, logging.getLogger("test"))
    spec = ComposePreprocessingSpec(type="compose-preprocessing", input="model", **fields)
    return ComposePreprocessingStage().run(spec, ctx), str(out / "model.onnx")


def test_stage_composes_a_grayscale_text_line_model(tmp_path, photos):
    config = {"input_size": [1, 32, 128], "crop_mode": "height", **GRAY}
    meta, path = compose(tmp_path, ["batch", 1, 32, "width"], config, interpolation="bilinear")
    assert meta["preprocessing"]["model_channels"] == 1
    graph = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for _, photo in photos[:2]:
        (actual,) = graph.run(None, {"image": np.asarray(photo)[None]})
        expected = reference({**config, "interpolation": "bilinear"}, photo)[None]
        assert actual.shape == expected.shape
        assert np.abs(actual - expected).max() * GRAY["std"][0] * 255 <= MAX_LEVELS


def test_stage_letterbox_pad_value_override_and_mismatches(tmp_path, photos):
    config = {"input_size": [3, 64, 48], "crop_mode": "letterbox", **IMAGENET}
    meta, path = compose(tmp_path / "a", ["batch", 3, 64, 48], config, pad_value=0)
    assert meta["preprocessing"]["pad_value"] == 0
    (actual,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
        None, {"image": np.asarray(photos[0][1])[None]}
    )
    expected = reference({**config, "pad_value": 0, "interpolation": "bilinear"}, photos[0][1])
    assert np.abs(actual[0] - expected).max() < 0.02
    from edgepipe.errors import StageError

    with pytest.raises(StageError, match="the model takes 3 channels; preprocessing makes gray"):
        compose(tmp_path / "b", ["batch", 3, 32, "w"], {**config, "input_size": [1, 32, 64]},
                mean=[0.5], std=[0.5])  # fmt: skip
    with pytest.raises(StageError, match="64x48 images but the crop is 64xany: export the model"):
        compose(tmp_path / "c", ["batch", 3, 64, 48], {**config, "crop_mode": "height"})


# --- recipe fields ------------------------------------------------------------------------------


def error_of(model, **fields) -> tuple[str, str]:
    with pytest.raises(ValidationError) as caught:
        model(**fields)
    error = caught.value.errors()[0]
    inner = (error.get("ctx") or {}).get("error")
    field = getattr(inner, "field", None) or ".".join(str(p) for p in error["loc"])
    return field, error["msg"]


def compose_spec(**fields):
    return ComposePreprocessingSpec(type="compose-preprocessing", input="model", **fields)


def test_two_channel_input_size_is_refused():
    field, message = error_of(DataConfigOverride, input_size=[2, 32, 32])
    assert field == "input_size" and "1 (grayscale) or 3 (RGB), not 2" in message
    field, message = error_of(compose_spec, input_size=[2, 32, 32])
    assert field.startswith("input_size") and "1 or 3" in message


def test_three_channel_mean_with_one_channel_input_is_refused():
    for model in (DataConfigOverride, compose_spec):
        field, message = error_of(model, input_size=[1, 32, 32], mean=[0.5, 0.5, 0.5])
        assert field == "mean" and "1 channel (grayscale): give one value" in message
        field, message = error_of(model, mean=[0.5, 0.5])
        assert field == "mean" and "give 1 value (every channel) or 3" in message
    field, message = error_of(DataConfigOverride, pad_value=3)  # the model's mode: no padding
    assert field == "pad_value" and "only with crop_mode: letterbox" in message
    field, _ = error_of(compose_spec, crop_mode="height", pad_value=3)
    assert field == "pad_value"
    assert error_of(DataConfigOverride, crop_mode="letterbox", pad_value=256)[0] == "pad_value"
    assert DataConfigOverride(input_size=[1, 32, 128], mean=[0.5], std=[0.5], crop_mode="height")


def test_load_keys_stay_when_pad_value_is_unset():
    """pad_value is left out of the dump (so of load stages' keys) unless it is set."""
    assert "pad_value" not in DataConfigOverride().model_dump(mode="json")
    override = DataConfigOverride(crop_mode="letterbox", pad_value=0)
    assert override.model_dump(mode="json")["pad_value"] == 0


def test_data_config_of_carries_pad_value_and_one_channel():
    module = torch.nn.Identity()  # no pretrained_cfg: timm's defaults
    plain = data_config_of(module, {})
    assert "pad_value" not in plain and len(plain["mean"]) == 3
    gray = data_config_of(
        module, {"input_size": [1, 32, 128], "mean": [0.5], "std": [0.25], "crop_mode": "height"}
    )
    assert (gray["mean"], gray["std"], "pad_value" in gray) == ([0.5], [0.25], False)
    boxed = data_config_of(module, {"crop_mode": "letterbox", "mean": [0.5]})
    assert (boxed["pad_value"], boxed["mean"]) == (114, [0.5, 0.5, 0.5])
    from edgepipe.errors import StageError

    with pytest.raises(StageError, match="mean has 3 values but the model input has 1 channel"):
        data_config_of(module, {"input_size": [1, 32, 32]})  # ImageNet's mean, not grey
