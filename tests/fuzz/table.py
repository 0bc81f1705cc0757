"""The README table of the fuzz results: `python -m tests.fuzz.table build/fuzz` prints it as markdown.

Each worker run (tests/fuzz/test_readers.py, `make fuzz`) leaves RESULT_DIR/<kind>.json; the CLI
sample leaves RESULT_DIR/cli-<kind>.json."""

import json
import sys
from pathlib import Path

# What each input kind is, and what reads it, in the order of the table.
KINDS = {
    "gguf": "GGUF model (`inspect`, `quantize`)",
    "imatrix-gguf": "imatrix, GGUF (`quantize --imatrix`)",
    "imatrix-dat": "imatrix, legacy .dat (`quantize --imatrix`)",
    "safetensors": "safetensors weights (`inspect`, `gguf`)",
    "safetensors-index": "sharded safetensors: index and shard (`gguf`)",
    "config.json": "config.json (`inspect`, `gguf`)",
    "tokenizer.json": "tokenizer.json (`gguf`, calibration's tokenizer)",
    "tokenizer_config.json": "tokenizer_config.json (`gguf`, calibration's tokenizer)",
    "calibration": "calibration file (`inspect`, `--calib`)",
    "tokenizer.model": "tokenizer.model, SentencePiece (`gguf`)",
    "gptq-checkpoint": "GPTQ checkpoint: quantization_config, packed tensors (`gguf`; `ppl` and `load` read them alike)",
    "awq-checkpoint": "AWQ checkpoint: quantization_config, packed tensors (`gguf`; `ppl` and `load` read them alike)",
    "recipe": "recipe TOML (`run`: the recipe and its plan)",
}


def table(results: Path) -> str:
    rows = ["| input | cases | clear error | valid output | other | CLI sample (exit 2 / 0 / other) |", "|---|---|---|---|---|---|"]
    totals = [0, 0, 0, 0]
    for kind, what in KINDS.items():
        path = results / f"{kind}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        cli = results / f"cli-{kind}.json"
        sample = "—"
        if cli.is_file():
            c = json.loads(cli.read_text())
            sample = f"{c['runs']} runs: {c['exit2']} / {c['exit0']} / {c['other']}"
        rows.append(f"| {what} | {r['cases']:,} | {r['error']:,} | {r['valid']:,} | {r['other']} | {sample} |")
        for i, key in enumerate(("cases", "error", "valid", "other")):
            totals[i] += r[key]
    rows.append(f"| all | {totals[0]:,} | {totals[1]:,} | {totals[2]:,} | {totals[3]} | |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(Path(sys.argv[1] if len(sys.argv) > 1 else "build/fuzz")))
