"""compose-preprocessing: the baked-in graph computes timm's eval transform on raw photos.

Two levels: the preprocessing graph alone against ``timm.data.create_transform`` (tensor residual
in pixel levels), and the real pipeline through the CLI (load → export → compose) against timm's
transform + the plain exported model (logits).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skimage.data
from conftest import Workspace, outcomes
from PIL import Image
from timm.data import create_transform
from timm.data.transforms import ResizeKeepRatio
from torchvision.transforms.functional import _compute_resized_output_size

from edgepipe.imaging.preprocess_graph import RESIZED_SIZE, Preprocessing, build_preprocessing

pytestmark = pytest.mark.slow

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
# Measured (benchmarks/preprocessing_residual.py): the graph resamples as PIL does, passes,
# rounding and all, so it differs by at most 1 grey level where PIL's fixed-point weights round
# a pixel the other way (mean ~1e-4 levels); nearest is exact (the graph gathers PIL's pixels).
MAX_LEVELS = {"bilinear": 1.03, "bicubic": 1.03, "nearest": 0.0}  # 1 level, at any channel's std
MEAN_LEVELS = 0.01

RECIPE = """
version: 1
name: compose
stages:
  model: {type: load, name: test_efficientnet}
  onnx: {type: export, input: model, exporter: torchscript, opset: 18}
  onnx12: {type: export, input: model, exporter: torchscript, opset: 12}
  onnx_ext: {type: export, input: model, exporter: torchscript, external_data: always}
  e2e: {type: compose-preprocessing, input: onnx}
  nchw: {type: compose-preprocessing, input: onnx, image: {layout: NCHW, dtype: float32}}
  bgr: {type: compose-preprocessing, input: onnx, image: {channels: BGR}}
  fixed:
    type: compose-preprocessing
    input: onnx
    image: {height: 240, width: 320, dynamic_batch: false}
  squash: {type: compose-preprocessing, input: onnx, crop_mode: squash}
  bilinear: {type: compose-preprocessing, input: onnx, interpolation: bilinear}
  softmax: {type: compose-preprocessing, input: onnx, postprocess: softmax}
  topk: {type: compose-preprocessing, input: onnx, postprocess: topk, top_k: 5}
  wrong: {type: compose-preprocessing, input: onnx, mean: [0.3, 0.3, 0.3], std: [0.5, 0.5, 0.5]}
  old_opset: {type: compose-preprocessing, input: onnx12}
  external: {type: compose-preprocessing, input: onnx_ext}
"""


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: getattr(skimage.data, name)() for name in PHOTOS}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Workspace, str]:
    """One CLI run builds every variant; tests read the artifacts."""
    workspace = Workspace(tmp_path_factory.mktemp("compose"))
    result = workspace.cli("run", str(workspace.recipe(RECIPE)))
    assert result.returncode == 0, result.stderr
    return workspace, result.stderr


def timm_config(pre: Preprocessing) -> dict:
    return {
        "input_size": (3, *pre.crop_size),
        "interpolation": pre.interpolation,
        "mean": pre.mean,
        "std": pre.std,
        "crop_pct": pre.crop_pct,
        "crop_mode": pre.crop_mode,
    }


def timm_tensor(image: np.ndarray, config: dict) -> np.ndarray:
    """[1, 3, H, W] as timm's eval transform (PIL) makes it."""
    return create_transform(**config, is_training=False)(Image.fromarray(image)).numpy()[None]


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def centred_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


def artifact(workspace: Workspace, stage: str) -> tuple[dict, Preprocessing]:
    meta = json.loads((workspace.out / stage / "artifact.json").read_text())["meta"]
    fields = {k: v for k, v in meta["preprocessing"].items() if k != "resize_size"}
    for key in ("crop_size", "mean", "std"):
        fields[key] = tuple(fields[key])
    return meta, Preprocessing(**fields)


