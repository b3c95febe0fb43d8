"""The models the task recipes ship, for the tasks beyond classification, with the labelled data
their gates and ``evaluate`` run on: torchvision's RetinaNet and LR-ASPP on synthetic shape scenes
(``pipelines/models/shapes.py``) and a CRNN on text lines rendered with Pillow's font
(``pipelines/models/crnn.py``), trained by ``make task-assets`` and committed
(``pipelines/models/weights/``, ``pipelines/data/``). The suite tests the weights the recipes
gate, instead of training its own (about 80 s of one worker); ``tests/test_task_assets.py`` keeps
the training code honest. Trained weights make "same detections", "same mask" and "same string"
mean something: random weights give flat scores that agree with anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ASSETS = {
    "detector.safetensors": REPO / "pipelines" / "models" / "weights" / "detector.safetensors",
    "segmenter.safetensors": REPO / "pipelines" / "models" / "weights" / "segmenter.safetensors",
    "crnn.safetensors": REPO / "pipelines" / "models" / "weights" / "crnn.safetensors",
    "scenes": REPO / "pipelines" / "data" / "shapes",
    "lines": REPO / "pipelines" / "data" / "text_lines",
}


@dataclass(frozen=True)
class TaskModels:
    def path(self, name: str) -> Path:
        return ASSETS[name]

    def load_stages(self) -> list[str]:
        """Recipe lines loading the three trained models, plus one deliberately broken artifact
        of each: a detector that keeps one detection per image, a mask shifted by 4 pixels, the
        CTC blank moved to the last class."""
        det = (
            "type: load, source: callable, factory: 'pipelines.models.shapes:detector', "
            f"weights: {self.path('detector.safetensors')}, task: detection, "
            "data_config: {input_size: [3, 160, 160], crop_mode: none, mean: [0, 0, 0], "
            "std: [1, 1, 1]}"
        )
        seg = (
            "type: load, source: callable, factory: 'pipelines.models.shapes:segmenter', "
            f"weights: {self.path('segmenter.safetensors')}, task: segmentation, "
            "data_config: {input_size: [3, 160, 160], crop_mode: squash, crop_pct: 1.0, "
            "interpolation: bilinear, mean: [0, 0, 0], std: [1, 1, 1]}"
        )
        ocr = (
            "type: load, source: callable, factory: 'pipelines.models.crnn:crnn', "
            f"weights: {self.path('crnn.safetensors')}, ctc: {{alphabet: '0123456789'}}, "
            "data_config: {input_size: [1, 32, 128], crop_mode: height, "
            "interpolation: bilinear, mean: [0.5], std: [0.5]}"
        )
        return [
            f"  det: {{{det}}}",
            f"  det_capped: {{{det}, model_kwargs: {{detections_per_img: 1}}}}",
            f"  seg: {{{seg}}}",
            f"  seg_shifted: {{{seg}, model_kwargs: {{shift: 4}}}}",
            f"  ocr: {{{ocr}}}",
            f"  ocr_blank_last: {{{ocr}, model_kwargs: {{blank_last: true}}}}",
        ]
