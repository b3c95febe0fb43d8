"""A small CTC text recogniser (CRNN) the test-suite trains itself on synthetic digit lines in
well under a minute on 2 cores, so that torch-vs-export parity can be judged on decoded strings.

Input: [N, 1, height, W] float32, pixels normalised as (p / 255 - 0.5) / 0.5 (see ``to_batch``).
Output: logits [N, W // 4, num_classes], batch first; class 0 is the CTC blank, class i + 1 is
``ALPHABET[i]``. A plain conv stack (no adaptive pooling) takes the height to 1 and the width
to W / 4, then a bidirectional LSTM reads the columns: ops that both ONNX exporters, ONNX
Runtime and OpenVINO handle at any width.

    python pipelines/models/crnn.py OUT.safetensors [--seed N] [--threads N]
"""

from __future__ import annotations

__all__ = [
    "ALPHABET",
    "HELD_OUT",
    "STRIDE",
    "accuracy",
    "crnn",
    "greedy_decode",
    "save",
    "to_batch",
    "train",
]

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

try:
    from edgepipe.imaging.text_lines import DIGITS, sample_lines
except ModuleNotFoundError:  # run as a script from a checkout without edgepipe installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from edgepipe.imaging.text_lines import DIGITS, sample_lines

ALPHABET = DIGITS
STRIDE = 4  # input columns per output step: T = W // STRIDE
HELD_OUT = 200
HELD_OUT_SEED = 2**31 - 1  # training lines use seeds seed * 100_000 + chunk, never this one
_TRAIN_SEEDS_PER_RUN = 100_000
BUCKET = 8  # batches rendered together and grouped by width
LEARNING_RATE = 3e-3


