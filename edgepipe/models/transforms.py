"""Structural model transforms, recorded by name in a torch-model's builder and replayed on rebuild.

A transform changes a module's *structure* (which submodules and parameters exist), so the stored
weights only fit a module that went through the same transforms. :func:`torch_model.rebuild`
therefore builds a fresh module, replays the builder's transforms on it and then loads the
weights. Every transform must decide what to change from the structure alone (module types,
attributes, shared instances), never from weight values, or the replay would differ.

Transforms:
    ``timm-reparameterize``: timm's ``reparameterize_model`` (``fuse()``, ``reparameterize()``,
    ``switch_to_deploy()`` on RepVGG, MobileOne, FastViT, RepGhost, LeViT… blocks).
    ``fuse-conv-bn``: fold a BatchNorm2d into the Conv2d whose output it alone consumes.
"""

from __future__ import annotations

__all__ = ["NAMES", "apply", "structure"]

from collections import Counter
from typing import Any

from edgepipe.errors import StageError

NAMES = ("timm-reparameterize", "fuse-conv-bn")

# Blocks whose forward() feeds each conv's output straight into the paired norm and nowhere
# else (checked against each class's source). Matched by exact class: a subclass may override
# forward(), and then the pairing no longer holds.
_KNOWN_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "timm.layers.conv_bn_act.ConvNormAct": (("conv", "bn"),),
    "timm.models.resnet.ResNet": (("conv1", "bn1"),),
    "timm.models.resnet.BasicBlock": (("conv1", "bn1"), ("conv2", "bn2")),
    "timm.models.resnet.Bottleneck": (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    "timm.models._efficientnet_blocks.ConvBnAct": (("conv", "bn1"),),
    "timm.models._efficientnet_blocks.DepthwiseSeparableConv": (
        ("conv_s2d", "bn_s2d"),
        ("conv_dw", "bn1"),
        ("conv_pw", "bn2"),
    ),
    "timm.models._efficientnet_blocks.InvertedResidual": (
        ("conv_s2d", "bn_s2d"),
        ("conv_pw", "bn1"),
        ("conv_dw", "bn2"),
        ("conv_pwl", "bn3"),
    ),
    "timm.models._efficientnet_blocks.EdgeResidual": (("conv_exp", "bn1"), ("conv_pwl", "bn2")),
    "timm.models.efficientnet.EfficientNet": (("conv_stem", "bn1"), ("conv_head", "bn2")),
    "timm.models.mobilenetv3.MobileNetV3": (("conv_stem", "bn1"), ("conv_head", "norm_head")),
    "timm.models.ghostnet.GhostNet": (("conv_stem", "bn1"),),
    "timm.models.ghostnet.GhostBottleneck": (("conv_dw", "bn_dw"),),
    "timm.models.repghost.RepGhostNet": (("conv_stem", "bn1"),),
    "timm.models.repghost.RepGhostBottleneck": (("conv_dw", "bn_dw"),),
}
# Convs that compute with ``self.weight``/``self.bias`` as stored; e.g. StdConv2d standardises its
# weight in forward(), so folding a scale into it would be undone.
_PLAIN_CONVS = ("torch.nn.modules.conv.Conv2d", "timm.layers.conv2d_same.Conv2dSame")
_BATCH_NORMS = ("torch.nn.modules.batchnorm.BatchNorm2d", "timm.layers.norm_act.BatchNormAct2d")


def apply(module: Any, name: str) -> Any:
    """Apply the transform called ``name``, in eval mode (fusion is only valid for inference).

    Returns:
        The transformed module (the same object, changed in place).

    Raises:
        StageError: ``name`` is unknown, or the transform failed on this model.
    """
    if name not in NAMES:
        raise StageError(
            f"unknown model transform {name!r} (known: {', '.join(NAMES)}); the artifact was "
            "built by another edgepipe version: run with --force on the stage that made it"
        )
    module.eval()
    try:
        if name == "timm-reparameterize":
            from timm.utils import reparameterize_model

            return reparameterize_model(module, inplace=True).eval()
        return _fuse_conv_bn(module)
    except Exception as exc:  # model code raises anything from AttributeError to RuntimeError
        raise StageError(
            f"transform {name!r} failed on {type(module).__name__}: {type(exc).__name__}: {exc}"
        ) from None


