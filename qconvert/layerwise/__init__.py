"""The layer-by-layer driver shared by GPTQ, AWQ and the importance matrix: decoder layers are
streamed in from the checkpoint one at a time, calibration activations run through them with hooks
on the linears, and each layer's results are handed on before the next layer is read."""
