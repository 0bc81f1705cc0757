"""`qconvert run`: the plan's stages, each handed to an executor once its inputs are finished.

RUN_DIR/stages/<name>-<key>/ holds a finished stage: its outputs and stage.json (what ran, its
result, wall time, peak memory, node and attempts), written last, inside a partial folder that is
renamed into place only when complete. So a rerun reuses every finished stage, and a stage cut
short (Ctrl-C, kill -9, a crash, a lost node) leaves only a partial folder, removed by the next run,
which resumes there.

The loop is the same for every executor (qconvert.pipeline.executor): it submits each stage whose
inputs are finished, as many at once as the executor takes, and records what ends. A failed stage
stops new stages from starting; those already running finish and are kept.
"""

import fcntl
import json
import shutil
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from qconvert.errors import QConvertError
from qconvert.pipeline.executor import PARTIAL_PREFIX, RECORD, Executor, LocalExecutor, StageJob, partial_folders, stages_dir
from qconvert.pipeline.plan import Stage, build_plan
from qconvert.pipeline.recipe import Release
from qconvert.pipeline.resources import ModelSize, stage_resources

EXECUTORS = ("local", "ray")
__all__ = ["PARTIAL_PREFIX", "RECORD", "EXECUTORS", "PlannedStage", "plan_actions", "read_record", "run_recipe", "stages_dir"]


@dataclass(frozen=True)
class PlannedStage:
    stage: Stage
    action: str  # "source", "reuse" or "run"


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


def executor_class(kind: str) -> type:
    """The executor's class; for Ray, one clear error where it is not installed."""
    if kind == "local":
        return LocalExecutor
    try:
        from qconvert.pipeline.ray_executor import RayExecutor
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "ray":
            raise
        raise QConvertError("Ray is not installed", "--executor ray", "install it with: pip install 'qconvert[ray]'") from None
    return RayExecutor


def _job(stage: Stage, by_name: dict[str, Stage], run_dir: Path, sizes: dict[Path, ModelSize]) -> StageJob:
    paths = _input_paths(stage, by_name, run_dir)
    resources = stage_resources(stage, by_name, sizes)
    return StageJob(stage.name, stage.kind, stage.key, stage.options, dict(stage.inputs), paths, str(run_dir.absolute()), stage.folder_name, resources)


def _run_stages(work: list[PlannedStage], by_name: dict[str, Stage], run_dir: Path, executor: Executor, echo: Callable[[str], None]) -> None:
    index = {a.stage.name: f"[{i}/{len(work)}] {a.stage.name}" for i, a in enumerate(work, 1)}
    finished = {name for name, s in by_name.items() if s.kind == "source"}
    queued: list[Stage] = []
    for a in work:
        if a.action == "reuse":
            echo(f"{index[a.stage.name]}: reused")
            finished.add(a.stage.name)
        else:
            queued.append(a.stage)
    in_flight: set[str] = set()
    started: set[str] = set()
    failures: list[str] = []
    sizes: dict[Path, ModelSize] = {}
    shown = ""
    try:
        while queued or in_flight:
            ready = [s for s in queued if set(s.inputs.values()) <= finished] if not failures else []  # a failure: no new stages
            room = len(ready) if executor.capacity is None else executor.capacity - len(in_flight)
            for stage in ready[:room]:
                executor.submit(_job(stage, by_name, run_dir, sizes))
                in_flight.add(stage.name)
                queued.remove(stage)
            if not in_flight:
                break  # after a failure: what is queued waits for the next run
            running = executor.running()
            for name in sorted(running.keys() - started, key=list(index).index):
                echo(f"{index[name]}: running")
                started.add(name)
            if executor.capacity != 1:  # one stage at a time: its "running" line says it all
                done = sum(a.stage.name in finished for a in work)
                line = progress_line(done, len(work), running, len(queued) + len(in_flight) - len(running))
                if line != shown:
                    echo(line)
                    shown = line
            for outcome in executor.wait(timeout=1.0):
                in_flight.discard(outcome.name)
                if outcome.error is not None:
                    failures.append(outcome.error)
                    echo(f"{index[outcome.name]}: failed")
                    continue
                finished.add(outcome.name)
                r = outcome.record
                line = f"{index[outcome.name]}: done in {r['wall_s']:.1f} s, peak {r['peak_rss_mib']:.0f} MiB"
                if executor.capacity != 1:
                    line += f" on {r['node']}" + (f", attempt {r['attempts']}" if r["attempts"] > 1 else "")
                echo(line)
    except BaseException:
        executor.cancel()
        raise
    if failures:
        more = f"; {len(failures) - 1} more stage(s) failed" if len(failures) > 1 else ""
        raise QConvertError(failures[0] + more, run_dir, "fix it and rerun: finished stages are kept")


def progress_line(done: int, total: int, running: dict[str, str], queued: int) -> str:
    on = ", ".join(f"{name} on {node}" for name, node in running.items())
    return f"progress: {done}/{total} done, {len(running)} running" + (f" ({on})" if on else "") + f", {queued} queued"


def _remove_partials(run_dir: Path) -> None:
    for stale in partial_folders(run_dir):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def run_recipe(release: Release, run_dir: Path, force: Iterable[str] = (), dry_run: bool = False, progress: bool = True, echo: Callable[[str], None] = print, executor: str = "local", ray_address: str | None = None) -> list[PlannedStage]:
    plan = build_plan(release)
    actions = plan_actions(plan, run_dir, force)
    work = [a for a in actions if a.action != "source"]
    if dry_run:
        for a in work:
            echo(f"{a.action:5s}  {a.stage.name}  ({a.stage.kind}, {a.stage.folder_name})")
        echo(f"{sum(a.action == 'run' for a in work)} to run, {sum(a.action == 'reuse' for a in work)} to reuse")
        return actions
    from qconvert.pipeline.report import write_report

    make_executor = executor_class(executor)  # before any work: Ray missing is one error
    if executor != "local":
        run_dir = run_dir.absolute()  # the paths in jobs are read on other machines, from other working folders
    by_name = {s.name: s for s in plan}
    with _locked(run_dir):
        runner = make_executor.start(run_dir, progress, ray_address)  # Ray: connected, RUN_DIR probed on every node
        try:
            stages_dir(run_dir).mkdir(exist_ok=True)
            _remove_partials(run_dir)  # cut short by an earlier run
            _run_stages(work, by_name, run_dir, runner, echo)
        except KeyboardInterrupt:
            _remove_partials(run_dir)  # what the cancelled stages left
            raise
        finally:
            runner.close()
        write_report(release, plan, run_dir)
    return actions
