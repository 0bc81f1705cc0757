"""The run's report: one row per artefact with what its stages measured, as report.json,
report.md and report.png (KL divergence against size on disk), all in RUN_DIR; then every stage
with the node it ran on, its attempts, wall time, peak RSS and the memory it was estimated to need.

GGUF rows are measured by llama-perplexity with the f16 GGUF as the KLD base; HF rows (the model
itself, GPTQ, AWQ) by the torch method that matches it, with the original model as the base.
"""

import json
from pathlib import Path

from qconvert.errors import QConvertError
from qconvert.outputs import atomic_output
from qconvert.pipeline.plan import Stage
from qconvert.pipeline.recipe import Release

REPORT_JSON, REPORT_MD, REPORT_PNG = "report.json", "report.md", "report.png"
MIB = 1 << 20


def _row(name: str, artefact: dict | None, evaluation: dict, run_dir: Path) -> dict:
    from qconvert.pipeline.runner import stages_dir

    result = evaluation["result"]
    row = {"artefact": name, "engine": "llama.cpp" if name.startswith("gguf") else "torch"}
    if artefact is not None:
        row |= {
            "path": str(stages_dir(run_dir) / f"{artefact['name']}-{artefact['key']}" / artefact["result"]["artifact"]),
            "size_mib": round(artefact["result"]["size_bytes"] / MIB, 3),
            "bits_per_weight": round(artefact["result"]["bits_per_weight"], 3),
            "time_s": artefact["wall_s"],
            "peak_rss_mib": artefact["peak_rss_mib"],
        }
    row |= {"ppl": result["ppl"], "ppl_err": result["ppl_err"], "kld": result.get("kld_mean"), "same_top_p": result.get("same_top_p")}
    return row


def collect(release: Release, plan: list[Stage], run_dir: Path) -> dict:
    from qconvert.pipeline.runner import read_record
    from qconvert.pipeline.stages import bits_per_weight, size_on_disk

    by_name = {s.name: s for s in plan}
    records = {s.name: read_record(run_dir, s) for s in plan if s.kind != "source"}
    rows = []
    for stage in plan:
        if stage.kind != "eval":
            continue
        upstream = stage.inputs["model"]
        if by_name[upstream].kind == "source":  # the original checkpoint: "hf", or "LABEL/hf" in a matrix
            model = Path(by_name[upstream].options["path"])
            row = _row(upstream.removesuffix("model") + "hf", None, records[stage.name], run_dir)
            size = sum(size_on_disk(p) for p in model.glob("*.safetensors"))
            row |= {"path": str(model), "size_mib": round(size / MIB, 3), "bits_per_weight": round(bits_per_weight(model, model), 3)}
            rows.append(row)
        else:
            rows.append(_row(upstream, records[upstream], records[stage.name], run_dir))
    stages = [
        {"stage": name, "kind": r["kind"], "node": r.get("node"), "attempts": r.get("attempts", 1), "wall_s": r["wall_s"], "peak_rss_mib": r["peak_rss_mib"], "memory_estimate_mib": r.get("memory_estimate_mib")}
        for name, r in records.items()
    ]
    e = release.recipes[0].eval
    return {"recipe": str(release.path), "model": release.name, "eval": {"text": str(e.text), "ctx": e.ctx, "chunks": e.chunks}, "rows": rows, "stages": stages}


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def render_markdown(report: dict) -> str:
    e = report["eval"]
    lines = [
        f"# {report['model']}: release report",
        "",
        f"Recipe `{report['recipe']}`. Perplexity on `{Path(e['text']).name}` (ctx {e['ctx']}, {e['chunks'] or 'all'} chunks). "
        "KLD and same-top-p against the f16 GGUF for GGUF rows (llama-perplexity), against the original model for the others (torch).",
        "",
        "| artefact | engine | size MiB | bpw | ppl | ± | KLD | same top p | time s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        top = None if r["same_top_p"] is None else 100 * r["same_top_p"]
        cells = [r["artefact"], r["engine"], _fmt(r.get("size_mib"), ".2f"), _fmt(r.get("bits_per_weight"), ".2f"), _fmt(r["ppl"], ".4f"), _fmt(r["ppl_err"], ".4f"), _fmt(r["kld"], ".3e"), _fmt(top, ".2f") + ("%" if top is not None else ""), _fmt(r.get("time_s"), ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| stage | kind | node | attempts | wall s | peak RSS MiB | estimate MiB |", "|---|---|---|---|---|---|---|"]
    for s in report["stages"]:
        estimate = s.get("memory_estimate_mib")
        lines.append(f"| {s['stage']} | {s['kind']} | {s.get('node') or ''} | {s.get('attempts', 1)} | {s['wall_s']:.1f} | {s['peak_rss_mib']:.0f} | {'' if estimate is None else estimate} |")
    return "\n".join(lines) + "\n"


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for engine, marker in (("llama.cpp", "o"), ("torch", "s")):
        rows = [r for r in report["rows"] if r["engine"] == engine and r["kld"]]
        ax.scatter([r["size_mib"] for r in rows], [r["kld"] for r in rows], marker=marker, label=f"{'GGUF, vs f16 GGUF' if engine == 'llama.cpp' else 'HF, vs original'}")
        for r in rows:
            ax.annotate(r["artefact"], (r["size_mib"], r["kld"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("size on disk (MiB)")
    ax.set_ylabel("mean KL divergence")
    ax.set_yscale("log")
    ax.set_title(f"{report['model']}: KL divergence against size")
    ax.legend()
    fig.tight_layout()
    with atomic_output(path, force=True) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_report(release: Release, plan: list[Stage], run_dir: Path) -> dict:
    report = collect(release, plan, run_dir)
    with atomic_output(run_dir / REPORT_JSON, force=True) as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    with atomic_output(run_dir / REPORT_MD, force=True) as tmp:
        tmp.write_text(render_markdown(report))
    _plot(report, run_dir / REPORT_PNG)
    return report


def read_report(run_dir: Path) -> dict:
    path = Path(run_dir) / REPORT_JSON
    if not path.is_file():
        raise QConvertError("no report in this folder", run_dir, "give the RUN_DIR of a finished `qconvert run`")
    return json.loads(path.read_text())
