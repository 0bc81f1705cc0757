"""Runs one stage in its own process: `python -m qconvert.pipeline.worker SPEC.json`.

The spec holds the stage call (kind, options, input paths, output folder); the worker writes the
stage's result, with its peak memory, to the spec's `result` path. One process per stage gives each
stage its own peak RSS, and a stage killed with its runner leaves only its partial folder.
"""

import json
import resource
import sys
from pathlib import Path

from qconvert.errors import QConvertError, caused_by_interrupt


def peak_rss_mib() -> float:
    """The larger of this process's peak RSS and that of its largest finished child (llama.cpp tools)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # KiB on Linux


def main(spec_path: str) -> int:
    from qconvert.pipeline.stages import STAGE_KINDS, StageCall

    spec = json.loads(Path(spec_path).read_text())
    call = StageCall(spec["kind"], spec["options"], {k: Path(v) for k, v in spec["inputs"].items()}, Path(spec["out"]), spec["progress"])
    try:
        result = STAGE_KINDS[call.kind](call)
    except QConvertError as exc:
        try:  # for the runner's one error line
            Path(spec["error"]).write_text(str(exc))
        except OSError:  # a full disk: say it here instead
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except BaseException as exc:
        if caused_by_interrupt(exc):
            return 130
        raise
    Path(spec["result"]).write_text(json.dumps({"result": result, "peak_rss_mib": round(peak_rss_mib(), 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
