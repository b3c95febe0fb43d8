"""A model the suite trains itself, on real labelled data a package ships: timm's
``test_efficientnet`` (depthwise convolutions and all) on scikit-learn's handwritten digits,
~98 % top-1 on 360 held-out digits after ~30 s on 2 cores.

Random weights hide what users hit (flat logits, INT8 that never flips a class); this model
makes ``evaluate`` and the quantization gates measure real accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SIZE = 32  # the 8x8 digits, upscaled: what the model sees
HELD_OUT = 360
BROKEN_LAYER = "blocks.2.0.conv_pwl.weight"  # broken_load_stage flips its sign
EPOCHS = 8
DATA_CONFIG = (
    "{input_size: [3, 32, 32], crop_pct: 1.0, interpolation: bicubic, "
    "mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}"
)


@dataclass(frozen=True)
class Digits:
    checkpoint: Path
    val: Path  # ImageFolder: 0/…, 1/…, …, 9/ (held out from training)
    calibration: Path  # training digits, for quantization
    torch_top1: float

    def load_stage(self, stage_id: str = "model", checkpoint: Path | None = None) -> str:
        """A recipe line that loads the trained model (paths are absolute)."""
        return (
            f"  {stage_id}: {{type: load, name: test_efficientnet, num_classes: 10, "
            f"weights: {checkpoint or self.checkpoint}, data_config: {DATA_CONFIG}}}"
        )

    def broken_load_stage(self, folder: Path, stage_id: str = "broken") -> str:
        """A recipe line that loads the model with one layer's sign flipped (written into
        ``folder``): it runs, and computes something else: what a gate must fail."""
        from safetensors.torch import load_file, save_file

        weights = load_file(str(self.checkpoint))
        weights[BROKEN_LAYER] = -weights[BROKEN_LAYER]
        broken = folder / "broken.safetensors"
        save_file(weights, str(broken))
        return self.load_stage(stage_id, broken)


def train_digits(folder: Path) -> Digits:
    """Train once into ``folder`` (reused when it is already there)."""
    import numpy as np

    done = folder / "done.txt"
    if done.is_file():
        return Digits(
            folder / "digits.safetensors", folder / "val", folder / "calib", float(done.read_text())
        )
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = _digits()
    _write_folder(folder / "val", images[:HELD_OUT], labels[:HELD_OUT])
    _write_folder(folder / "calib", images[HELD_OUT : HELD_OUT + 200], labels[HELD_OUT:][:200])
    top1 = _train(images, labels, folder / "digits.safetensors")
    done.write_text(repr(float(np.float64(top1))))
    return Digits(folder / "digits.safetensors", folder / "val", folder / "calib", top1)


def _digits():
    """(uint8 RGB SIZE x SIZE images, labels), shuffled with a fixed seed."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.images))
    images = []
    for image in data.images[order]:
        grey = Image.fromarray((image * 255 / 16).astype(np.uint8))
        grey = grey.resize((SIZE, SIZE), Image.Resampling.BICUBIC)
        images.append(np.stack([np.asarray(grey)] * 3, axis=-1))
    return np.stack(images), data.target[order]


def _write_folder(root: Path, images, labels) -> None:
    from PIL import Image

    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / str(label) / f"{index:04d}.png")


def _train(images, labels, checkpoint: Path) -> float:
    """Train on all but the held-out digits; return the held-out top-1."""
    import numpy as np
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    tensors = torch.from_numpy(((images / 255.0 - mean) / std).astype(np.float32)).permute(
        0, 3, 1, 2
    )
    targets = torch.from_numpy(labels)
    train_x, train_y = tensors[HELD_OUT:], targets[HELD_OUT:]
    model = timm.create_model("test_efficientnet", num_classes=10)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    shifts = np.random.default_rng(1)
    for _ in range(EPOCHS):
        model.train()
        for batch in torch.randperm(len(train_x)).split(64):
            dy, dx = (int(v) for v in shifts.integers(-2, 3, 2))  # small translations
            inputs = torch.roll(train_x[batch], shifts=(dy, dx), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(inputs), train_y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        top1 = (model(tensors[:HELD_OUT]).argmax(1) == targets[:HELD_OUT]).float().mean().item()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    return top1
