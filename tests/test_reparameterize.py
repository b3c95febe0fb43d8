"""The reparameterize stage and its transforms, on real timm models (random init, offline)."""

from __future__ import annotations

import json
import logging
import textwrap

import numpy as np
import onnxruntime as ort
import pytest
import timm
import torch
from conftest import outcomes

from edgepipe.errors import StageError
from edgepipe.models import transforms
from edgepipe.models.torch_model import import_callable, rebuild, save_torch_model
from edgepipe.stages.base import Artifact, ArtifactKind, StageContext
from edgepipe.stages.reparameterize import ReparameterizeSpec, ReparameterizeStage

pytestmark = pytest.mark.slow


def randomise_batchnorm(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics, so that folding them really changes weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            shape = bn.running_mean.shape
            bn.running_mean.copy_(torch.randn(shape, generator=generator) * 0.5)
            bn.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
            bn.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
            bn.bias.copy_(torch.randn(shape, generator=generator) * 0.2)
    return model.eval()


def relative_error(reference: torch.Tensor, actual: torch.Tensor) -> float:
    return ((actual - reference).abs().max() / reference.abs().max()).item()


def batchnorms(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_transforms(model: torch.nn.Module, names: tuple[str, ...]) -> list[str]:
    """Apply ``names`` in place; return those that changed the structure."""
    changed = []
    for name in names:
        before = transforms.structure(model)
        transforms.apply(model, name)
        if transforms.structure(model) != before:
            changed.append(name)
    return changed


def example(size: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.randn(2, *size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mobileone_s0", ["timm-reparameterize"]),
        ("fastvit_t8", ["timm-reparameterize", "fuse-conv-bn"]),
    ],
)
def test_reparameterizable_blocks_fold_and_keep_outputs(name, expected):
    for seed in range(3):
        model = randomise_batchnorm(timm.create_model(name), seed)
        x = example(model.pretrained_cfg["input_size"], seed)
        with torch.no_grad():
            reference = model(x)
        bn_before, params_before = batchnorms(model), parameters(model)

        assert run_transforms(model, transforms.NAMES) == expected
        with torch.no_grad():
            assert relative_error(reference, model(x)) < 1e-4
        assert batchnorms(model) == 0 < bn_before
        assert parameters(model) < params_before


@pytest.mark.parametrize("name", ["test_resnet", "resnet18", "test_efficientnet", "test_byobnet"])
def test_conv_bn_fusion_removes_every_batchnorm(name):
    model = randomise_batchnorm(timm.create_model(name), 0)
    x = example(model.pretrained_cfg["input_size"])
    with torch.no_grad():
        reference = model(x)
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())

    assert run_transforms(model, ("fuse-conv-bn",)) == ["fuse-conv-bn"]
    assert batchnorms(model) == 0
    # the BatchNormAct2d activations survive as modules of their own; convs are never dropped
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == convs
    with torch.no_grad():
        assert relative_error(reference, model(x)) < 1e-4


def test_batchnorm_not_fed_by_one_conv_alone_is_kept():
    shared = torch.nn.BatchNorm2d(8)
    model = torch.nn.Sequential(
        torch.nn.BatchNorm2d(3),  # precedes the conv (pre-activation): nothing to fold into
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.ReLU(),  # the activation sits between conv and norm
        torch.nn.BatchNorm2d(8),
        torch.nn.Sequential(torch.nn.Conv2d(8, 8, 1), shared),
        torch.nn.Sequential(torch.nn.Conv2d(8, 8, 1), shared),  # one norm used at two places
    )
    before = transforms.structure(model)
    assert run_transforms(model, ("fuse-conv-bn",)) == []
    assert transforms.structure(model) == before


def test_model_without_batchnorm_passes_through(tmp_path, caplog):
    source = write_artifact(timm.create_model("test_vit"), tmp_path / "in")
    ctx = context(source, tmp_path)
    with caplog.at_level(logging.INFO, logger=ctx.log.name):
        meta = ReparameterizeStage().run(spec(), ctx)

    assert meta["reparameterized"] == []
    assert meta["parameters"] == meta["parameters_before"] == source.meta["parameters"]
    assert meta["modules_after"] == meta["modules_before"]
    assert meta["data_config"] == source.meta["data_config"]
    assert "nothing to reparameterize" in caplog.text
    for name in ("model.json", "weights.safetensors"):
        assert (ctx.out_dir / name).read_bytes() == (source.path / name).read_bytes()


def test_stage_artifact_rebuilds_to_the_fused_model(tmp_path, caplog):
    model = randomise_batchnorm(timm.create_model("mobileone_s0"), 7)
    source = write_artifact(model, tmp_path / "in")
    ctx = context(source, tmp_path)
    with caplog.at_level(logging.INFO, logger=ctx.log.name):
        meta = ReparameterizeStage().run(spec(), ctx)

    assert meta["reparameterized"] == ["timm-reparameterize"]
    assert meta["parameters_before"] == parameters(model) > meta["parameters"]
    assert meta["modules_before"]["BatchNormAct2d"] == 226
    assert "BatchNormAct2d" not in meta["modules_after"]
    assert meta["data_config"] == source.meta["data_config"]
    assert "max abs difference" in caplog.text
    builder = json.loads((ctx.out_dir / "model.json").read_text())
    assert builder["transforms"] == ["timm-reparameterize"]

    rebuilt = rebuild(ctx.out_dir, tmp_path)
    expected = rebuild(source.path, tmp_path)
    transforms.apply(expected, "timm-reparameterize")
    x = example((3, 224, 224))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), expected(x))
        assert relative_error(model(x), rebuilt(x)) < 1e-4