# --- the preprocessing graph alone ----------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"interpolation": "bilinear"},
        {"crop_mode": "squash"},
        {"crop_size": (192, 256), "crop_pct": 0.9},  # non-square: timm's ResizeKeepRatio
        {"interpolation": "nearest", "crop_pct": 1.0},
        {"layout": "NCHW", "dtype": "float32", "channels": "BGR"},
    ],
    ids=["bicubic", "bilinear", "squash", "non-square", "nearest", "nchw-float-bgr"],
)
def test_preprocessing_graph_matches_timm_on_photos(photos, overrides):
    pre = Preprocessing(**{"crop_size": (224, 224), **IMAGENET, **overrides})
    graph = session_from(build_preprocessing(pre))
    std = np.array(pre.std)[:, None, None]
    for name, image in photos.items():
        expected = timm_tensor(image, timm_config(pre))
        (actual,) = graph.run(None, {"image": pre.feed(image)})
        assert actual.shape == expected.shape, name
        error = np.abs(actual - expected)  # normalised units
        levels = error * std * 255  # grey levels, before normalisation
        assert levels.max() <= MAX_LEVELS[pre.interpolation], (name, error.max(), levels.max())
        assert levels.mean() <= MEAN_LEVELS, (name, error.mean(), levels.mean())


@pytest.mark.parametrize("opset", [11, 13, 17])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
def test_older_opsets_build_and_antialias_from_13(photos, opset, interpolation):
    """Without antialias, ONNX Resize runs at every opset and downscaled photos alias; the
    antialiased resize (ReduceSum/Unsqueeze with axes inputs) needs opset 13."""
    pre = Preprocessing(
        crop_size=(224, 224), interpolation=interpolation, antialias=False, **IMAGENET
    )
    graph = session_from(build_preprocessing(pre, opset=opset))
    image = photos["hubble_deep_field"]  # 1000x872 star field: aliasing shows
    (actual,) = graph.run(None, {"image": pre.feed(image)})
    levels = np.abs(actual - timm_tensor(image, timm_config(pre))) * 0.229 * 255
    if interpolation == "nearest":  # PIL's nearest has no antialias either: still exact
        assert levels.max() < 0.01
    else:
        assert levels.mean() > 1.0, levels.mean()
    antialiased = Preprocessing(crop_size=(224, 224), interpolation=interpolation, **IMAGENET)
    if opset < 13 and interpolation != "nearest":
        with pytest.raises(ValueError, match="needs opset 13"):
            build_preprocessing(antialiased, opset=opset)
        return
    (actual,) = session_from(build_preprocessing(antialiased, opset=opset)).run(
        None, {"image": antialiased.feed(image)}
    )
    levels = np.abs(actual - timm_tensor(image, timm_config(antialiased))) * 0.229 * 255
    assert levels.max() <= MAX_LEVELS[interpolation], levels.max()


def session_from(model: onnx.ModelProto) -> ort.InferenceSession:
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("crop_size", [(160, 160), (160, 192), (200, 150)])
def test_resize_size_is_torchvisions_for_any_image_size(crop_size):
    """The graph's dynamic size arithmetic gives exactly the sizes torchvision/timm compute."""
    pre = Preprocessing(crop_size=crop_size, crop_pct=0.95, **IMAGENET)
    model = build_preprocessing(pre)
    model.graph.output.append(onnx.helper.make_tensor_value_info(RESIZED_SIZE, 7, [2]))
    graph = session_from(model)
    scale = [int(s / 0.95) for s in crop_size]
    rng = np.random.default_rng(0)
    for height, width in [*rng.integers(20, 900, (40, 2)), (168, 168), (167, 900), (900, 167)]:
        image = np.zeros((int(height), int(width), 3), np.uint8)
        tensor, size = graph.run(None, {"image": pre.feed(image)})
        if scale[0] == scale[1]:
            expected = _compute_resized_output_size((height, width), [scale[0]])
        else:
            expected = ResizeKeepRatio.get_params(Image.fromarray(image), scale, 0.0)
        assert list(size) == list(expected) == list(pre.resized(height, width)), (height, width)
        assert tensor.shape == (1, 3, *crop_size)


