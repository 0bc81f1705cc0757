"""Calibration sets: text from many kinds of sources, tokenized into fixed-length samples for GPTQ, AWQ
and importance-weighted GGUF quantization, saved as a safetensors file with a manifest.

The API later stages call (import from the submodules; this package imports nothing heavy):

- `qconvert.calib.build.build_calibration(tokenizer, sources, options)` → `CalibrationSet` in memory
- `qconvert.calib.store.load_calibration(path, tokenizer)` → the same, from a file, refused if it was
  made with a different tokenizer
- `qconvert.calib.build.resolve_calibration(tokenizer, calib_input)` → either of the two, from the
  command-line options that `qconvert.calib.click_options.calibration_options` adds to a command
"""