def test_a_fusion_that_changes_outputs_fails_the_stage(tmp_path):
    # A forward() that reads the conv's output past its BatchNorm: the module tree cannot show
    # that, so only the numerical check stands between this fusion and a wrong model.
    (tmp_path / "reparam_reads_twice.py").write_text(
        textwrap.dedent(
            """
            import torch

            class ReadsTwice(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
                    self.body = torch.nn.Sequential(conv, torch.nn.BatchNorm2d(8))

                def forward(self, x):
                    return self.body(x) + self.body[0](x)

            def build():
                return ReadsTwice()
            """
        )
    )
    builder = {"source": "callable", "factory": "reparam_reads_twice:build", "kwargs": {}}
    model = import_callable(builder["factory"], tmp_path)()
    source_dir = tmp_path / "in"
    source_dir.mkdir()
    save_torch_model(randomise_batchnorm(model, 3), builder, source_dir)
    meta = {"data_config": {"input_size": [3, 16, 16]}, "parameters": parameters(model)}
    source = Artifact(ArtifactKind.TORCH_MODEL, source_dir, meta, "model")

    with pytest.raises(StageError, match="differ from the original"):
        ReparameterizeStage().run(spec(method="fuse-conv-bn"), context(source, tmp_path))


def test_unknown_transform_in_a_builder_is_a_clear_error(tmp_path):
    source = write_artifact(timm.create_model("test_resnet"), tmp_path / "in")
    builder = json.loads((source.path / "model.json").read_text())
    (source.path / "model.json").write_text(json.dumps({**builder, "transforms": ["fold-all"]}))
    with pytest.raises(StageError, match="unknown model transform 'fold-all'"):
        rebuild(source.path, tmp_path)


RECIPE = """
version: 1
name: reparameterized
stages:
  model:
    type: load
    name: mobileone_s0
  fused:
    type: reparameterize
    input: model
  onnx:
    type: export
    input: fused
    opset: 17
    exporter: torchscript
  simple:
    type: simplify
    input: onnx
"""


def test_pipeline_exports_the_fused_model(workspace):
    recipe = workspace.recipe(RECIPE)
    first = workspace.cli("run", str(recipe))
    assert first.returncode == 0, first.stderr
    assert set(outcomes(first.stderr).values()) == {"built"}

    # the ONNX graph of the fused model computes what the original, unfused model computes
    original = rebuild(workspace.out / "model", workspace.root)
    x = example((3, 224, 224))
    with torch.no_grad():
        expected = original(x).numpy()
    session = ort.InferenceSession(str(workspace.out / "simple" / "model.onnx"))
    (actual,) = session.run(None, {"input": x.numpy()})
    assert np.abs(actual - expected).max() / np.abs(expected).max() < 1e-4
    ops = {node.op_type for node in _onnx_nodes(workspace.out / "simple" / "model.onnx")}
    assert "BatchNormalization" not in ops
    meta = json.loads((workspace.out / "fused" / "artifact.json").read_text())["meta"]
    assert meta["reparameterized"] == ["timm-reparameterize"]

    second = workspace.cli("run", str(recipe))
    assert second.returncode == 0, second.stderr
    assert set(outcomes(second.stderr).values()) == {"cached"}


def _onnx_nodes(path):
    import onnx

    return onnx.load(str(path)).graph.node


def write_artifact(model: torch.nn.Module, directory) -> Artifact:
    """A torch-model artifact as the load stage writes it (timm builder, weights, meta)."""
    directory.mkdir(parents=True)
    builder = {"source": "timm", "name": model.pretrained_cfg["architecture"], "kwargs": {}}
    save_torch_model(model.eval(), builder, directory)
    size = list(model.pretrained_cfg["input_size"])
    meta = {"data_config": {"input_size": size}, "parameters": parameters(model)}
    return Artifact(ArtifactKind.TORCH_MODEL, directory, meta, "model")


def context(source: Artifact, root) -> StageContext:
    out_dir = root / "out"
    out_dir.mkdir()
    log = logging.getLogger("edgepipe.test.reparameterize")
    return StageContext("fused", root, [source], out_dir, log)


def spec(**fields) -> ReparameterizeSpec:
    return ReparameterizeSpec(type="reparameterize", input="model", **fields)
