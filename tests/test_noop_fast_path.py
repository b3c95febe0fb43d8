"""The no-op fast path (edgepipe/noop_run.py) serves a fully cached run only while the record
proves it, and declines for every change the full path notices.

One cold build of a tiny recipe (an ONNX file, a key file, quantized with a folder of
calibration photos, a key folder) is shared; each test works on a copy of it. Full runs are
in-process (the record then carries this process's interpreter and environment); edgepipe's own
files, the Python path and the tools' metadata are replaced by small fakes that a test may edit
(the real ones are checked by test_the_environment_covers_edgepipe_the_path_and_the_tools and
the console-script test). The racy window is 0 except where a test is about it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgepipe import noop_record, noop_run
from edgepipe.tmp_names import host_id

RECIPE = """\
version: 1
name: noop-fast-path
stages:
  model:
    type: load
    source: onnx
    path: tiny.onnx
    data_config: {input_size: [3, 16, 16]}
  int8:
    type: quantize
    input: model
    calibration: {images: calib, count: 2}
"""
TOOLS = ("numpy", "onnx", "onnxruntime", "pillow", "timm", "torch")


def _tiny_onnx(path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((4, 5)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 5])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _photo(path: Path, seed: int) -> None:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


class Workspace:
    def __init__(self, root: Path):
        self.root, self.recipe = root, root / "recipe.yaml"
        self.cache, self.out = root / "cache", root / "out"

    def argv(self, *extra: str) -> list[str]:
        return ["run", str(self.recipe), "--cache", str(self.cache), "--out", str(self.out),
                "--in-process", *extra]  # fmt: skip

    def full(self, *extra: str, argv: list[str] | None = None) -> str:
        """The full path, in-process; what it printed on stderr."""
        from rich.console import Console

        import edgepipe.cli

        console = Console(file=io.StringIO(), highlight=False)  # as cli_common.err, in memory
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(edgepipe.cli, "err", console)
            edgepipe.cli.app(argv or self.argv(*extra), standalone_mode=False)
        return console.file.getvalue()

    def fast(self, *extra: str, argv: list[str] | None = None) -> tuple[str | None, str]:
        return noop_run.attempt(argv or self.argv(*extra), os.environ, os.getcwd())

    def record(self) -> Path:
        """Where the record of ``self.argv()`` lives."""
        invoked = noop_run.invocation(
            self.recipe, str(self.cache), os.getcwd(), out=self.out, in_process=True
        )
        return Path(noop_run.record_path(invoked))

    def declines(self, *extra: str, argv: list[str] | None = None) -> str:
        text, why = self.fast(*extra, argv=argv)
        assert text is None, "the fast path served a run the full path would not call cached"
        return why


def _quiet_env(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "EDGEPIPE_REMOTE_OPTIONS", noop_run.DISABLE_VAR):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("noop")
    (root / "recipe.yaml").write_text(RECIPE)
    _tiny_onnx(root / "tiny.onnx")
    (root / "calib").mkdir()
    for seed in range(2):
        _photo(root / "calib" / f"p{seed}.png", seed)
    with pytest.MonkeyPatch.context() as patch:
        _quiet_env(patch)
        printed = Workspace(root).full()
    assert "2 built" in printed, printed
    return root


@pytest.fixture
def fakes(tmp_path, monkeypatch) -> SimpleNamespace:
    """edgepipe's package folder, the Python path and the tools' dist-info, as small fakes."""
    package, site = tmp_path / "pkg", tmp_path / "site"
    (package / "stages").mkdir(parents=True)
    (package / "runner.py").write_text("VERSION = 1\n")
    (package / "stages" / "load.py").write_text("VERSION = 1\n")
    site.mkdir()
    (site / "editable.pth").write_text("/somewhere\n")
    for name in TOOLS:
        (site / f"{name}-1.0.dist-info").mkdir()
        (site / f"{name}-1.0.dist-info" / "METADATA").write_text(f"Name: {name}\nVersion: 1.0\n")
    monkeypatch.setattr(noop_run, "PACKAGE_DIR", str(package))
    monkeypatch.setattr(noop_run, "SYS_PATH", (str(site),))
    monkeypatch.setattr(noop_run, "PATH_LISTINGS", {str(site): noop_run.listing_signature(site)})
    monkeypatch.setattr(noop_record, "dist_info_folder", lambda n: str(site / f"{n}-1.0.dist-info"))
    monkeypatch.setattr(noop_run, "RACY_NS", 0)
    monkeypatch.setattr(noop_run, "STARTED_NS", time.time_ns())
    return SimpleNamespace(package=package, site=site)


@pytest.fixture
def ws(base, tmp_path, fakes, monkeypatch) -> Workspace:
    """A copy of the built workspace whose record the fixture just wrote (fast path valid)."""
    _quiet_env(monkeypatch)
    shutil.copytree(base, tmp_path / "ws", symlinks=True)
    workspace = Workspace(tmp_path / "ws")
    workspace.printed = workspace.full()
    assert "0 built, 2 cached" in workspace.printed
    text, why = workspace.fast()
    assert text is not None, f"no valid record after a fully cached run: {why}"
    return workspace


def _rewrite(path: Path, data: bytes) -> None:
    os.chmod(path, 0o644)
    path.write_bytes(data)


@contextlib.contextmanager
def _folder_times_kept(folder: Path):
    """Put the folder's mtime back afterwards: only what is inside it tells the change."""
    before = folder.stat()
    yield
    os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))


