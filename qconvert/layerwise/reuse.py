"""Reusing a decoder layer's module outputs between the driver's passes over the same batch.

A decoder layer calls its modules in a fixed order, and each module's input depends only on the
layer's input and the modules called before it. So while every module called so far in a pass
returned what it returned in an earlier pass, a module whose weights have not changed since it
last completed on the batch returns exactly what it returned then. GPTQ's true-sequential passes
recompute the same work again and again; with this, each linear runs once per weight change:
q/k/v computed for o_proj's stage are reused by the up/gate stage, up/gate computed for
down_proj's stage by the final pass that makes the layer's outputs.

The cached modules are the layer's children (norms, attention, MLP) and its quantized linears.
A linear's entry is dropped once the child holding it completes (the child's own output covers
it), so the cost is about one output per child and the linears of one unfinished child per batch.
"""

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn


class OutputCache:
    def __init__(self, layer: nn.Module, linear_names: Iterable[str]):
        self.layer = layer
        self.outputs: dict[tuple[str, int, int], Any] = {}
        self.calls: dict[str, int] = {}  # calls of each module in this pass: a module may run more than once
        self.batch = -1
        self.reusing = False  # every module called so far in this pass returned its stored output
        children = [name for name, _ in layer.named_children()]
        linears = [name for name in linear_names if name not in children]
        self.inner = {child: {name for name in linears if name.startswith(child + ".")} for child in children}
        self.originals: dict[str, Callable] = {}
        for name in children + linears:
            module = layer.get_submodule(name)
            self.originals[name] = module.forward
            module.forward = self._wrap(name, module.forward, leaf=not self.inner.get(name))

    def _wrap(self, name: str, forward: Callable, leaf: bool) -> Callable:
        def cached_forward(*args: Any, **kwargs: Any) -> Any:
            call = self.calls.get(name, 0)
            self.calls[name] = call + 1
            key = (name, self.batch, call)
            if self.reusing and key in self.outputs:
                return self.outputs[key]
            if leaf:
                self.reusing = False  # this module computes afresh: everything after it must too
            # A module with cached linears inside keeps the chain: those linears decide.
            out = forward(*args, **kwargs)  # a hook may stop the pass here: nothing is stored then
            self.outputs[key] = out
            inner = self.inner.get(name)
            if inner:  # one sweep, not one per linear: a MoE layer holds hundreds
                self.outputs = {k: v for k, v in self.outputs.items() if not (k[1] == self.batch and k[0] in inner)}
            return out

        return cached_forward

    def start_pass(self, batch: int) -> None:
        self.batch, self.reusing = batch, True
        self.calls.clear()

    def weights_changed(self, linear_names: tuple[str, ...]) -> None:
        """Linears (named inside the layer) have new weights: forget their outputs and their children's."""
        stale = set(linear_names) | {name.split(".", 1)[0] for name in linear_names}
        self.outputs = {key: out for key, out in self.outputs.items() if key[0] not in stale}

    def close(self) -> None:
        for name, forward in self.originals.items():
            self.layer.get_submodule(name).forward = forward
        self.outputs.clear()
