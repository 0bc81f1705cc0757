"""Calibration sets: text from many kinds of sources, tokenized into fixed-length samples for GPTQ, AWQ
and importance-weighted GGUF quantization, saved as a safetensors file with a manifest.

The modules, each with one job (this package imports nothing heavy; import from them):

- `types`: the plain data types (source specs, sampling options, the manifest) and their parsing;
  light, the CLI imports it when commands are defined
- `readers`: documents from local text, JSONL and chat files
- `datasets`: documents from parquet/JSON/Arrow files and dataset folders, through the `datasets`
  library, offline
- `build`: the default set, tokenizing, sampling and building a set
- `store`: the calibration file format and the tokenizer hash it is checked by

The API later stages call:

- `qconvert.calib.build.build_calibration(tokenizer, sources, options)` → `CalibrationSet` in memory
- `qconvert.calib.store.load_calibration(path, tokenizer)` → the same, from a file, refused if it was
  made with a different tokenizer
- `qconvert.calib.build.resolve_calibration(tokenizer, calib_input)` → either of the two, from the
  command-line options that `qconvert.cli_options.calibration_options` adds to a command
"""
