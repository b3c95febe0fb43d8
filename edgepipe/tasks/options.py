"""Recipe options that describe a non-classification model's outputs or how a verification
reads them: the CTC decoding of a text recogniser (on its load stage, a fact about the model),
and the detection matching rule (on a parity stage)."""

from __future__ import annotations

__all__ = ["CtcSpec", "DetectionMatching"]

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class CtcSpec(BaseModel):
    """How a CTC text recogniser's outputs decode: greedy best path over its classes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alphabet: str = Field(
        min_length=1,
        max_length=10_000,
        description="The characters the model outputs, in class order (the blank left out).",
    )
    blank: int = Field(
        default=0,
        ge=0,
        description="Class index of the CTC blank; the alphabet fills the other indices in order.",
    )
    layout: Literal["NTC", "TNC"] = Field(
        default="NTC",
        description="Output layout: [batch, steps, classes] (NTC) or [steps, batch, classes].",
    )

    @model_validator(mode="after")
    def _blank_in_range(self) -> CtcSpec:
        if self.blank > len(self.alphabet):
            raise ValueError(
                f"blank {self.blank} is outside the {len(self.alphabet) + 1} classes of "
                f"alphabet + blank"
            )
        if len(set(self.alphabet)) != len(self.alphabet):
            raise ValueError("the alphabet repeats a character: every class needs its own")
        return self


class DetectionMatching(BaseModel):
    """Which detections a parity check compares, and when two boxes are the same object."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    score_threshold: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="The reference's detections at or above this score must be found again "
        "(the artifact's are matched down to half of it, so a score drifting just below counts "
        "as a score error, not a miss).",
    )
    iou_threshold: float = Field(
        default=0.5, gt=0, le=1, description="Boxes overlapping at least this much match."
    )