class _CRNN(nn.Module):
    def __init__(self, num_classes: int, height: int, blank_last: bool) -> None:
        super().__init__()
        if height % 16:
            raise ValueError(f"crnn needs a height divisible by 16, not {height}")

        def block(cin: int, cout: int, pool: tuple[int, int]) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(pool, pool),
            ]

        self.features = nn.Sequential(
            *block(1, 16, (2, 2)),  # height / 2, width / 2
            *block(16, 32, (2, 2)),  # height / 4, width / 4
            *block(32, 64, (2, 1)),
            *block(64, 96, (2, 1)),  # height / 16
            # a conv over the remaining rows, not a pooling: exact height 1 at any width
            nn.Conv2d(96, 96, (height // 16, 1), bias=False),
            nn.BatchNorm2d(96),
            nn.ReLU(inplace=True),
        )
        # an LSTM, not a GRU: torch 2.14's dynamo exporter fails to decompose this GRU once the
        # width is dynamic (shape mismatch in aten.gru.input); the LSTM exports
        self.rnn = nn.LSTM(96, 64, batch_first=True, bidirectional=True)
        self.classifier = nn.Linear(128, num_classes)
        self.blank_last = blank_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        columns = self.features(x).squeeze(2).transpose(1, 2)  # [N, T, C]
        logits = self.classifier(self.rnn(columns)[0])
        if self.blank_last:  # same weights, classes rotated: a deliberately wrong artifact
            logits = torch.cat([logits[..., 1:], logits[..., :1]], dim=-1)
        return logits


def crnn(
    num_classes: int = len(ALPHABET) + 1, height: int = 32, blank_last: bool = False
) -> nn.Module:
    """The recogniser, untrained: [N, 1, height, W] -> logits [N, W // 4, num_classes], blank 0
    (or, with ``blank_last``, the same network with the blank moved to the last class)."""
    return _CRNN(num_classes, height, blank_last)


def to_batch(images: list, multiple: int = STRIDE) -> torch.Tensor:
    """Grayscale PIL lines -> normalised [N, 1, H, W]; each is padded on the right with its own
    background (its median) to the widest, rounded up to ``multiple``."""
    import numpy as np

    width = max(image.width for image in images)
    width = -(-width // multiple) * multiple
    batch = np.empty((len(images), 1, images[0].height, width), np.float32)
    for index, image in enumerate(images):
        pixels = np.asarray(image.convert("L"), np.float32)
        batch[index, 0] = np.median(pixels)
        batch[index, 0, :, : pixels.shape[1]] = pixels
    return torch.from_numpy((batch / 255.0 - 0.5) / 0.5)


def greedy_decode(logits: torch.Tensor, alphabet: str = ALPHABET) -> list[str]:
    """Best path per line of [N, T, C] logits, blank 0: merge repeats, drop blanks."""
    strings = []
    for path in logits.argmax(-1).tolist():
        previous, chars = 0, []
        for label in path:
            if label != previous and label != 0:
                chars.append(alphabet[label - 1])
            previous = label
        strings.append("".join(chars))
    return strings


def accuracy(model: nn.Module, lines: list, batch: int = 50) -> float:
    """Exact-match rate of greedy-decoded strings over (text, image) ``lines``."""
    right = 0
    with torch.no_grad():
        for start in range(0, len(lines), batch):
            chunk = lines[start : start + batch]
            decoded = greedy_decode(model(to_batch([image for _, image in chunk])))
            right += sum(text == got for (text, _), got in zip(chunk, decoded, strict=True))
    return right / len(lines)


def train(seed: int = 0, steps: int = 160, batch: int = 32) -> tuple[nn.Module, float]:
    """Train on fresh synthetic lines for ``steps`` batches; return the model in eval mode and
    its exact-match accuracy on HELD_OUT lines no training batch draws from."""
    torch.manual_seed(seed)
    model = crnn()
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=LEARNING_RATE, total_steps=steps, pct_start=0.15
    )
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    model.train()
    for lines in _training_batches(seed, steps, batch):
        inputs = to_batch([image for _, image in lines])
        targets = torch.tensor([ALPHABET.index(c) + 1 for text, _ in lines for c in text])
        target_lengths = torch.tensor([len(text) for text, _ in lines])
        log_probs = model(inputs).log_softmax(-1).transpose(0, 1)  # CTCLoss wants [T, N, C]
        input_lengths = torch.full((len(lines),), log_probs.shape[0], dtype=torch.long)
        loss = ctc(log_probs, targets, input_lengths, target_lengths)
        optimiser.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # early CTC losses are large
        optimiser.step()
        schedule.step()
    model.eval()
    return model, accuracy(model, sample_lines(HELD_OUT, seed=HELD_OUT_SEED))


def _training_batches(seed: int, steps: int, batch: int) -> Iterator[list]:
    """``steps`` batches of fresh lines, rendered BUCKET batches at a time and sorted by width:
    lines are 55-170 px wide (~100 on average), and a random batch of 32 pads all to ~160."""
    import random

    shuffle = random.Random(seed)
    for chunk in range(-(-steps // BUCKET)):
        if chunk >= _TRAIN_SEEDS_PER_RUN:
            raise ValueError(f"train takes at most {_TRAIN_SEEDS_PER_RUN * BUCKET} steps")
        count = min(BUCKET, steps - chunk * BUCKET)
        lines = sample_lines(count * batch, seed=seed * _TRAIN_SEEDS_PER_RUN + chunk)
        lines.sort(key=lambda line: line[1].width)
        batches = [lines[start : start + batch] for start in range(0, len(lines), batch)]
        shuffle.shuffle(batches)
        yield from batches


def save(model: nn.Module, path: str | Path) -> None:
    """Write the weights as safetensors (what a recipe's ``weights:`` loads)."""
    from safetensors.torch import save_model

    save_model(model, str(path))


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="train the CRNN on synthetic digit lines")
    parser.add_argument("out", type=Path, help="where to write the .safetensors checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    # 1 is ~3x faster than 2 while another process keeps one of 2 cores busy
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, held_out = train(seed=args.seed)
    seconds = time.perf_counter() - start
    save(model, args.out)
    print(f"held-out exact match {held_out:.3f} on {HELD_OUT} lines, {seconds:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
