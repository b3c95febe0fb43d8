"""The small torchvision detector (RetinaNet) and segmenter (LR-ASPP) trained on the synthetic
shape scenes of ``scenes.py``, in about a minute each on 2 cores.

Random weights give flat scores, so a parity check between torch and an export would pass on
almost anything; these trained models make "same detections" and "same mask" mean something.
"""

from __future__ import annotations

__all__ = [
    "detector",
    "evaluate_detector",
    "evaluate_segmenter",
    "save",
    "segmenter",
    "train_detector",
    "train_segmenter",
]

import argparse
import functools
import json
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.segmentation.lraspp import LRASPP
from torchvision.ops import FeaturePyramidNetwork, box_iou

from .scenes import CLASSES, average_precision, scene


def _conv(inputs: int, outputs: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


class Stages(nn.Module):
    """Plain convolutions, then an FPN: maps at stride 4 ("4", 32 channels, fine detail) and
    stride 8 ("8", ``out_channels``, with the coarser maps' context brought down into it)."""

    def __init__(self, out_channels: int = 64, widths: tuple[int, ...] = (32, 64, 96, 128)):
        super().__init__()
        self.out_channels = out_channels
        self.stride4 = nn.Sequential(_conv(3, 16, 2), _conv(16, widths[0], 2))
        self.stride8 = nn.Sequential(_conv(widths[0], widths[1], 2), _conv(widths[1], widths[1]))
        self.stride16 = nn.Sequential(_conv(widths[1], widths[2], 2), _conv(widths[2], widths[2]))
        self.stride32 = nn.Sequential(_conv(widths[2], widths[3], 2), _conv(widths[3], widths[3]))
        self.fpn = FeaturePyramidNetwork(list(widths[1:]), out_channels)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        fine = self.stride4(x)
        coarse = OrderedDict([("8", self.stride8(fine))])
        coarse["16"] = self.stride16(coarse["8"])
        coarse["32"] = self.stride32(coarse["16"])
        return OrderedDict([("4", fine), ("8", self.fpn(coarse)["8"])])


class DetectorBackbone(Stages):
    """The stride-8 map alone: its anchors (20–56 px) cover every shape (20–64 px)."""

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict([("0", super().forward(x)["8"])])


class SegmenterBackbone(Stages):
    """LR-ASPP's two inputs: "low" (stride 4) for edges, "high" (stride 8) for what they are."""

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = super().forward(x)
        return OrderedDict([("low", features["4"]), ("high", features["8"])])


ANCHOR_SIZES = (20, 28, 40, 56)  # px, square: the shapes are about as wide as they are high


def detector(num_classes: int = 4, score_thresh: float = 0.05, **kwargs) -> RetinaNet:
    """RetinaNet on :class:`DetectorBackbone`: any image size (resized to a 160 px short side);
    ``score_thresh`` is what RetinaNet drops before NMS; ``kwargs`` go to :class:`RetinaNet`.

    The head's convolutions are group-normalised (as in torchvision's RetinaNet v2): without,
    the focal loss does not get off the ground from scratch in a few hundred steps.
    """
    backbone = DetectorBackbone()
    settings = {"min_size": 160, "max_size": 320, "detections_per_img": 20} | kwargs
    head = RetinaNetHead(
        backbone.out_channels,
        len(ANCHOR_SIZES),
        num_classes,
        norm_layer=functools.partial(nn.GroupNorm, 16),
    )
    return RetinaNet(
        backbone,
        num_classes,
        anchor_generator=AnchorGenerator((ANCHOR_SIZES,), ((1.0,),)),
        head=head,
        score_thresh=score_thresh,
        **settings,
    )


class ShapesLRASPP(LRASPP):
    """LR-ASPP that pads its input to a multiple of 32, so that every feature map lines up
    with the pixels at any size (200x150 loses ~7 mIoU points without), and crops back.

    ``shift`` > 0 rolls the output that many pixels down and right: the same weights (and
    state-dict keys) computing a wrong mask, which a parity check must catch.
    """

    def __init__(self, *args, shift: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.shift = shift

    def forward(self, input: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = input.shape[-2:]
        padding = (0, -width % 32, 0, -height % 32)
        if any(padding):  # a Python branch: fixed-size exports see no pad at all
            input = nn.functional.pad(input, padding, mode="replicate")
        logits = super().forward(input)["out"][..., :height, :width]
        if self.shift:
            logits = torch.roll(logits, (self.shift, self.shift), dims=(2, 3))
        return OrderedDict([("out", logits)])


def segmenter(num_classes: int = 4, shift: int = 0) -> LRASPP:
    """LR-ASPP on :class:`SegmenterBackbone`: ``{"out": logits [N, C, H, W]}`` for 0..1 RGB
    input of any size."""
    backbone = SegmenterBackbone()
    return ShapesLRASPP(backbone, 32, backbone.out_channels, num_classes, 64, shift=shift)


def _tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)


def _train(model: nn.Module, loss_of, seed: int, steps: int, batch: int, lr: float) -> float:
    """AdamW with a one-cycle schedule on fresh scenes; returns the seconds it took.

    Training scenes are denser (3–6 shapes) than ``scene``'s default: more shapes per pixel
    computed is what makes a minute on 2 cores enough. Their seeds (from 1e6 on) never meet
    the held-out ones (below 1e6, including ``write_dataset``'s).
    """
    torch.manual_seed(seed)
    model.to(memory_format=torch.channels_last).train()  # ~20% faster steps on CPU
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    start, first = time.perf_counter(), (seed + 1) * 1_000_000
    for step in range(steps):
        seeds = range(first + step * batch, first + (step + 1) * batch)
        loss = loss_of(model, [scene(s, shapes=(3, 6)) for s in seeds])
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        schedule.step()
    return time.perf_counter() - start


def _detection_loss(model: nn.Module, scenes) -> torch.Tensor:
    images = [_tensor(image) for image, *_ in scenes]
    targets = [
        {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)}
        for _, boxes, labels, _ in scenes
    ]
    return sum(model(images, targets).values())


def _segmentation_loss(model: nn.Module, scenes) -> torch.Tensor:
    images = torch.stack([_tensor(image) for image, *_ in scenes])
    masks = torch.stack([torch.from_numpy(mask).long() for *_, mask in scenes])
    return nn.functional.cross_entropy(model(images)["out"], masks)


HELD_OUT = range(500_000, 500_050)  # evaluation scenes: seeds no training batch ever draws


@torch.no_grad()
def evaluate_detector(model: nn.Module, seeds=HELD_OUT, size=(160, 160)) -> dict[str, float]:
    """mAP@0.5, the mean top score per image, and the share of shapes found (IoU ≥ 0.5, right
    label) with a score ≥ 0.5."""
    scenes = [scene(s, size) for s in seeds]
    model.eval()
    found = [model([_tensor(image)])[0] for image, *_ in scenes]
    truth = [(boxes, labels) for _, boxes, labels, _ in scenes]
    confident = 0
    for detections, (boxes, labels) in zip(found, truth, strict=True):
        sure = detections["scores"] >= 0.5
        overlaps = box_iou(torch.from_numpy(boxes), detections["boxes"][sure])
        same = torch.from_numpy(labels)[:, None] == detections["labels"][sure][None]
        confident += int(((overlaps >= 0.5) & same).any(1).sum())
    tops = [float(d["scores"].max()) if len(d["scores"]) else 0.0 for d in found]
    return {
        "map50": round(average_precision(found, truth), 4),
        "mean_top_score": round(float(np.mean(tops)), 4),
        "found_at_0.5": round(confident / sum(len(labels) for _, labels in truth), 4),
    }


@torch.no_grad()
def evaluate_segmenter(model: nn.Module, seeds=HELD_OUT, size=(160, 160)) -> dict[str, float]:
    """mIoU over the classes and pixel accuracy, from one confusion matrix over all scenes."""
    model.eval()
    classes = len(CLASSES)
    confusion = torch.zeros(classes, classes, dtype=torch.int64)
    for image, _, _, mask in (scene(s, size) for s in seeds):
        guess = model(_tensor(image)[None])["out"][0].argmax(0).flatten()
        truth = torch.from_numpy(mask).long().flatten()
        confusion += torch.bincount(truth * classes + guess, minlength=classes**2).view(
            classes, classes
        )
    right = confusion.diag().double()
    union = confusion.sum(0) + confusion.sum(1) - confusion.diag()
    return {
        "miou": round(float((right / union.clamp(min=1)).mean()), 4),
        "pixel_accuracy": round(float(right.sum() / confusion.sum()), 4),
    }


def train_detector(
    seed: int = 0, steps: int = 500, evaluate: bool = True
) -> tuple[nn.Module, dict]:
    """A trained :func:`detector` in eval mode, with its held-out metrics and training seconds."""
    model = detector()
    seconds = _train(model, _detection_loss, seed, steps, batch=8, lr=4e-3)
    model.to(memory_format=torch.contiguous_format)
    measured = evaluate_detector(model) if evaluate else {}  # 50 scenes: skip when timed
    return model.eval(), measured | {"train_seconds": round(seconds, 1)}


def train_segmenter(
    seed: int = 0, steps: int = 500, evaluate: bool = True
) -> tuple[nn.Module, dict]:
    """A trained :func:`segmenter` in eval mode, with its held-out metrics and training seconds."""
    model = segmenter()
    seconds = _train(model, _segmentation_loss, seed, steps, batch=8, lr=5e-3)
    model.to(memory_format=torch.contiguous_format)
    measured = evaluate_segmenter(model) if evaluate else {}  # 50 scenes: skip when timed
    return model.eval(), measured | {"train_seconds": round(seconds, 1)}


def save(model: nn.Module, path: Path) -> None:
    """The weights as safetensors (shared tensors handled), for ``load`` stages."""
    from safetensors.torch import save_model

    save_model(model, str(path))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train a shapes model and write its weights.")
    parser.add_argument("kind", choices=["detector", "segmenter"])
    parser.add_argument("out", type=Path, help="the .safetensors file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="training steps (default: the function's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)  # the budget the steps were chosen for
    train = train_detector if args.kind == "detector" else train_segmenter
    steps = {} if args.steps is None else {"steps": args.steps}
    model, metrics = train(args.seed, **steps)
    save(model, args.out)
    print(json.dumps(metrics | {"parameters": sum(p.numel() for p in model.parameters())}))


if __name__ == "__main__":
    main()
