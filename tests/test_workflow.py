"""The CI workflow is valid (for the syntax it uses) and runs what the README promises."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / ".github" / "workflows" / "edgepipe-rebuild.yml"


def load_workflow() -> dict:
    data = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the bare key `on` as the boolean True
    data["on"] = data.pop(True, data.get("on"))
    return data


def test_workflow_matches_the_schema():
    schema = json.loads((REPO / "tests" / "workflow.schema.json").read_text())
    jsonschema.validate(load_workflow(), schema)


def test_workflow_gates_and_reports():
    workflow = load_workflow()
    assert workflow["on"]["schedule"][0]["cron"]
    assert "pipelines/**" in workflow["on"]["pull_request"]["paths"]
    job = workflow["jobs"]["rebuild"]
    runs = " ".join(step.get("run", "") for step in job["steps"])
    assert "edgepipe check" in runs and "edgepipe run" in runs
    assert "GITHUB_STEP_SUMMARY" in runs and "edgepipe report" in runs
    assert job["env"]["EDGEPIPE_REMOTE"]
    for recipe in job["strategy"]["matrix"]["recipe"]:
        assert (REPO / recipe).is_file(), f"the workflow builds {recipe}, which does not exist"


FANOUT = REPO / ".github" / "workflows" / "edgepipe-fanout.yml"


def test_fanout_workflow_builds_groups_then_the_whole_recipe():
    data = yaml.safe_load(FANOUT.read_text())
    data["on"] = data.pop(True, data.get("on"))
    schema = json.loads((REPO / "tests" / "workflow.schema.json").read_text())
    jsonschema.validate(data, schema)
    jobs = data["jobs"]
    plan = " ".join(step.get("run", "") for step in jobs["plan"]["steps"])
    assert "edgepipe plan" in plan and "--groups" in plan
    assert jobs["group"]["strategy"]["matrix"]["include"].startswith("${{ fromJSON(")
    group = " ".join(step.get("run", "") for step in jobs["group"]["steps"])
    assert "matrix.until" in group and "--no-lock" in group
    final = " ".join(step.get("run", "") for step in jobs["final"]["steps"])
    assert "edgepipe run" in final and "edgepipe report" in final
    assert data["env"]["EDGEPIPE_REMOTE"]
