"""`qconvert run --executor ray`: the stages as tasks on a Ray cluster. Only this module imports Ray.

Each stage is one task that runs `execute_stage` — the same worker process, partial folder and
rename as the local executor — on the node Ray's scheduler picks, with the stage's resources
(qconvert.pipeline.resources): CPUs from its threads (0: as many as the smallest node has), a GPU
for `device = "cuda"`, and its memory estimate, so that a node is not packed beyond its memory.
Jobs hold paths and plain options; the artefacts stay in RUN_DIR, never in Ray's object store.

- Storage: RUN_DIR must be one folder that every node sees at the same path (NFS, a mounted
  bucket). Before any stage, a probe task on every node reads a file the driver wrote there and
  writes one back, which the driver must then see; a node that cannot is one error naming it.
- Faults: a stage whose worker is killed (a signal, Ray's OOM killer, a lost node) is retried by
  Ray, MAX_RETRIES times, each attempt in a partial folder of its own; the record counts the
  attempts and their nodes. A stage's own error is not retried. A killed driver leaves partial
  folders only: the rerun resumes from the finished stages, as with the local executor.
- Ctrl-C cancels the tasks in flight: each interrupts its worker, which removes its partial folder.
"""

import logging
import os
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from qconvert.errors import QConvertError
from qconvert.pipeline.executor import StageFailed, StageJob, StageOutcome, WorkerLost, execute_stage, read_attempts

MAX_RETRIES = 2  # attempts after the first, for a stage whose worker was killed
PROBE_TIMEOUT_S = 60
CANCEL_GRACE_S = 10  # for cancelled stages to stop their workers, before Ray kills them
LOCAL_OBJECT_STORE_BYTES = 80 << 20  # nothing large travels through it (Ray's minimum is 75 MiB)
STANDARD_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory", "node:", "accelerator_type:")
STORAGE_HINT = "RUN_DIR must be one folder that every node sees at the same path: NFS, a mounted bucket"


def node_name(node: dict) -> str:
    """IP/short id, and the node's own resource labels: `192.0.2.2/5c99d798 [gpu_box]`."""
    labels = sorted(k for k in node["Resources"] if not k.startswith(STANDARD_RESOURCES))
    return f"{node['NodeManagerAddress']}/{node['NodeID'][:8]}" + (f" [{', '.join(labels)}]" if labels else "")


@ray.remote
def _stage_task(job: StageJob, names: dict[str, str]) -> StageOutcome:
    node_id = ray.get_runtime_context().get_node_id()
    try:
        return StageOutcome(job.name, record=execute_stage(job, names.get(node_id, node_id[:8]), progress=False, log=True))
    except StageFailed as exc:
        return StageOutcome(job.name, error=str(exc))


@ray.remote(num_cpus=0, max_retries=0)
def _probe_task(run_dir: str, token: str, node_id: str) -> str | None:
    """On one node: None if it reads the driver's probe file in RUN_DIR and writes its own; else why not."""
    probe = Path(run_dir) / f".probe-{token}"
    try:
        seen = probe.read_text()
    except OSError as exc:
        return f"cannot read {probe.name}, which the driver wrote in {run_dir}: {exc.strerror or exc}"
    if seen != token:
        return f"reads another {probe.name} in {run_dir}: not the driver's folder"
    try:
        (Path(run_dir) / f".probe-{token}-{node_id}").write_text(node_id)
    except OSError as exc:
        return f"cannot write into {run_dir}: {exc.strerror or exc}"
    return None


