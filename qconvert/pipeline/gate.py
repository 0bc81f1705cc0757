"""The regression gate: a run's perplexities and KL divergences against expected values kept in
the repo, each allowed to move by a relative tolerance either way (a gain is a change too: record
it by rewriting the expected values with `qconvert report RUN_DIR --write-gate FILE`).

The gate file (TOML):
    [tolerance]          # relative, per metric
    ppl = 0.002
    kld = 0.05
    [expect.gguf-q4_k_m] # per artefact (a report row), the metrics to hold
    ppl = 278.8
    kld = 6.63e-4
"""

from pathlib import Path

from qconvert.errors import QConvertError
from qconvert.outputs import atomic_output
from qconvert.pipeline.recipe import tomllib

METRICS = {"ppl": "ppl", "kld": "kld"}  # gate key → report row key


def read_gate(path: Path) -> dict:
    try:
        gate = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QConvertError("no such gate file", path) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise QConvertError(f"not a readable TOML gate file: {exc}", path) from None
    tolerance, expect = gate.get("tolerance"), gate.setdefault("expect", {})
    if not isinstance(tolerance, dict) or not isinstance(expect, dict) or set(tolerance) - set(METRICS):
        raise QConvertError("needs a [tolerance] table (ppl, kld) and [expect.ARTEFACT] tables", path)
    return gate


def check_gate(report: dict, gate: dict) -> tuple[list[str], list[str]]:
    """(one line per check, the lines of the checks that failed)."""
    rows = {r["artefact"]: r for r in report["rows"]}
    if not gate["expect"]:
        return ["FAIL the gate expects nothing"], ["FAIL the gate expects nothing"]
    lines, failed = [], []
    for artefact, expected in gate["expect"].items():
        row = rows.get(artefact)
        for metric, want in expected.items():
            tolerance = gate["tolerance"].get(metric)
            got = None if row is None or tolerance is None else row.get(METRICS[metric])
            if got is None:
                line = f"FAIL {artefact} {metric}: not measured in this run (expected {want:.6g})"
            else:
                moved = (got - want) / want
                verdict = "ok  " if abs(moved) <= tolerance else "FAIL"
                line = f"{verdict} {artefact} {metric}: {got:.6g} against {want:.6g} ({moved:+.2%}, allowed ±{tolerance:.2%})"
            lines.append(line)
            if line.startswith("FAIL"):
                failed.append(line)
    return lines, failed


def write_gate(report: dict, path: Path) -> None:
    """The report's values as the gate file's new expected ones, keeping its tolerances and its
    leading comment (which says why they are what they are)."""
    path = Path(path)
    gate = read_gate(path)
    header = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    tolerance = gate["tolerance"]
    out = [*header, "[tolerance]"]
    out += [f"{metric} = {value!r}" for metric, value in tolerance.items()]
    for row in report["rows"]:
        values = [f"{metric} = {row[key]!r}" for metric, key in METRICS.items() if row.get(key) is not None]
        out += ["", f'[expect."{row["artefact"]}"]', *values]
    with atomic_output(path, force=True) as tmp:
        tmp.write_text("\n".join(out) + "\n")