# --- what the fast path serves -----------------------------------------------------------------


def test_an_unchanged_rerun_prints_exactly_what_the_full_path_prints(ws):
    text, why = ws.fast()
    assert why == "served"
    assert text == ws.printed  # byte for byte: 2 "cached" lines and the done line
    assert ws.full() == ws.printed  # and the full path agrees that all is cached
    assert ws.fast()[0] == text


def test_a_served_run_marks_its_action_records_used_as_the_full_path_does(ws):
    actions = sorted((ws.cache / "ac").rglob("*.json"))
    assert len(actions) == 2
    for action in actions:
        os.utime(action, (1, 1))
    assert ws.fast()[0] is not None
    assert all(a.stat().st_mtime > time.time() - 60 for a in actions)  # gc's last use


def test_a_run_that_built_leaves_a_record_too(ws):
    ws.record().unlink()
    (ws.root / "calib" / "p2.png").write_bytes((ws.root / "calib" / "p0.png").read_bytes())
    printed = ws.full()
    assert "1 built, 1 cached" in printed  # int8's calibration folder changed
    assert ws.fast()[0] == ws.full()  # the text of a fully cached rerun, not of this run


def test_the_console_script_takes_the_fast_path_before_importing_typer(base):
    """The real thing: real environment, real package files; bytes compared with the full
    path (EDGEPIPE_NO_FAST_PATH=1) on the same invocation."""
    script = Path(sys.executable).parent / "edgepipe"
    if not script.exists():
        pytest.skip("the edgepipe console script is not installed")
    unset = ("FORCE_COLOR", "TTY_COMPATIBLE", noop_run.DISABLE_VAR)
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(COLUMNS="100", EDGEPIPE_CACHE=str(base / "cache"))
    argv = ["run", "recipe.yaml", "--out", "console-out"]

    def run(*flags: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *flags, str(script), *argv], cwd=base,
                              env={**env, **extra}, capture_output=True, check=True)  # fmt: skip

    run(EDGEPIPE_NO_FAST_PATH="1")  # creates console-out/ in the recipe's folder: no record
    # Another xdist worker may touch what the record watches (a __pycache__ created in the
    # package, a file within 2 s of the run's start): then no record, and one more try.
    for _ in range(3):
        full = run(EDGEPIPE_NO_FAST_PATH="1")  # the full path; it writes the record
        fast = run("-X", "importtime")
        imports = [ln for ln in fast.stderr.decode().splitlines() if ln.startswith("import time:")]
        if not [ln for ln in imports if re.search(r"\b(typer|rich|pydantic|yaml)\b", ln)]:
            break
        time.sleep(2.1)  # past the record's 2 s window for recently changed inputs
    printed = "".join(
        ln for ln in fast.stderr.decode().splitlines(keepends=True) if not ln.startswith("import")
    )
    assert not [ln for ln in imports if re.search(r"\b(typer|rich|pydantic|yaml)\b", ln)], (
        "the fast path was not taken (a package file changed less than 2 s before? rerun)"
    )
    assert printed.encode() == full.stderr == run(EDGEPIPE_NO_FAST_PATH="1").stderr
    assert fast.stdout == full.stdout == b""