@dataclass
class RayExecutor:
    run_dir: Path
    nodes: dict[str, dict]  # node id → ray.nodes() entry, the alive ones
    capacity: int | None = None
    _refs: dict = field(default_factory=dict)  # ObjectRef → StageJob

    @classmethod
    def start(cls, run_dir: Path, progress: bool, address: str | None) -> "RayExecutor":
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
        try:
            if address:
                ray.init(address=address, **quiet)
            else:  # "local": a new instance on this machine, whatever RAY_ADDRESS says
                ray.init(address="local", include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"--ray-address {address}" if address else "--executor ray"
            raise QConvertError(f"cannot start Ray: {str(exc).strip().splitlines()[0]}", where, "start a cluster with `ray start --head`, or leave --ray-address out for one on this machine") from None
        try:
            nodes = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
            executor = cls(Path(run_dir).absolute(), nodes)
            executor.probe_storage()
        except BaseException:
            ray.shutdown()
            raise
        return executor

    @property
    def names(self) -> dict[str, str]:
        return {node_id: node_name(node) for node_id, node in self.nodes.items()}

    def _most(self, resource: str) -> float:
        return max((n["Resources"].get(resource, 0) for n in self.nodes.values()), default=0)

    def probe_storage(self) -> None:
        """A task on every node reads the driver's file in RUN_DIR and writes one back, before any stage."""
        token = uuid.uuid4().hex
        probe = self.run_dir / f".probe-{token}"
        probe.write_text(token)
        try:
            refs = {
                node_id: _probe_task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(str(self.run_dir), token, node_id)
                for node_id in self.nodes
            }
            ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
            for node_id, ref in refs.items():
                if ref not in ready:
                    problem = f"did not answer the storage probe in {PROBE_TIMEOUT_S} s"
                else:
                    problem = ray.get(ref)
                    if problem is None and not (self.run_dir / f".probe-{token}-{node_id}").is_file():
                        problem = f"writes into a {self.run_dir} that the driver does not see"
                if problem is not None:
                    if ref not in ready:
                        ray.cancel(ref, force=True)
                    raise QConvertError(f"node {node_name(self.nodes[node_id])} {problem}", self.run_dir, STORAGE_HINT)
        finally:
            for path in [probe, *self.run_dir.glob(f".probe-{token}-*")]:
                path.unlink(missing_ok=True)

    def submit(self, job: StageJob) -> None:
        r = job.resources
        cpus = r.cpus or int(min(n["Resources"].get("CPU", 0) for n in self.nodes.values()) or 1)
        for need, resource, what in ((cpus, "CPU", f"{cpus} CPUs (threads)"), (r.gpus, "GPU", "a GPU (run.device = cuda)")):
            if need > self._most(resource):
                raise QConvertError(f"stage {job.name} needs {what}; the largest node of the cluster has {self._most(resource):g}", "--executor ray", "add such a node, or lower the recipe's threads / device")
        memory = int(min(r.memory_bytes, self._most("memory")))  # an estimate above every node: a node to itself
        options = {"num_cpus": cpus, "num_gpus": r.gpus, "memory": memory, "max_retries": MAX_RETRIES, "retry_exceptions": [WorkerLost]}
        self._refs[_stage_task.options(**options).remote(replace(job, threads=cpus), self.names)] = job

    def running(self) -> dict[str, str]:
        running = {}
        for job in self._refs.values():
            attempts = read_attempts(self.run_dir, job.folder)
            if attempts:
                running[job.name] = attempts[-1]["node"]
        return running

    def wait(self, timeout: float) -> list[StageOutcome]:
        if not self._refs:
            return []
        ready, _ = ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
        outcomes = []
        for ref in ready:
            job = self._refs.pop(ref)
            try:
                outcomes.append(ray.get(ref))
            except ray.exceptions.RayError as exc:  # the last attempt's worker was lost too
                cause = getattr(exc, "cause", None) or exc
                first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
                outcomes.append(StageOutcome(job.name, error=f"stage {job.name} failed in {MAX_RETRIES + 1} attempts: {first}"))
        return outcomes

    def cancel(self) -> None:
        refs = list(self._refs)
        for ref in refs:
            ray.cancel(ref)  # a KeyboardInterrupt in the task: it interrupts its worker and removes its partial folder
        _, left = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S) if refs else ([], [])
        for ref in left:
            ray.cancel(ref, force=True)  # kills the Ray worker; the stage's worker dies with it
        self._refs.clear()

    def close(self) -> None:
        ray.shutdown()