def structure(module: Any) -> tuple:
    """A comparable summary of the module's structure: submodule types and parameter shapes.

    Two modules with equal structures load the same weights file; a transform changed something
    exactly when the structure before differs from the one after.
    """
    modules = tuple((name, _qualname(child)) for name, child in module.named_modules())
    tensors = tuple((name, tuple(t.shape)) for name, t in module.state_dict().items())
    return modules, tensors


def _qualname(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _fuse_conv_bn(model: Any) -> Any:
    """Fold every BatchNorm2d that alone consumes a plain Conv2d's output into that conv."""
    import torch

    uses = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    for parent in list(model.modules()):
        for conv_name, bn_name in _pairs(parent):
            owner, conv_name = _producer(parent, conv_name)
            conv, bn = getattr(owner, conv_name), getattr(parent, bn_name)
            if _fusable(conv, bn, uses):
                with torch.no_grad():
                    fused = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
                setattr(owner, conv_name, fused)
                setattr(parent, bn_name, _what_remains(bn))
    return model


def _producer(owner: Any, name: str) -> tuple[Any, str]:
    """The module that computes ``owner.name``'s output: a plain Sequential's is its last child's.

    This reaches e.g. the last conv of ResNet's deep stem (``conv1`` is a Sequential, then bn1).
    """
    import torch

    child = getattr(owner, name)
    while type(child).forward is torch.nn.Sequential.forward and len(child) > 0:
        owner, name = child, list(child._modules)[-1]
        child = getattr(owner, name)
    return owner, name


def _pairs(parent: Any) -> list[tuple[str, str]]:
    """(conv attribute, norm attribute) pairs of ``parent`` where the norm reads only the conv."""
    import torch

    # only plain Sequential: a subclass's own forward() may not chain its children in order
    if type(parent).forward is torch.nn.Sequential.forward:
        names = [name for name, _ in parent.named_children()]
        return list(zip(names, names[1:], strict=False))
    return [
        (conv, bn)
        for conv, bn in _KNOWN_PAIRS.get(_qualname(parent), ())
        # optional parts (e.g. conv_s2d) are None when a block is built without them
        if getattr(parent, conv, None) is not None and getattr(parent, bn, None) is not None
    ]


def _fusable(conv: Any, bn: Any, uses: Counter) -> bool:
    """Whether folding ``bn`` into ``conv`` keeps the result exact, judged from structure alone."""
    from torch.nn.utils import parametrize

    return (
        _qualname(conv) in _PLAIN_CONVS
        and _qualname(bn) in _BATCH_NORMS
        and conv.out_channels == bn.num_features
        # running stats are what we fold; without them eval-mode BN normalises by batch stats
        and bn.running_mean is not None
        and bn.running_var is not None
        # a module used at two places in the tree would change the other place too
        and uses[id(conv)] == 1
        and uses[id(bn)] == 1
        and not parametrize.is_parametrized(conv)
        and not any(_hooks(m) for m in (conv, bn))
    )


def _hooks(module: Any) -> bool:
    """Hooks (e.g. old-style weight_norm) compute something the fused conv would not."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _what_remains(bn: Any) -> Any:
    """What replaces a folded norm: nothing, or timm BatchNormAct2d's dropout + activation."""
    import torch

    if not hasattr(bn, "act"):
        return torch.nn.Identity()
    drop = getattr(bn, "drop", None)
    if drop is None or isinstance(drop, torch.nn.Identity):
        return bn.act
    return torch.nn.Sequential(drop, bn.act)
