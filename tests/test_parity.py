"""parity and evaluate: they pass right artifacts and catch wrong ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

EXPORTED = """
version: 1
name: parity
stages:
  model: {{type: load, name: test_resnet{weights}}}
  onnx: {{type: export, input: model, exporter: torchscript}}
  check: {{type: parity, input: onnx}}
"""


def export_other_model(path, seed: int) -> None:
    """An ONNX file of the same architecture with *different* weights: a wrong artifact."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model("test_resnet").eval()
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 160, 160),),
        str(path),
        dynamo=False,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
    )


def test_parity_passes_and_records_metrics(workspace):
    recipe = workspace.recipe(EXPORTED.format(weights=""))
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 0, result.stderr
    report = json.loads((workspace.out / "check" / "parity.json").read_text())
    assert report["passed"] and report["kind"] == "fp32" and report["weights"] == "random"
    images = report["metrics"]["images"]["output"]
    assert images["samples"] == 10  # the photos scikit-image and matplotlib ship
    assert report["images"]["names"][:3] == ["chelsea", "coffee", "rocket"]
    assert [s["name"] for s in report["samples"]["images"]] == report["images"]["names"]
    assert images["cosine_min"] > 0.9999 and images["max_abs_error"] < 1e-3
    assert report["metrics"]["random"]["output"]["samples"] == 4
    assert (workspace.out / "check" / "parity.md").read_text().startswith("| inputs |")


def test_wrong_artifact_fails_the_gate_with_the_table(workspace):
    export_other_model(workspace.root / "other.onnx", seed=123)
    recipe = workspace.recipe("""
        version: 1
        name: wrong
        stages:
          model: {type: load, name: test_resnet}
          other: {type: load, source: onnx, path: other.onnx}
          check: {type: parity, input: other, reference: model}
    """)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 1, result.stderr
    assert "parity gate failed" in result.stderr and "cosine_min" in result.stderr
    assert "| images | output |" in result.stderr
    assert not (workspace.out / "check").exists()


def test_checkpoint_weights_flow_into_parity(workspace):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(7)
    trained = timm.create_model("test_resnet")
    state = trained.state_dict()
    state["fc.bias"] = torch.linspace(-3, 3, state["fc.bias"].numel())  # decisive logits
    save_file(state, str(workspace.root / "ckpt.safetensors"))

    recipe = workspace.recipe(EXPORTED.format(weights=", weights: ckpt.safetensors"))
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 0, result.stderr
    report = json.loads((workspace.out / "check" / "parity.json").read_text())
    assert report["weights"] == "checkpoint"
    assert report["thresholds"]["min_top1_agreement"] == 0.99  # class gates on for real weights

    # the same architecture with its random initial weights is not what the checkpoint says
    export_other_model(workspace.root / "random.onnx", seed=0)
    wrong = workspace.recipe(
        EXPORTED.format(weights=", weights: ckpt.safetensors")
        .replace(
            "onnx: {type: export, input: model, exporter: torchscript}",
            "onnx: {type: load, source: onnx, path: random.onnx}",
        )
        .replace(
            "check: {type: parity, input: onnx}",
            "check: {type: parity, input: onnx, reference: model}",
        ),
        name="wrong.yaml",
    )
    failed = workspace.cli("run", str(wrong))
    assert failed.returncode == 1 and "parity gate failed" in failed.stderr


def _write_imagefolder(root, model, images) -> None:
    """Label each photo with the torch model's own prediction: torch top-1 is then 100 %."""
    from PIL import Image
    from timm.data import create_transform, resolve_model_data_config

    transform = create_transform(**resolve_model_data_config(model))
    for index, (name, array) in enumerate(images):
        image = Image.fromarray(array)
        with torch.no_grad():
            label = int(model(transform(image).unsqueeze(0)).argmax())
        folder = root / f"c{label:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{index}_{name}.png")


def test_evaluate_gates_on_accuracy_drop(workspace):
    import skimage.data
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(11)
    model = timm.create_model("test_resnet").eval()
    state = model.state_dict()
    # spread the logits so different photos get different labels
    state["fc.weight"] = state["fc.weight"] * 50
    model.load_state_dict(state)
    save_file(state, str(workspace.root / "ckpt.safetensors"))
    photos = [
        (n, getattr(skimage.data, n)())
        for n in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
    ]
    _write_imagefolder(workspace.root / "val", model, photos)
    (workspace.root / "classes.txt").write_text("\n".join(f"c{i:04d}" for i in range(1000)))
    export_other_model(workspace.root / "other.onnx", seed=99)

    recipe = workspace.recipe("""
        version: 1
        name: accuracy
        stages:
          model: {type: load, name: test_resnet, weights: ckpt.safetensors}
          onnx: {type: export, input: model, exporter: torchscript}
          other: {type: load, source: onnx, path: other.onnx}
          good: {type: evaluate, input: onnx, dataset: val, class_map: classes.txt}
          bad: {type: evaluate, input: other, reference: model, dataset: val,
                class_map: classes.txt}
          top5: {type: compose-preprocessing, input: onnx, postprocess: topk, top_k: 5}
          good_top5: {type: evaluate, input: top5, dataset: val, class_map: classes.txt}
    """)
    result = workspace.cli("run", str(recipe))
    good = json.loads((workspace.out / "good" / "evaluate.json").read_text())
    assert good["torch"]["top1"] == 1.0 and good["artifact"]["top1"] == 1.0
    assert good["images"] == 5
    assert result.returncode == 1
    assert "stage 'bad' failed: accuracy gate failed: top-1 dropped" in result.stderr
    assert np.isclose(good["top1_drop"], 0.0)
    # a top-k graph outputs (scores, indices): it is ranked by its indices, not its scores
    top5 = json.loads((workspace.out / "good_top5" / "evaluate.json").read_text())
    assert top5["artifact"]["top1"] == 1.0 and top5["artifact"]["top5"] == 1.0, top5


def test_max_images_takes_from_every_class(tmp_path):
    from PIL import Image

    from edgepipe.stages.evaluate import labelled_images

    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8)).save(tmp_path / name / f"{i}.png")
    labels = [label for _, label in labelled_images(tmp_path, None)]
    assert labels[:2] == [0, 1] and sorted(labels) == [0, 0, 0, 1, 1, 1]


def test_parity_with_nothing_to_compare_fails(workspace):
    recipe = workspace.recipe("""
        version: 1
        name: empty
        stages:
          model: {type: load, name: test_resnet}
          onnx: {type: export, input: model, exporter: torchscript}
          check: {type: parity, input: onnx, max_images: 0, random_inputs: 0}
    """)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 1
    assert "nothing to gate: a fp32 artifact is judged on images and random" in result.stderr
