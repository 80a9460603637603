"""Step 5 of the pipeline: the user-facing explainer (validated calls into the generated module) and readout."""
from __future__ import annotations

import warnings

from dataclasses import dataclass, field

import torch
import torch.fx as fx

from .annotate import NodePlan
from .errors import LrpcError
from .presets import Rules
from .quantize import heat_quantize
from .relevance_pass import Pairing


@dataclass
class Explanation:
    """The result for one batch. ``layer_sums[name]`` is the relevance crossing the graph cut after that node."""

    relevance: torch.Tensor
    logits: torch.Tensor
    target: torch.Tensor
    layer_sum_matrix: torch.Tensor          # [B, L]
    node_sum_matrix: torch.Tensor           # [B, L]: relevance arriving at each node
    layer_names: list[str]
    explainer: "Explainer" = field(repr=False)
    relevances: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)    # nodes named in keep=
    activations: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)   # their forward outputs

    @property
    def start(self) -> torch.Tensor:
        return self.layer_sum_matrix[:, -1]

    @property
    def layer_sums(self) -> dict[str, torch.Tensor]:
        return {name: self.layer_sum_matrix[:, k] for k, name in enumerate(self.layer_names)}

    @property
    def node_sums(self) -> dict[str, torch.Tensor]:
        return {name: self.node_sum_matrix[:, k] for k, name in enumerate(self.layer_names)}

    def heatmap(self, quantize: int | None = None) -> torch.Tensor:
        """Channel sum of the input relevance [B, H, W]; ``quantize=8`` applies Heat Quantization with Q = 8."""
        heat = self.relevance.sum(1)
        return heat if quantize is None else heat_quantize(heat, quantize)

    def conservation_error(self) -> torch.Tensor:
        """Per sample: the largest |layer sum − start| relative to |start|."""
        deviation = (self.layer_sum_matrix - self.start.unsqueeze(1)).abs().amax(1)
        return deviation / self.start.abs().clamp_min(1e-30)

    def leaks(self, tol: float = 1e-6, relative: bool = True) -> list:
        """Nodes whose relevance op creates or loses more than ``tol`` (of |start| when ``relative``), largest
        first, as ``lrpc.debug.Leak(node, kind, delta [B], size)``. The first thing to run when a map looks wrong."""
        from .debug import leaks
        return leaks(self, tol, relative)

    def dump(self, path, *, sample: int | None = None):
        """``explainer.dump(path, explanation=self)``: the graph with this explanation's relevance per node."""
        return self.explainer.dump(path, self, sample=sample)


