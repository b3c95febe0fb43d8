"""Text recognisers trained with CTC (CRNN and the like): best-path decoding, and how closely a
converted artifact's strings follow its reference model's, or ground-truth labels.

Parity compares decoded strings rather than logits because a CTC output's meaning is the string:
logits can drift a lot along a run of blanks without changing a character.
"""

from __future__ import annotations

__all__ = [
    "cer",
    "class_characters",
    "ctc_greedy_decode",
    "levenshtein",
    "sequence_parity",
    "text_accuracy",
]

from typing import Any

LAYOUTS = ("NTC", "TNC")


def class_characters(alphabet: str, blank: int, num_classes: int) -> list[str | None]:
    """The character of every output class: ``None`` for the blank at ``blank``, the alphabet's
    characters in order at the other indices."""
    if num_classes != len(alphabet) + 1:
        raise ValueError(
            f"the model outputs {num_classes} classes; alphabet {alphabet!r} ({len(alphabet)}) "
            f"+ blank needs {len(alphabet) + 1}"
        )
    if not 0 <= blank < num_classes:
        raise ValueError(
            f"blank index {blank} is out of range for {num_classes} classes (0..{num_classes - 1})"
        )
    characters: list[str | None] = list(alphabet)
    characters.insert(blank, None)
    return characters


def ctc_greedy_decode(logits: Any, alphabet: str, blank: int = 0, layout: str = "NTC") -> list[str]:
    """Best-path decoding of ``[N, T, C]`` (``layout="NTC"``) or ``[T, N, C]`` (``"TNC"``)
    logits, one string per sequence: the top class at every step, repeats collapsed, blanks
    dropped (so a character repeated in the text needs a blank between its two runs)."""
    import numpy as np

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    logits = np.asarray(logits)
    if logits.ndim != 3:
        raise ValueError(f"CTC logits are 3-D ({layout}), got shape {list(logits.shape)}")
    if layout == "TNC":
        logits = logits.transpose(1, 0, 2)
    characters = class_characters(alphabet, blank, logits.shape[2])
    paths = logits.argmax(axis=2)
    texts = []
    for path in paths.tolist():
        kept = [
            characters[cls]
            for step, cls in enumerate(path)
            if cls != blank and (step == 0 or cls != path[step - 1])
        ]
        texts.append("".join(kept))
    return texts


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions) between ``a`` and ``b``."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate: edit distance per reference character (per 1 when it is empty,
    so an empty reference against ``"ab"`` gives 2.0)."""
    return levenshtein(reference, hypothesis) / max(len(reference), 1)


def sequence_parity(
    names: list[str],
    ref_logits: list[Any],
    cand_logits: list[Any],
    alphabet: str,
    blank: int = 0,
    layout: str = "NTC",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The artifact's decoded strings against the reference's, one logits array per input:
    aggregate metrics and one record per sequence. An array holding a batch of several
    sequences gives one record each, named ``name[i]``."""
    import numpy as np

    if not len(names) == len(ref_logits) == len(cand_logits):
        raise ValueError(
            f"names, reference and artifact outputs differ in number: {len(names)}, "
            f"{len(ref_logits)}, {len(cand_logits)}"
        )
    records = []
    for name, ref_output, cand_output in zip(names, ref_logits, cand_logits, strict=True):
        ref, cand = np.asarray(ref_output), np.asarray(cand_output)
        if ref.shape != cand.shape:
            raise ValueError(
                f"output shapes differ: reference {list(ref.shape)}, artifact {list(cand.shape)}"
            )
        ref_texts = ctc_greedy_decode(ref, alphabet, blank, layout)
        cand_texts = ctc_greedy_decode(cand, alphabet, blank, layout)
        for index, (ref_text, cand_text) in enumerate(zip(ref_texts, cand_texts, strict=True)):
            records.append(
                {
                    "name": name if len(ref_texts) == 1 else f"{name}[{index}]",
                    "reference_text": ref_text,
                    "artifact_text": cand_text,
                    "cer": cer(ref_text, cand_text),
                }
            )
    rates = [record["cer"] for record in records]
    same = sum(record["reference_text"] == record["artifact_text"] for record in records)
    metrics = {
        "samples": len(records),
        "string_agreement": same / len(records) if records else None,
        "cer_mean": sum(rates) / len(rates) if rates else None,
        "cer_max": max(rates) if rates else None,
    }
    return metrics, records


def text_accuracy(predicted: list[str], labels: list[str]) -> dict[str, Any]:
    """Recognised strings against ground-truth labels: exact-match accuracy and mean CER."""
    if len(predicted) != len(labels):
        raise ValueError(f"{len(predicted)} predicted strings for {len(labels)} labels")
    if not labels:
        return {"samples": 0, "accuracy": None, "cer": None}
    exact = sum(text == label for text, label in zip(predicted, labels, strict=True))
    rates = [cer(label, text) for text, label in zip(predicted, labels, strict=True)]
    return {"samples": len(labels), "accuracy": exact / len(labels), "cer": sum(rates) / len(rates)}