def test_noise_images_of_random_sizes_match_timm():
    """Random sizes, up- and downscaling, odd crop offsets: any misplaced pixel would show."""
    rng = np.random.default_rng(1)
    for pre in (
        Preprocessing(crop_size=(160, 160), crop_pct=0.95, **IMAGENET),
        Preprocessing(crop_size=(160, 192), crop_pct=0.9, interpolation="bilinear", **IMAGENET),
        Preprocessing(crop_size=(160, 160), crop_pct=0.95, interpolation="nearest", **IMAGENET),
    ):
        graph = session_from(build_preprocessing(pre))
        std = np.array(pre.std)[:, None, None]
        for height, width in rng.integers(60, 500, (10, 2)):
            coarse = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
            image = np.asarray(Image.fromarray(coarse).resize((int(width), int(height))))
            expected = timm_tensor(image, timm_config(pre))
            (actual,) = graph.run(None, {"image": pre.feed(image)})
            levels = np.abs(actual - expected) * std * 255
            assert levels.max() <= 3 and levels.mean() <= MEAN_LEVELS, (height, width)


# --- the stage, through the CLI -------------------------------------------------------------


def reference_logits(workspace, image: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """timm's own transform, then the plain exported model."""
    (logits,) = session(workspace.out / "onnx" / "model.onnx").run(
        None, {"input": timm_tensor(image, timm_config(pre))}
    )
    return logits


def composed_outputs(workspace, stage: str, image: np.ndarray) -> tuple[list, Preprocessing]:
    meta, pre = artifact(workspace, stage)
    return session(workspace.out / stage / "model.onnx").run(None, {"image": pre.feed(image)}), pre


@pytest.mark.parametrize("stage", ["e2e", "nchw", "bgr", "squash", "bilinear", "external"])
def test_composed_model_on_raw_photos_matches_timm_and_plain_model(built, photos, stage):
    workspace, _ = built
    for name, image in photos.items():
        (logits,), pre = composed_outputs(workspace, stage, image)
        expected = reference_logits(workspace, image, pre)
        assert centred_cosine(logits, expected) >= 0.9995, (stage, name)


def test_artifact_meta_describes_the_graph(built):
    workspace, _ = built
    meta, pre = artifact(workspace, "e2e")
    assert meta["inputs"] == [
        {"name": "image", "dtype": "uint8", "shape": ["batch", "height", "width", 3]}
    ]
    assert [o["name"] for o in meta["outputs"]] == ["output"]
    assert meta["data_config"]["crop_pct"] == 0.95  # test_efficientnet's, unchanged
    assert meta["preprocessing"]["resize_size"] == 168  # floor(160 / 0.95), shorter side
    assert (pre.crop_size, pre.interpolation, pre.antialias) == ((160, 160), "bicubic", True)
    assert meta["postprocess"] == "none"
    squash, _ = artifact(workspace, "squash")
    assert squash["preprocessing"]["resize_size"] == [168, 168]


def test_fixed_size_input(built, photos):
    workspace, _ = built
    meta, pre = artifact(workspace, "fixed")
    assert meta["inputs"][0]["shape"] == [1, 240, 320, 3]
    model = onnx.load(str(workspace.out / "fixed" / "model.onnx"))
    assert not {"Shape", "ReduceMin"} & {n.op_type for n in model.graph.node}  # folded sizes
    for image in photos.values():
        small = np.asarray(Image.fromarray(image).resize((320, 240), Image.Resampling.BICUBIC))
        (logits,), _ = composed_outputs(workspace, "fixed", small)
        assert centred_cosine(logits, reference_logits(workspace, small, pre)) >= 0.9995


def test_dynamic_batch_of_two_same_size_photos(built, photos):
    workspace, _ = built
    _, pre = artifact(workspace, "e2e")
    pair = [photos["astronaut"], photos["immunohistochemistry"]]  # both 512x512
    batch = np.concatenate([pre.feed(image) for image in pair])
    (logits,) = session(workspace.out / "e2e" / "model.onnx").run(None, {"image": batch})
    assert logits.shape == (2, 1000)
    for row, image in zip(logits, pair, strict=True):
        assert centred_cosine(row, reference_logits(workspace, image, pre)[0]) >= 0.9995


def test_softmax_and_topk_postprocess(built, photos):
    workspace, _ = built
    for image in photos.values():
        (probabilities,), pre = composed_outputs(workspace, "softmax", image)
        logits = reference_logits(workspace, image, pre)
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
        assert np.abs(probabilities - expected).max() < 1e-5
        (scores, indices), _ = composed_outputs(workspace, "topk", image)
        assert indices.dtype == np.int64 and indices.shape == (1, 5)
        np.testing.assert_array_equal(indices[0], np.argsort(-probabilities[0])[:5])
        np.testing.assert_allclose(scores[0], probabilities[0][indices[0]], atol=1e-6)
    meta, _ = artifact(workspace, "topk")
    assert [o["name"] for o in meta["outputs"]] == ["scores", "indices"]
    assert (meta["postprocess"], meta["top_k"]) == ("topk", 5)


def test_wrong_mean_std_override_is_detected(built, photos):
    """The composed graph follows the override; against timm's own transform it is far off."""
    workspace, _ = built
    _, right = artifact(workspace, "e2e")
    _, wrong = artifact(workspace, "wrong")
    assert wrong.mean == (0.3, 0.3, 0.3)
    for name, image in photos.items():
        expected = timm_tensor(image, timm_config(right))
        good = np.abs(tensor_of(right, image) - expected).mean()
        bad = np.abs(tensor_of(wrong, image) - expected).mean()
        assert bad > 50 * good, (name, good, bad)
        (logits,), _ = composed_outputs(workspace, "wrong", image)
        assert centred_cosine(logits, reference_logits(workspace, image, right)) < 0.999, name


def tensor_of(pre: Preprocessing, image: np.ndarray) -> np.ndarray:
    return session_from(build_preprocessing(pre)).run(None, {"image": pre.feed(image)})[0]


def test_external_data_is_kept(built):
    workspace, _ = built
    meta, _ = artifact(workspace, "external")
    assert meta["external_data"] is True
    assert (workspace.out / "external" / "model.onnx.data").is_file()
    assert (workspace.out / "external" / "model.onnx").stat().st_size < 200_000  # weights apart


def test_old_opset_resizes_without_antialias_and_says_so(built, photos):
    workspace, stderr = built
    meta, pre = artifact(workspace, "old_opset")
    assert meta["opset"] == 12 and pre.antialias is False
    assert "the antialiased resize needs opset 13" in stderr
    image = photos["coffee"]
    (logits,), _ = composed_outputs(workspace, "old_opset", image)
    assert centred_cosine(logits, reference_logits(workspace, image, pre)) >= 0.99


ERRORS = """
version: 1
name: compose-errors
stages:
  bare: {type: load, source: onnx, path: plain.onnx}
  bordered:
    type: load
    source: onnx
    path: plain.onnx
    data_config: {input_size: [3, 160, 160], mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5],
                  crop_mode: border}
  no_config: {type: compose-preprocessing, input: bare}
  given:
    type: compose-preprocessing
    input: bare
    input_size: [3, 160, 160]
    mean: [0.5, 0.5, 0.5]
    std: [0.5, 0.5, 0.5]
  border: {type: compose-preprocessing, input: bordered}
"""


def test_missing_data_config_and_border_mode_fail_clearly(built, tmp_path):
    workspace = Workspace(tmp_path)
    shutil.copyfile(built[0].out / "onnx" / "model.onnx", tmp_path / "plain.onnx")
    result = workspace.cli("run", str(workspace.recipe(ERRORS)))
    assert result.returncode == 1
    states = outcomes(result.stderr)
    assert (states["given"], states["no_config"], states["border"]) == ("built", "failed", "failed")
    assert "no data config with input_size, mean, std" in result.stderr
    assert "crop_mode 'border'" in result.stderr and "not supported yet" in result.stderr

    head = ERRORS[: ERRORS.index("  bordered:")]
    border = workspace.recipe(
        head + "  e2e: {type: compose-preprocessing, input: bare, crop_mode: border}\n", "a.yaml"
    )
    result = workspace.cli("run", str(border))  # refused by the preflight, before any stage
    assert result.returncode == 4 and "not supported yet" in result.stderr, result.stderr
    top_k = workspace.recipe(
        head + "  e2e: {type: compose-preprocessing, input: bare, top_k: 3}\n", "b.yaml"
    )
    result = workspace.cli("plan", str(top_k))
    assert result.returncode == 3 and "applies only to 'postprocess: topk'" in result.stderr
