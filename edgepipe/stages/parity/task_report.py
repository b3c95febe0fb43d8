"""What a task parity report shows: the sample images a task uses by default, the Markdown of
its metrics and per-input records, and the one-line summary a run report and headline carry."""

from __future__ import annotations

__all__ = [
    "describe_task_images",
    "task_headline",
    "task_images",
    "task_markdown",
    "task_summary",
]

from pathlib import Path
from typing import Any

from edgepipe.imaging.samples import describe_images, load_images

TEXT_LINE_SEED = 1_000_003
"""Seed space of the default text lines: far from the seeds a suite trains recognisers on."""

# per task: (metric, header, format) in table order; the first ones also summarise the report
_COLUMNS = {
    "detection": (
        ("recall", "recall", ".3f"),
        ("precision", "precision", ".3f"),
        ("class_agreement", "class agree", ".3f"),
        ("score_max_abs_error", "max score err", ".3g"),
        ("iou_mean", "mean IoU", ".4f"),
        ("iou_min", "min IoU", ".4f"),
        ("reference_detections", "ref dets", "d"),
        ("matched", "matched", "d"),
    ),
    "segmentation": (
        ("pixel_agreement_min", "pixel agree min", ".5f"),
        ("miou", "mIoU", ".5f"),
        ("pixel_agreement_mean", "pixel agree mean", ".5f"),
        ("miou_min", "mIoU min", ".5f"),
    ),
    "sequence": (
        ("string_agreement", "same string", ".3f"),
        ("cer_max", "CER max", ".3f"),
        ("cer_mean", "CER mean", ".3f"),
    ),
}
_SUMMARY_METRICS = 3


def task_images(
    task: str, folder: Path | None, limit: int, seed: int, meta: dict[str, Any]
) -> list[tuple[str, Any]]:
    """A recipe's folder, else the task's default: lines of the recogniser's own alphabet for
    a text model, the bundled photos otherwise."""
    if folder is not None or task != "sequence":
        return load_images(folder, limit)
    from edgepipe.imaging.text_lines import sample_lines

    height = meta["data_config"]["input_size"][1]
    alphabet = meta["ctc"]["alphabet"]
    lines = sample_lines(limit, seed=TEXT_LINE_SEED + seed, alphabet=alphabet, height=height)
    return [(f"line-{i}-{text}", image) for i, (text, image) in enumerate(lines)]


def describe_task_images(task: str, folder: Path | None, names: list[str]) -> dict[str, Any]:
    described = describe_images(folder, names)
    if folder is None and task == "sequence":
        described["source"] = "text lines rendered with Pillow's bundled font"
    return described


def _number(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def task_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The task and its headline metrics, from a task ``parity.json`` report."""
    task = report["task"]
    metrics = next(iter(report["metrics"]["images"].values()))
    summary: dict[str, Any] = {"task": task}
    for metric, _header, _spec in _COLUMNS[task][:_SUMMARY_METRICS]:
        value = metrics.get(metric)
        summary[metric] = round(value, 6) if isinstance(value, float) else value
    return summary


def task_headline(report: dict[str, Any]) -> str:
    """The headline metrics as one phrase, e.g. ``same string 1.000, CER max 0.000``."""
    task = report["task"]
    metrics = next(iter(report["metrics"]["images"].values()))
    return ", ".join(
        f"{header} {_number(metrics.get(metric), spec)}"
        for metric, header, spec in _COLUMNS[task][:_SUMMARY_METRICS]
    )


def task_markdown(report: dict[str, Any]) -> str:
    task = report["task"]
    columns = _COLUMNS[task]
    head = "| inputs | output | n | " + " | ".join(h for _, h, _ in columns) + " |"
    rows = [head, "|" + "---|" * (3 + len(columns))]
    for group, outputs in report["metrics"].items():
        for name, m in outputs.items():
            cells = " | ".join(_number(m.get(metric), spec) for metric, _, spec in columns)
            rows.append(f"| {group} | {name} | {m['samples']} | {cells} |")
    parts = ["\n".join(rows)]
    samples = report["samples"].get("images") or []
    if samples:
        parts.append(_sample_table(task, samples))
    used = report["images"]
    parts.append(f"Images: {used['source']}: {', '.join(used['names']) or 'none'}.")
    return "\n\n".join(parts)


def _sample_table(task: str, samples: list[dict[str, Any]]) -> str:
    if task == "sequence":
        rows = ["| input | reference text | artifact text | CER |", "|---|---|---|---|"]
        rows += [
            f"| {s['name']} | {s['reference_text']} | {s['artifact_text']} | {s['cer']:.3f} |"
            for s in samples
        ]
    elif task == "segmentation":
        rows = ["| input | pixel agreement | mIoU | classes |", "|---|---|---|---|"]
        rows += [
            f"| {s['name']} | {s['pixel_agreement']:.5f} | {_number(s['miou'], '.5f')} "
            f"| {s['classes']} |"
            for s in samples
        ]
    else:
        rows = [
            "| input | reference dets | matched | recall | class flips | max score err | min IoU |",
            "|---|---|---|---|---|---|---|",
        ]
        rows += [
            f"| {s['name']} | {s['reference_detections']} | {s['matched']} "
            f"| {_number(s['recall'], '.3f')} | {s['class_flips']} "
            f"| {_number(s['score_max_abs_error'], '.3g')} | {_number(s['iou_min'], '.4f')} |"
            for s in samples
        ]
    return "\n".join(rows)