# --- what makes it decline ----------------------------------------------------------------------


def test_an_edited_recipe(ws):
    with ws.recipe.open("a") as recipe:
        recipe.write("# a comment: the keys are the same, the recipe is not\n")
    assert "recipe.yaml" in ws.declines()
    assert "0 built, 2 cached" in ws.full()  # the full path's usual thing
    assert ws.fast()[0] is not None


def test_a_recipe_edited_in_place_with_its_mtime_put_back(ws):
    before = ws.recipe.stat()
    ws.recipe.write_text(ws.recipe.read_text().replace("count: 2", "count: 3"))
    os.utime(ws.recipe, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert ws.recipe.stat().st_size == before.st_size
    assert "recipe.yaml" in ws.declines()  # the full path reads the recipe whatever its stat


def test_a_touched_or_edited_key_file(ws):
    onnx_file = ws.root / "tiny.onnx"
    os.utime(onnx_file)
    assert "tiny.onnx" in ws.declines()
    ws.full()
    _rewrite(onnx_file, onnx_file.read_bytes()[:-1] + b"\0")
    assert "tiny.onnx" in ws.declines()


def test_a_file_edited_added_or_removed_in_a_key_folder(ws):
    photo = ws.root / "calib" / "p0.png"
    _rewrite(photo, photo.read_bytes() + b"\0")
    assert "p0.png" in ws.declines()
    ws.full()
    _photo(ws.root / "calib" / "new.png", 7)
    ws.declines()
    ws.full()
    (ws.root / "calib" / "sub").mkdir()
    ws.full()
    _photo(ws.root / "calib" / "sub" / "deeper.png", 8)
    ws.declines()
    ws.full()
    (ws.root / "calib" / "new.png").unlink()
    ws.declines()


def test_an_edited_or_added_edgepipe_file(ws, fakes):
    with (fakes.package / "stages" / "load.py").open("a") as source:
        source.write("VERSION = 2\n")
    assert "load.py" in ws.declines()
    ws.full()
    (fakes.package / "stages" / "new_stage.py").write_text("")
    assert "stages" in ws.declines()


def test_an_installed_upgraded_or_removed_package(ws, fakes):
    (fakes.site / "onnx-1.0.dist-info" / "METADATA").write_text("Name: onnx\nVersion: 9.9\n")
    assert "METADATA" in ws.declines()
    ws.full()
    (fakes.site / "newpkg").mkdir()  # pip install: a new folder on the Python path
    assert "site" in ws.declines()
    ws.full()
    (fakes.site / "editable.pth").write_text("/elsewhere\n")
    assert "editable.pth" in ws.declines()


def test_a_deleted_edited_or_extra_output_file(ws):
    output = ws.out / "int8" / "model.onnx"
    with _folder_times_kept(output.parent):
        output.unlink()
    assert "model.onnx" in ws.declines()
    ws.full()  # the full path puts it back
    assert output.is_file() and ws.fast()[0] is not None
    _rewrite(output, output.read_bytes() + b"\0")  # a hard link: the object changes too
    assert "model.onnx" in ws.declines()
    ws.full()
    with _folder_times_kept(ws.out / "model"):
        (ws.out / "model" / "notes.txt").write_text("mine")  # the full path removes it
    assert "listings" in ws.declines()
    ws.full()
    assert not (ws.out / "model" / "notes.txt").exists()


def test_an_output_replaced_by_a_link_to_the_same_bytes(ws):
    output = ws.out / "model" / "model.onnx"
    obj = next(p for p in (ws.cache / "cas").rglob("*") if p.samefile(output))
    with _folder_times_kept(output.parent):
        output.unlink()
        output.symlink_to(obj)
    assert "model.onnx" in ws.declines()  # the full path would put a hard link back


def test_a_corrupt_or_missing_object_or_manifest(ws):
    record = json.loads(ws.record().read_text())
    objects = [p for p, _ in record["outputs"] if "/cas/" in p]
    manifests = [p for p, _ in record["contents"] if "/cas/" in p]
    assert objects and manifests
    victim = Path(objects[0])
    # replaced, not edited in place: the output's hard link keeps the old bytes, so only the
    # object itself has moved
    (victim.parent / "bad").write_bytes(b"\0" * victim.stat().st_size)
    os.replace(victim.parent / "bad", victim)
    assert victim.name in ws.declines()
    ws.full()  # re-hashes it, finds it corrupt, rebuilds its stage
    assert ws.fast()[0] is not None
    victim.unlink()  # the output still holds the bytes through its link
    assert victim.name in ws.declines()
    ws.full()
    ws.full()
    manifest = Path(manifests[0])
    _rewrite(manifest, manifest.read_bytes().replace(b"entries", b"entrieZ"))
    assert manifest.name in ws.declines()


def test_a_deleted_or_edited_action_record(ws):
    actions = sorted((ws.cache / "ac").rglob("*.json"))
    actions[0].unlink()
    assert actions[0].name in ws.declines()
    ws.full()
    actions = sorted((ws.cache / "ac").rglob("*.json"))
    data = json.loads(actions[0].read_text())
    data["log"] += " "
    actions[0].write_text(json.dumps(data))
    ws.declines()


def test_another_out_only_until_force_cache_or_flag(ws):
    assert ws.declines("--force", "int8") == "--force"
    ws.declines(argv=ws.argv()[:-1])  # without --in-process
    ws.declines("--only", "int8")
    ws.declines("--until", "model")
    ws.declines("--no-lock")
    ws.declines("--jobs", "2")
    other = ws.argv()
    other[other.index("--out") + 1] = str(ws.root / "elsewhere")
    ws.declines(argv=other)
    shutil.copytree(ws.cache, ws.root / "cache2", symlinks=True)
    other = ws.argv()
    other[other.index("--cache") + 1] = str(ws.root / "cache2")
    ws.declines(argv=other)


def test_a_changed_environment_variable(ws, monkeypatch):
    monkeypatch.setenv("EDGEPIPE_REMOTE_OPTIONS", '{"endpoint_url": "http://minio:9000"}')
    assert ws.declines() == "another environment or interpreter"
    monkeypatch.delenv("EDGEPIPE_REMOTE_OPTIONS")
    monkeypatch.setenv("OLDPWD", "/tmp")  # volatile shell bookkeeping does not count
    assert ws.fast()[0] is not None


def test_an_index_document_another_run_rewrote(ws):
    index = ws.cache / "index" / "noop-fast-path" / "int8.json"
    index.write_text(index.read_text())  # what a run of another recipe of that name does
    assert "int8.json" in ws.declines()


def test_a_missing_or_edited_lockfile(ws):
    lock = ws.recipe.with_suffix(".lock")
    text = lock.read_text()
    lock.unlink()
    assert "recipe.lock" in ws.declines()
    ws.full()  # writes it again; a run that adds to the recipe's folder leaves no record
    assert lock.read_text() == text
    ws.full()
    lock.write_text(text.replace("int8", "int9"))
    assert "recipe.lock" in ws.declines()


def test_check_is_its_own_invocation_and_rereads_the_lockfile(ws):
    ws.declines("--check")
    ws.full("--check")
    assert ws.fast("--check")[0] is not None
    lock = ws.recipe.with_suffix(".lock")
    lock.write_text(lock.read_text() + "# edited\n")
    ws.declines("--check")


def test_a_partial_run_watches_the_lockfile_it_reads(ws):
    lock = ws.recipe.with_suffix(".lock")
    ws.full("--only", "model")
    assert ws.fast("--only", "model")[0] is not None
    lock.write_text(lock.read_text() + "# edited\n")
    ws.declines("--only", "model")
    ws.full("--only", "model")
    lock.unlink()
    assert "recipe.lock" in ws.declines("--only", "model")


def test_another_console_width_or_colours(ws, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    ws.declines()
    ws.full()
    assert ws.fast()[0] is not None
    with monkeypatch.context() as patch:
        patch.setattr(noop_run, "console_width", lambda environ, fd=2: 61)
        assert ws.declines() == "another console width"
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich styles a file: so does the fast path
    ws.declines()
    coloured = ws.full()
    assert "\x1b[" in coloured and ws.fast()[0] == coloured
    record = json.loads(ws.record().read_text())
    record["terminal_text"] = None  # a record made in a file: no styles to print
    body = {k: v for k, v in record.items() if k != "seal"}
    ws.record().write_text(json.dumps(noop_run.sealed(body)))
    assert ws.declines() == "colour forced into a file"


def test_what_a_killed_run_left_behind(ws):
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    name = f"tmp-{dead.pid}@{host_id()}-{'0' * 16}"
    (ws.out / f"int8.{name}").mkdir()
    assert "killed run" in ws.declines()
    ws.full()  # reclaims it
    assert not (ws.out / f"int8.{name}").exists() and ws.fast()[0] is not None
    (ws.cache / "tmp" / f"work-{dead.pid}@{host_id()}-{'1' * 16}").mkdir()
    assert "killed run" in ws.declines()


def test_a_damaged_record_or_the_escape_hatch(ws, monkeypatch):
    monkeypatch.setenv(noop_run.DISABLE_VAR, "1")
    assert ws.declines() == f"{noop_run.DISABLE_VAR} is set"
    monkeypatch.delenv(noop_run.DISABLE_VAR)
    path = ws.record()
    record = json.loads(path.read_text())
    record["outputs"] = []  # a record that would trust everything, but its seal is broken
    path.write_text(json.dumps(record))
    assert ws.declines() == "damaged record"
    path.write_text(path.read_text()[:100])
    assert ws.declines() == "no record"


def test_no_record_when_a_stage_is_keyed_by_the_machine(ws, monkeypatch):
    from edgepipe.stages.quantize.stage import QuantizeStage

    monkeypatch.setattr(QuantizeStage, "key_extra", lambda self, spec: {"machine": {"cpu": "x"}})
    ws.record().unlink()
    assert "1 built" in ws.full()  # a new key: int8 rebuilt
    assert not ws.record().exists()
    ws.declines()


def test_no_record_when_an_input_changed_just_before_or_during_the_run(ws, fakes, monkeypatch):
    monkeypatch.setattr(noop_run, "RACY_NS", 2_000_000_000)
    with ws.recipe.open("a") as recipe:
        recipe.write("# just edited\n")
    ws.record().unlink()
    ws.full()
    assert not ws.record().exists()  # it may change again within the timestamps' tick

    monkeypatch.setattr(noop_run, "RACY_NS", 0)
    from edgepipe.runner import Runner

    real_run = Runner.run

    def run_and_edit(self, selected):  # a calibration photo goes while the stages are looked up
        (ws.root / "calib" / "p1.png").unlink()
        return real_run(self, selected)

    monkeypatch.setattr(Runner, "run", run_and_edit)
    ws.full()
    assert not ws.record().exists()

    def run_and_add(self, selected):  # a module could appear beside the recipe meanwhile
        (ws.root / "mymodel.py").write_text("")
        return real_run(self, selected)

    monkeypatch.setattr(Runner, "run", run_and_add)
    ws.full()
    assert not ws.record().exists()

    def run_and_install(self, selected):  # a package installed while edgepipe runs
        (fakes.site / "justinstalled").mkdir()
        return real_run(self, selected)

    monkeypatch.setattr(Runner, "run", run_and_install)
    ws.full()
    assert not ws.record().exists()


# --- the parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "r.yaml"], {}),
        (["run", "--only", "a", "r.yaml", "--only=b", "-j2"], {"only": ["a", "b"], "jobs": "2"}),
        (["run", "r.yaml", "-j", "3", "--no-lock", "--check"], {"jobs": "3", "lock": False,
                                                                 "check": True}),
        (["run", "r.yaml", "--jobs=4", "--in-process"], {"jobs": "4", "in_process": True}),
    ],
)  # fmt: skip
def test_parse_run_reads_what_typer_reads(argv, expected):
    assert noop_run.parse_run(argv) == ("r.yaml", expected)


