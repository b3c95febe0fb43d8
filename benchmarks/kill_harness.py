"""Kill harness: random kills of `edgepipe run` must never corrupt the cache or leave work behind.

    .venv/bin/python benchmarks/kill_harness.py [--kills 60] [--seed 0]

Each trial starts a real run of a four-stage recipe (timm model → ONNX → onnxsim → OpenVINO)
in its own session, as a CI runner would, then at a random moment sends SIGKILL, SIGINT or
SIGTERM either to the whole process group or to the edgepipe process only. Before the kill it
notes every process the run started (forkserver, stage children…). After it, the harness checks:

- the run ended within 30 s of SIGINT/SIGTERM, with exit 130/143 and no traceback;
- none of the run's processes is alive 5 s after the kill (orphans);
- `edgepipe cache verify` is clean (corrupt caches);
- a plain rerun succeeds (failed reruns) and its outputs are byte for byte those of a clean
  build made first (digest mismatches);
- after that rerun, the cache's tmp/ and the output folder hold no temporary entries.

A trial rebuilds a random stage and those after it with --force, or (one in four) starts
from an empty cache, so kills land in loading, exporting, simplifying, converting and storing.
Trials go on until --kills kills have landed (a run may finish before its kill).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import REPO, table

RECIPE = """
version: 1
name: killed
stages:
  model:
    type: load
    source: timm
    name: mobilenetv3_small_100
    pretrained: false
  onnx:
    type: export
    input: model
    opset: 18
  simple:
    type: simplify
    input: onnx
  ir:
    type: convert-openvino
    input: simple
"""
STAGES = ["model", "onnx", "simple", "ir"]
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgepipe", *args]


def outputs_digest(out: Path) -> dict[str, str]:
    digests = {}
    for stage in STAGES:
        hasher = hashlib.sha256()
        for path in sorted((out / stage).rglob("*")):
            if path.is_file():
                hasher.update(path.relative_to(out).as_posix().encode() + path.read_bytes())
        digests[stage] = hasher.hexdigest()
    return digests


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (by parent links in /proc), zombies excluded."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z":
                parents[int(entry)] = int(fields[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if state[state.rindex(")") + 2] != "Z":
            living.add(pid)
    return living


def trial(rng: random.Random, work: Path, env: dict, reference: dict[str, str]) -> dict:
    cache = Path(env["EDGEPIPE_CACHE"])
    if rng.random() < 0.25:
        shutil.rmtree(cache, ignore_errors=True)
        args = []
    else:
        start = rng.randrange(len(STAGES))  # rebuild a stage and everything after it
        args = [arg for stage in STAGES[start:] for arg in ("--force", stage)]
    name = rng.choice(list(SIGNALS))
    group = rng.random() < 0.5
    delay = rng.uniform(0.3, 8.0)
    out = work / "out"
    run = subprocess.Popen(
        command("run", str(work / "recipe.yaml"), "--out", str(out), "--no-lock", *args),
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    seen: set[int] = set()
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and run.poll() is None:
        seen |= descendants(run.pid)
        time.sleep(0.05)
    finished_first = run.poll() is not None
    if not finished_first:
        seen |= descendants(run.pid)
        (os.killpg if group else os.kill)(run.pid, SIGNALS[name])
    try:
        _, stderr = run.communicate(timeout=30)
        hung = False
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        _, stderr = run.communicate()
        hung = True
    expected = {"SIGKILL": -9, "SIGINT": 130, "SIGTERM": 143}[name]
    orphan_deadline = time.monotonic() + 5
    while alive(seen) and time.monotonic() < orphan_deadline:
        time.sleep(0.1)
    orphans = alive(seen)
    for pid in orphans:  # do not let one trial's leftovers disturb the next
        os.kill(pid, signal.SIGKILL)
    verify = subprocess.run(command("cache", "verify"), env=env, capture_output=True, text=True)
    rerun = subprocess.run(
        command("run", str(work / "recipe.yaml"), "--out", str(out), "--no-lock"),
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    tmp_left = len(os.listdir(cache / "tmp")) if (cache / "tmp").is_dir() else 0
    tmp_left += sum(".tmp-" in p.name or ".old-" in p.name for p in out.iterdir())
    return {
        "signal": name,
        "to": "group" if group else "main",
        "finished_first": finished_first,
        "bad_exit": not finished_first and run.returncode != expected,
        "traceback": "Traceback" in stderr,
        "hung": hung,
        "orphans": len(orphans),
        "corrupt": verify.returncode != 0,
        "failed_rerun": rerun.returncode != 0,
        "mismatch": rerun.returncode == 0 and outputs_digest(out) != reference,
        "tmp_left": tmp_left,
        "detail": (stderr if run.returncode != expected else "") + verify.stdout + rerun.stderr,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=60, help="kills that must land")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    rng = random.Random(options.seed)
    with tempfile.TemporaryDirectory(prefix="edgepipe-kills-") as scratch:
        work = Path(scratch)
        (work / "recipe.yaml").write_text(RECIPE)
        env = {**os.environ, "EDGEPIPE_CACHE": str(work / "cache"), "PYTHONPATH": str(REPO)}
        clean = subprocess.run(
            command("run", "recipe.yaml", "--out", str(work / "reference"), "--no-lock"),
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
        if clean.returncode != 0:
            sys.exit(f"the clean build failed:\n{clean.stderr}")
        reference = outputs_digest(work / "reference")
        results = []
        number = -1
        while sum(not r["finished_first"] for r in results) < options.kills:
            number += 1
            result = trial(rng, work, env, reference)
            results.append(result)
            flags = [
                k
                for k in ("bad_exit", "traceback", "hung", "corrupt", "failed_rerun", "mismatch")
                if result[k]
            ]
            flags += [f"{k}={result[k]}" for k in ("orphans", "tmp_left") if result[k]]
            state = "finished before the kill" if result["finished_first"] else "killed"
            print(
                f"{number + 1:3d} {result['signal']:<7} to {result['to']:<5} {state}: "
                f"{', '.join(flags) or 'ok'}",
                flush=True,
            )
            if flags:
                print("    " + result["detail"].strip().replace("\n", "\n    ")[-2000:])
    kills = [r for r in results if not r["finished_first"]]
    by_kind = Counter(f"{r['signal']} to {r['to']}" for r in kills)
    rows = [
        ["trials (kills landed)", f"{len(results)} ({len(kills)})"],
        ["kills by kind", ", ".join(f"{k}: {n}" for k, n in sorted(by_kind.items()))],
        ["wrong exit code", str(sum(r["bad_exit"] for r in results))],
        ["tracebacks", str(sum(r["traceback"] for r in results))],
        ["hangs (> 30 s after SIGINT/SIGTERM)", str(sum(r["hung"] for r in results))],
        ["orphans alive 5 s after the kill", str(sum(r["orphans"] for r in results))],
        ["corrupt caches (cache verify)", str(sum(r["corrupt"] for r in results))],
        ["failed reruns", str(sum(r["failed_rerun"] for r in results))],
        ["output digest mismatches", str(sum(r["mismatch"] for r in results))],
        ["tmp entries left after the rerun", str(sum(r["tmp_left"] for r in results))],
    ]
    print()
    print(table(["kill harness", "count"], rows))


if __name__ == "__main__":
    main()
