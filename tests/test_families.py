"""The timm families people deploy: export (auto exporter) → simplify → compose → parity on
scikit-image's photos with the default gates. One recipe, so the CLI runs them all."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

FAMILIES = {
    "resnet": ("resnet18", False),
    "efficientnet": ("efficientnet_lite0", False),
    "convnextv2": ("convnextv2_atto", False),
    "vit": ("vit_tiny_patch16_224", False),
    "eva02": ("eva02_tiny_patch14_224", False),
    "mobilenetv3": ("mobilenetv3_small_050", False),
    "mobileone": ("mobileone_s0", True),
    "repvgg": ("repvgg_a0", True),
}


def family_recipe() -> str:
    lines = ["version: 1", "name: families", "stages:"]
    for family, (model, reparam) in FAMILIES.items():
        source = f"{family}_fused" if reparam else family
        lines.append(f"  {family}: {{type: load, name: {model}}}")
        if reparam:
            lines.append(f"  {source}: {{type: reparameterize, input: {family}}}")
        lines += [
            f"  {family}_onnx: {{type: export, input: {source}}}",
            f"  {family}_simple: {{type: simplify, input: {family}_onnx}}",
            f"  {family}_e2e: {{type: compose-preprocessing, input: {family}_simple}}",
            f"  {family}_parity: {{type: parity, input: {family}_simple}}",
            f"  {family}_e2e_parity: {{type: parity, input: {family}_e2e}}",
        ]
    return "\n".join(lines) + "\n"


def test_every_family_exports_composes_and_passes_parity(workspace):
    recipe = workspace.recipe(family_recipe())
    result = workspace.cli("run", str(recipe), "--jobs", "2", timeout=1500)
    assert result.returncode == 0, result.stderr
    rows = []
    for family in FAMILIES:
        for stage, kind in ((f"{family}_parity", "fp32"), (f"{family}_e2e_parity", "composed")):
            report = json.loads((workspace.out / stage / "parity.json").read_text())
            assert report["passed"] and report["kind"] == kind
            images = next(iter(report["metrics"]["images"].values()))
            rows.append(
                f"{family:<12} {kind:<9} cosine_min {images['cosine_min']:.6f} "
                f"max_abs {images['max_abs_error']:.3g} "
                f"top1 {images['top1_agreement']:.2f}"
            )
    print("\n" + "\n".join(rows))

    cached = workspace.cli("run", str(recipe))
    assert cached.returncode == 0 and " built " not in cached.stderr


def test_wrong_preprocessing_is_caught(workspace):
    """eva02 is CLIP-normalised; forcing ImageNet mean/std into the graph must fail parity."""
    recipe = workspace.recipe("""
        version: 1
        name: wrong-norm
        stages:
          model: {type: load, name: eva02_tiny_patch14_224}
          onnx: {type: export, input: model, exporter: torchscript}
          e2e:
            type: compose-preprocessing
            input: onnx
            mean: [0.485, 0.456, 0.406]
            std: [0.229, 0.224, 0.225]
          check: {type: parity, input: e2e}
    """)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 1, result.stderr
    assert "stage 'check' failed: parity gate failed" in result.stderr
    assert "cosine_min" in result.stderr
