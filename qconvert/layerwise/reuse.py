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

A child whose output is the output of the last linear it calls (attention ends in o_proj, the MLP
in down_proj: learned from the first time each child completes, not assumed) has a tail: once
the tail's input was seen in a pass, a change of the tail's weights alone needs only the tail
rerun on that input. The attention itself (the rotary embedding, the scores) then runs once per
batch, not twice. The recorded input replaces the child's other linears' outputs, which only a
change of those linears would need again, and such a change drops the record too.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Tail:
    linear: str  # the last linear the child calls, named inside the layer
    position: int | None  # where its output stands in the child's output tuple; None: the output itself
    length: int  # the tuple's length (the other entries are None)


class OutputCache:
    def __init__(self, layer: nn.Module, linear_names: Iterable[str], tails: dict[str, Tail] | None = None):
        """`tails`: what earlier layers of the same model taught (shared, and extended here)."""
        self.layer = layer
        self.outputs: dict[tuple[str, int, int], Any] = {}
        self.calls: dict[str, int] = {}  # calls of each module in this pass: a module may run more than once
        self.batch = -1
        self.reusing = False  # every module called so far in this pass returned its stored output
        self.tails = tails if tails is not None else {}
        self.tail_inputs: dict[tuple[str, int], torch.Tensor] = {}  # (child, batch): its tail's input
        self.last_leaf: tuple[str, Any] | None = None  # the module that returned last in this pass, and its output
        children = [name for name, _ in layer.named_children()]
        linears = [name for name in linear_names if name not in children]
        self.inner = {child: {name for name in linears if name.startswith(child + ".")} for child in children}
        self.child_of = {name: child for child, inner in self.inner.items() for name in inner}
        self.originals: dict[str, Callable] = {}
        for name in children + linears:
            module = layer.get_submodule(name)
            self.originals[name] = module.forward
            module.forward = self._wrap(name, module.forward, leaf=not self.inner.get(name))
        # first among the pre-hooks: the driver's hooks may stop the pass before the linear runs
        self.hooks = [layer.get_submodule(name).register_forward_pre_hook(self._record_tail_input(name), prepend=True) for name in self.child_of]

    def _wrap(self, name: str, forward: Callable, leaf: bool) -> Callable:
        def cached_forward(*args: Any, **kwargs: Any) -> Any:
            call = self.calls.get(name, 0)
            self.calls[name] = call + 1
            key = (name, self.batch, call)
            if self.reusing and key in self.outputs:
                out = self.outputs[key]
            elif not leaf and self.reusing and call == 0 and (name, self.batch) in self.tail_inputs:
                out = self._rerun_tail(name)
                self._store(name, key, out)
                return out
            else:
                if leaf:
                    self.reusing = False  # this module computes afresh: everything after it must too
                # A module with cached linears inside keeps the chain: those linears decide.
                out = forward(*args, **kwargs)  # a hook may stop the pass here: nothing is stored then
                self._store(name, key, out)
                if not leaf:
                    self._learn_tail(name, out)
            if leaf:
                self.last_leaf = (name, out)
            return out

        return cached_forward

    def _store(self, name: str, key: tuple[str, int, int], out: Any) -> None:
        self.outputs[key] = out
        inner = self.inner.get(name)
        if inner:  # one sweep, not one per linear: a MoE layer holds hundreds
            self.outputs = {k: v for k, v in self.outputs.items() if not (k[1] == self.batch and k[0] in inner)}

    def _learn_tail(self, child: str, out: Any) -> None:
        """Whether `child`'s output is the last linear's output (as is, or alone in a tuple of Nones)."""
        name, last = self.last_leaf or (None, None)
        tail = None
        if name in self.inner.get(child, ()) and isinstance(last, torch.Tensor):
            if out is last:
                tail = Tail(name, None, 0)
            elif isinstance(out, tuple) and any(o is last for o in out) and all(o is last or o is None for o in out):
                tail = Tail(name, next(i for i, o in enumerate(out) if o is last), len(out))
        if tail is None:
            self.tails.pop(child, None)
            self.tail_inputs = {k: v for k, v in self.tail_inputs.items() if k[0] != child}
        else:
            self.tails[child] = tail

    def _record_tail_input(self, linear: str) -> Callable:
        child = self.child_of[linear]

        def hook(module: nn.Module, args: tuple) -> None:
            tail = self.tails.get(child)
            if tail is None or tail.linear != linear or self.calls.get(linear, 0) != 0:
                return
            self.tail_inputs[(child, self.batch)] = args[0]
            others = self.inner[child] - {linear}  # no longer needed: see the module docstring
            self.outputs = {k: v for k, v in self.outputs.items() if not (k[1] == self.batch and k[0] in others)}

        return hook

    def _rerun_tail(self, child: str) -> Any:
        tail = self.tails[child]
        out = self.layer.get_submodule(tail.linear)(self.tail_inputs[(child, self.batch)])  # its hooks run as in the child
        return out if tail.position is None else tuple(out if i == tail.position else None for i in range(tail.length))

    def start_pass(self, batch: int) -> None:
        self.batch, self.reusing = batch, True
        self.calls.clear()
        self.last_leaf = None

    def weights_changed(self, linear_names: tuple[str, ...]) -> None:
        """Linears (named inside the layer) have new weights: forget their outputs and their children's,
        and every tail input but one whose tail is all that changed."""
        stale = set(linear_names) | {name.split(".", 1)[0] for name in linear_names}
        self.outputs = {key: out for key, out in self.outputs.items() if key[0] not in stale}
        self.tail_inputs = {k: v for k, v in self.tail_inputs.items() if set(linear_names) <= {self.tails[k[0]].linear}}

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()
        for name, forward in self.originals.items():
            self.layer.get_submodule(name).forward = forward
        self.outputs.clear()
        self.tail_inputs.clear()
