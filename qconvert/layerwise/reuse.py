"""Reusing a decoder layer's sub-module outputs between the driver's passes over the same batch.

A decoder layer calls its children (input norm, attention, post-attention norm, MLP) in a fixed
order, and each child's input depends only on the layer's input and the children before it. So
while no earlier child has had to run again, a child whose weights have not changed since it last
completed on a batch returns exactly what it returned then. GPTQ's true-sequential passes
recompute the same attention again and again: with this, each child runs once per weight change.
Costs one output per child per batch in memory (the activations' size, a few times over).
"""

from collections.abc import Callable
from typing import Any

from torch import nn


class ChildOutputCache:
    def __init__(self, layer: nn.Module):
        self.layer = layer
        self.outputs: dict[tuple[str, int], Any] = {}
        self.batch = -1
        self.reusing = False
        self.originals: dict[str, Callable] = {}
        for name, child in layer.named_children():
            self.originals[name] = child.forward
            child.forward = self._wrap(name, child.forward)

    def _wrap(self, name: str, forward: Callable) -> Callable:
        def cached_forward(*args: Any, **kwargs: Any) -> Any:
            key = (name, self.batch)
            if self.reusing and key in self.outputs:
                return self.outputs[key]
            self.reusing = False  # this child runs again: everything after it must too
            out = forward(*args, **kwargs)  # a hook may stop the pass here: nothing is stored then
            self.outputs[key] = out
            return out

        return cached_forward

    def start_pass(self, batch: int) -> None:
        self.batch, self.reusing = batch, True

    def weights_changed(self, linear_names: tuple[str, ...]) -> None:
        """Linears (named inside the layer) have new weights: forget the outputs of their children."""
        children = {name.split(".", 1)[0] for name in linear_names}
        self.outputs = {key: out for key, out in self.outputs.items() if key[0] not in children}

    def close(self) -> None:
        for name, child in self.layer.named_children():
            child.forward = self.originals[name]
        self.outputs.clear()