@pytest.mark.parametrize(
    "argv",
    [
        ["plan", "r.yaml"], ["run"], ["run", "a.yaml", "b.yaml"], ["run", "r.yaml", "--help"],
        ["run", "r.yaml", "-j=2"], ["run", "r.yaml", "-j", "0"], ["run", "r.yaml", "--jobs", "x"],
        ["run", "r.yaml", "--out", "a", "--out", "b"], ["run", "r.yaml", "--lock", "--no-lock"],
        ["run", "r.yaml", "--check=1"], ["run", "r.yaml", "--out"], ["run", "--", "r.yaml"],
        ["run", "r.yaml", "--remote", "-x"], ["run", "r.yaml", "--verbose"],
    ],
)  # fmt: skip
def test_parse_run_declines_anything_else(argv):
    assert noop_run.parse_run(argv) is None


def test_tmp_names_and_host_id_match_the_cache_layout():
    from edgepipe.cache import _layout

    assert noop_run.abandoned is _layout.abandoned  # one judge of leftovers for both paths
    assert host_id() == _layout.host_id()
    assert _layout.owner_pid(_layout.tmp_name("work")) == os.getpid()


def test_the_environment_covers_edgepipe_the_path_and_the_tools():
    plans = [SimpleNamespace(key_document={"tools": {"onnx": "1", "missing-tool": None}})]
    files, folders, path_folders = noop_record._environment(plans)
    files, folders = {p for p, _ in files}, {p for p, _ in folders}
    package = Path(noop_run.__file__).parent
    every_source = {str(p) for p in package.rglob("*.py") if "__pycache__" not in p.parts}
    assert every_source <= files
    assert {str(package), str(package / "stages"), str(package / "cache")} <= folders
    site = next(p for p in sys.path if p.endswith("site-packages"))
    assert site in path_folders
    assert {str(p) for p in Path(site).glob("*.pth")} <= files
    onnx_metadata = [p for p in files if re.search(r"/onnx-[^/]+\.dist-info/METADATA$", p)]
    assert onnx_metadata and Path(onnx_metadata[0]).parent.as_posix() in folders


def test_console_width_follows_rich(monkeypatch):
    from rich.console import Console

    monkeypatch.delenv("COLUMNS", raising=False)
    with open(os.devnull, "w") as sink:
        assert noop_run.console_width(os.environ, sink.fileno()) == Console(file=sink).width
    monkeypatch.setenv("COLUMNS", "123")
    assert noop_run.console_width(os.environ) == Console(file=io.StringIO()).width == 123