class Explainer:
    """A compiled relevance module. Call it on batches: ``exp = explainer(x, target)``."""

    def __init__(self, module: fx.GraphModule, layer_names: list[str], rules: Rules,
                 plans: dict[fx.Node, NodePlan], pairings: dict[str, Pairing], example_input: torch.Tensor,
                 num_classes: int):
        self.module = module
        self.layer_names = layer_names
        self.rules = rules
        self.plans = {n.name: p for n, p in plans.items()}
        self.pairings = pairings
        self.input_shape = tuple(example_input.shape)
        self.num_classes = num_classes
        self._run = module
        self._compile_kwargs: dict | None = None   # set by compile(); applies to the multi-target module too
        self._multi_run = None                    # built on the first explain_targets call

    @property
    def code(self) -> str:
        return self.module.code

    @property
    def graph(self):
        """The paired graph as a fresh ``networkx.DiGraph``: one node per forward node with its op kind, target,
        module, shape, rule / splitting policy / skip kind and paired relevance nodes (see ``lrpc.debug.graph``)."""
        from .debug import build_graph
        return build_graph(self)

    def dump(self, path, explanation: Explanation | None = None, *, sample: int | None = None):
        """Write the paired graph to ``path``; the suffix picks the format: .dot .svg .png .json .graphml .txt.
        With an ``explanation``, nodes carry its relevance sums (batch mean, or one ``sample``) and deltas."""
        from .debug import build_graph, write
        return write(build_graph(self, explanation, sample), path)

    def to(self, *args, **kwargs) -> "Explainer":
        """Move (or cast) the generated module: its rule constants and, because they are shared rather than
        copied, the model's own submodules with them."""
        self.module.to(*args, **kwargs)
        self._multi_run = None  # it holds references to the constants as they were
        return self

    def compile(self, **torch_compile_kwargs) -> "Explainer":
        """Hand the whole generated module to ``torch.compile`` as one graph (on CPU, inductor needs a C++
        compiler). The first call compiles (tens of seconds for a ResNet); later calls reuse the code."""
        fallback = sorted(name for name, plan in self.plans.items() if getattr(plan.rule, "fallback", False))
        if fallback:
            warnings.warn(f"{len(fallback)} layers (e.g. {fallback[0]!r}) use the z+ fallback; eager code runs its "
                          "extra convolutions only when an output has no positive evidence, compiled code always "
                          "(one graph has no data-dependent branch), so expect the compiled module to be slower than "
                          "the eager one (ResNet-50: about 2x)", stacklevel=2)
        self._compile_kwargs = torch_compile_kwargs
        self._run = torch.compile(self.module, **torch_compile_kwargs)
        self._multi_run = None
        return self

    def check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a tensor, got {type(x).__name__}")
        if x.dim() != len(self.input_shape):
            raise LrpcError(f"input has {x.dim()} dimensions {tuple(x.shape)}, the model was compiled for "
                            f"{len(self.input_shape)} like {self.input_shape} (add a batch dimension?)")
        if len(self.input_shape) > 1 and x.shape[1] != self.input_shape[1]:
            raise LrpcError(f"input has {x.shape[1]} channels {tuple(x.shape)}, the model expects "
                            f"{self.input_shape[1]}")
        if not x.is_floating_point():
            raise LrpcError(f"input must be a floating-point tensor, got {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            raise LrpcError("input contains NaN or Inf values")

    def check_target(self, target, batch: int, num_classes: int, device) -> torch.Tensor | None:
        if target is None:
            return None
        if isinstance(target, int) and not isinstance(target, bool):
            target = torch.full((batch,), target, dtype=torch.long, device=device)
        elif isinstance(target, torch.Tensor):
            if target.dtype not in (torch.int64, torch.int32):
                raise LrpcError(f"target must be an int or a LongTensor [B], got a {target.dtype} tensor")
            target = target.to(device=device, dtype=torch.long).reshape(-1)
            if target.numel() == 1 and batch != 1:
                target = target.expand(batch)
            if target.numel() != batch:
                raise LrpcError(f"target has {target.numel()} entries for a batch of {batch}")
        else:
            raise LrpcError(f"target must be None, an int or a LongTensor [B], got {type(target).__name__}")
        bad = (target < 0) | (target >= num_classes)
        if bool(bad.any()):
            raise LrpcError(f"target {target[bad].tolist()} out of range for {num_classes} classes")
        return target

    def __call__(self, x: torch.Tensor, target=None) -> Explanation:
        self.check_input(x)
        target = self.check_target(target, x.shape[0], self.num_classes, x.device)
        with torch.inference_mode():
            try:
                outputs = self._run(x, target)
            except RuntimeError as exc:
                if tuple(x.shape[2:]) == self.input_shape[2:]:
                    raise
                raise LrpcError(f"input of shape {tuple(x.shape)} differs in size from the example_input "
                                f"{self.input_shape} the module was compiled and checked for, and it failed: "
                                f"{exc}; compile with an example_input of this size") from exc
            return self._explanation(outputs)

    def explain_targets(self, x: torch.Tensor, targets) -> Explanation:
        """Explain K classes of every image with ONE forward pass: the relevance pass runs on B·K rows (the
        activations repeated per target). ``targets``: K class indices for every image (a list or a LongTensor
        [K]) or one row per image (LongTensor [B, K]). The explanation has B·K rows, image-major: row b·K + k
        explains image b for its k-th target (``exp.relevance.view(B, K, *x.shape[1:])``)."""
        from .multitarget import check_batch_major, multi_target_module
        self.check_input(x)
        targets = self._target_matrix(targets, x.shape[0], x.device)
        repeats = targets.shape[1]
        flat = self.check_target(targets.reshape(-1), targets.numel(), self.num_classes, x.device)
        if self._multi_run is None:
            check_batch_major(self.plans)
            module = multi_target_module(self.module)
            self._multi_run = module if self._compile_kwargs is None else torch.compile(module, **self._compile_kwargs)
        with torch.inference_mode():
            return self._explanation(self._multi_run(x, flat, repeats))

    def _target_matrix(self, targets, batch: int, device) -> torch.Tensor:
        """``targets`` of explain_targets as a LongTensor [B, K]."""
        if isinstance(targets, (list, tuple)):
            if not targets or not all(isinstance(t, int) and not isinstance(t, bool) for t in targets):
                raise LrpcError(f"targets must be a non-empty list of class indices, got {targets!r}")
            targets = torch.tensor(targets, dtype=torch.long, device=device)
        if not isinstance(targets, torch.Tensor):
            raise LrpcError(f"targets must be a list of ints or a LongTensor [K] or [B, K], got "
                            f"{type(targets).__name__}")
        if targets.dtype not in (torch.int64, torch.int32):
            raise LrpcError(f"targets must be an integer tensor, got {targets.dtype}")
        if targets.dim() == 1:
            targets = targets.unsqueeze(0).expand(batch, -1)
        if targets.dim() != 2 or targets.shape[0] != batch or targets.shape[1] == 0:
            raise LrpcError(f"targets must be [K] or [B, K] with B = {batch} images and K >= 1, got shape "
                            f"{tuple(targets.shape)}")
        return targets.to(device=device, dtype=torch.long)

    def _explanation(self, outputs) -> Explanation:
        logits, resolved, relevance, layer_sums, node_sums, kept = outputs
        relevances = {name: kept[name][0] for name in kept}
        activations = {name: kept[name][1] for name in kept}
        return Explanation(relevance, logits, resolved, layer_sums, node_sums, self.layer_names, self,
                           relevances, activations)

    def __repr__(self) -> str:
        return (f"Explainer(rules={self.rules.name!r}, layers={len(self.layer_names)}, "
                f"input={self.input_shape})")
