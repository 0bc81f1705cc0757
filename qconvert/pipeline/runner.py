"""`qconvert run`: a small loop over the plan's stages, each run by a worker process.

RUN_DIR/stages/<name>-<key>/ holds a finished stage: its outputs and stage.json (what ran, its
result, wall time and peak memory), written last, inside a partial folder that is renamed into place
only when complete. So a rerun reuses every finished stage, and a stage cut short (Ctrl-C, kill -9,
a crash) leaves only a partial folder, removed by the next run, which resumes there.
"""

import ctypes
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from qconvert import __version__
from qconvert.errors import QConvertError
from qconvert.pipeline.plan import Stage, build_plan
from qconvert.pipeline.recipe import Recipe

RECORD = "stage.json"
PARTIAL_PREFIX = ".partial-"


@dataclass(frozen=True)
class PlannedStage:
    stage: Stage
    action: str  # "source", "reuse" or "run"


def stages_dir(run_dir: Path) -> Path:
    return run_dir / "stages"


def read_record(run_dir: Path, stage: Stage) -> dict | None:
    path = stages_dir(run_dir) / stage.folder_name / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def plan_actions(plan: list[Stage], run_dir: Path, force: Iterable[str] = ()) -> list[PlannedStage]:
    """What each stage will do: forced stages (by name or kind) and everything downstream rerun."""
    force = set(force)
    known = {s.name for s in plan} | {s.kind for s in plan}
    for name in force - known:
        raise QConvertError(f"no stage named {name!r} in this recipe", "--force", f"stages: {', '.join(s.name for s in plan if s.kind != 'source')}")
    rerun: set[str] = set()
    actions = []
    for stage in plan:
        if stage.kind == "source":
            action = "source"
        elif stage.name in force or stage.kind in force or rerun & set(stage.inputs.values()) or read_record(run_dir, stage) is None:
            action = "run"
            rerun.add(stage.name)
        else:
            action = "reuse"
        actions.append(PlannedStage(stage, action))
    return actions


def _die_with_parent() -> None:
    """In the worker: SIGKILL when the runner dies, so kill -9 of a run stops its stage too."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextmanager
def _locked(run_dir: Path):
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = open(run_dir / ".lock", "w")
    except OSError as exc:
        raise QConvertError(f"cannot use it as the run folder: {exc.strerror or exc}", run_dir, "give another -o") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise QConvertError("another `qconvert run` is using this run folder", run_dir, "wait for it, or give another -o") from None
        yield


def _input_paths(stage: Stage, by_name: dict[str, Stage], run_dir: Path) -> dict[str, str]:
    paths = {}
    for role, name in stage.inputs.items():
        upstream = by_name[name]
        if upstream.kind == "source":
            paths[role] = upstream.options["path"]
        else:
            record = read_record(run_dir, upstream)
            paths[role] = str(stages_dir(run_dir) / upstream.folder_name / record["result"]["artifact"])
    return paths


def _run_stage(stage: Stage, inputs: dict[str, str], run_dir: Path, progress: bool) -> dict:
    final = stages_dir(run_dir) / stage.folder_name
    partial = stages_dir(run_dir) / f"{PARTIAL_PREFIX}{stage.folder_name}"
    shutil.rmtree(partial, ignore_errors=True)
    out = partial / "out"
    out.mkdir(parents=True)
    spec = {"kind": stage.kind, "options": stage.options, "inputs": inputs, "out": str(out), "progress": progress, "result": str(partial / "result.json")}
    (partial / "spec.json").write_text(json.dumps(spec, indent=1))
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "qconvert.pipeline.worker", str(partial / "spec.json")], preexec_fn=_die_with_parent)
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)  # it may not have had it: a signal to the runner's pid alone
        proc.wait()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if rc != 0:
        shutil.rmtree(partial, ignore_errors=True)
        if rc == 130 or rc == -signal.SIGINT:
            raise KeyboardInterrupt
        raise QConvertError(f"stage {stage.name} failed (exit code {rc})", run_dir, "see its error above; fix it and rerun: finished stages are kept")
    worker = json.loads((partial / "result.json").read_text())
    record = {
        "name": stage.name,
        "kind": stage.kind,
        "key": stage.key,
        "options": stage.options,
        "inputs": stage.inputs,
        "result": {**worker["result"], "artifact": f"out/{worker['result']['artifact']}"} if "artifact" in worker["result"] else worker["result"],
        "wall_s": round(time.monotonic() - start, 2),
        "peak_rss_mib": worker["peak_rss_mib"],
        "qconvert_version": __version__,
    }
    (partial / RECORD).write_text(json.dumps(record, indent=1))
    (partial / "result.json").unlink()
    if final.exists():  # --force: the old folder goes only once the new one is complete
        old = stages_dir(run_dir) / f"{PARTIAL_PREFIX}old-{stage.folder_name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        shutil.rmtree(old)
    os.replace(partial, final)
    return record


def run_recipe(recipe: Recipe, run_dir: Path, force: Iterable[str] = (), dry_run: bool = False, progress: bool = True, echo: Callable[[str], None] = print) -> list[PlannedStage]:
    plan = build_plan(recipe)
    actions = plan_actions(plan, run_dir, force)
    work = [a for a in actions if a.action != "source"]
    if dry_run:
        for a in work:
            echo(f"{a.action:5s}  {a.stage.name}  ({a.stage.kind}, {a.stage.folder_name})")
        echo(f"{sum(a.action == 'run' for a in work)} to run, {sum(a.action == 'reuse' for a in work)} to reuse")
        return actions
    from qconvert.pipeline.report import write_report

    by_name = {s.name: s for s in plan}
    with _locked(run_dir):
        stages_dir(run_dir).mkdir(exist_ok=True)
        for stale in stages_dir(run_dir).glob(f"{PARTIAL_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)  # cut short by an earlier run
        for i, a in enumerate(work, 1):
            head = f"[{i}/{len(work)}] {a.stage.name}"
            if a.action == "reuse":
                echo(f"{head}: reused")
                continue
            echo(f"{head}: running")
            record = _run_stage(a.stage, _input_paths(a.stage, by_name, run_dir), run_dir, progress)
            echo(f"{head}: done in {record['wall_s']:.1f} s, peak {record['peak_rss_mib']:.0f} MiB")
        write_report(recipe, plan, run_dir)
    return actions
