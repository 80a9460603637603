"""Step 6 of the pipeline: the ``Explainer``, the user-facing handle on a compiled relevance module.

It composes the runtime's parts: ``model_guard`` (the current build, rebuilt when the model changes; calls share
it, a rebuild is exclusive), ``call_checks`` (inputs and targets), ``torch_compile`` (``explainer.compile()``)
and ``multitarget`` (K targets or positions per forward pass); each call returns an ``Explanation``
(``lrpc.explanation``). Graphs and files come from ``lrpc.debug``, through ``graph`` and ``dump`` only.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.fx as fx
from torch import nn

from . import call_checks, kernels, modalities
from .annotate import NodePlan
from .errors import LrpcError
from .explanation import Explanation
from .model_guard import Build, ModelGuard
from .multitarget import check_batch_major, multi_target_module
from .relevance_pass import Pairing
from .rule_set import Rules
from .tokens import TokenInput, check_positions
from .torch_compile import TorchCompile
from .views import stem_sigma

__all__ = ["Explainer", "Explanation"]


class Explainer:
    """A compiled relevance module. Call it on batches: ``exp = explainer(x, target)``.

    It follows the model it was compiled from (``lrpc.compile`` calls ``follow``): every call first compares a
    fingerprint of the model (``lrpc.fingerprint``) with the one taken at compile time and, when the weights,
    buffers, device or dtype changed since, compiles again before answering — the answer always equals a fresh
    ``lrpc.compile``'s. A model in training mode is refused."""

    def __init__(self, module: fx.GraphModule, layer_names: list[str], rules: Rules,
                 plans: dict[fx.Node, NodePlan], pairings: dict[str, Pairing], example_input: torch.Tensor,
                 num_classes: int, tokens: TokenInput | None = None):
        self.rules = rules
        self._torch_compile = TorchCompile()   # applies to rebuilt and multi-target modules too
        self._guard = ModelGuard(Build(module, layer_names, {n.name: p for n, p in plans.items()}, pairings,
                                       tuple(example_input.shape), num_classes, example_input.dtype,
                                       example_input.device, tokens=tokens),
                                 prepare=self._torch_compile)
        self._channel_axis: int | None = None     # of the input, for heatmaps; found on first use

    # the current build's parts, under the names they always had
    module = property(lambda self: self._build.module, doc="The generated GraphModule (forward + relevance).")
    layer_names = property(lambda self: self._build.layer_names, doc="Nodes carrying relevance, in graph order.")
    plans = property(lambda self: self._build.plans, doc="Node name -> its NodePlan (op, rule, splitting, ...).")
    pairings = property(lambda self: self._build.pairings, doc="Node name -> its relevance-side nodes.")
    input_shape = property(lambda self: self._build.input_shape, doc="The example_input's shape.")
    num_classes = property(lambda self: self._build.num_classes, doc="Output classes (1 for a single score).")
    dtype = property(lambda self: self._build.dtype, doc="The input dtype the module was compiled for.")
    tokens = property(lambda self: self._build.tokens, doc="A token model's TokenInput (vocabulary size, length "
                                                           "limit), or None for an image-like input.")
    rebuilds = property(lambda self: self._guard.rebuilds, doc="How often the model changed under this explainer.")

    # what the library's other call paths (lrpc.crp, lrpc.paths, the dataset engine) share with the calls here
    _build = property(lambda self: self._guard.build)
    _model = property(lambda self: self._guard.model)
    _gate = property(lambda self: self._guard.gate)
    _compile_kwargs = property(lambda self: self._torch_compile.kwargs)

    def _current(self) -> Build:
        """The build that answers this call: the compiled one, or a fresh one when the model changed since."""
        return self._guard.current()

    def _compiled(self, module: fx.GraphModule) -> Callable:
        """``module`` as calls run it: through ``torch.compile`` after ``compile()``, else as it is."""
        return self._torch_compile(module)

    @property
    def channel_axis(self) -> int:
        """The input axis ``exp.heatmap()`` sums over: read from the model's first convolution
        (``lrpc.modalities.channel_axis``) unless set here (``explainer.channel_axis = 2``)."""
        if self._channel_axis is None:
            self._channel_axis = modalities.channel_axis(self.input_shape, self.plans)
        return self._channel_axis

    @channel_axis.setter
    def channel_axis(self, axis: int) -> None:
        if not 1 <= axis < len(self.input_shape):
            raise LrpcError(f"channel_axis must name an input axis after the batch (1..{len(self.input_shape) - 1} "
                            f"for inputs like {self.input_shape}), got {axis}")
        self._channel_axis = axis

    def follow(self, model: nn.Module, rebuild: Callable[[], "Explainer"]) -> None:
        """Watch ``model`` from now on; ``rebuild()`` compiles it again as it is then (``lrpc.compile`` passes a
        closure over its own arguments)."""
        self._guard.follow(model, lambda: rebuild()._guard)

    def refresh(self) -> "Explainer":
        """Compile again from the model as it is now. Calls do this by themselves after any change a version
        counter sees; call it after writes none sees: through ``p.data``, or to inference tensors."""
        if not self._guard.follows_a_model:
            raise LrpcError("this explainer does not follow a model (it was not made by lrpc.compile)")
        self._guard.rebuild_now(force=True)
        return self

    @property
    def smoothing_sigma(self) -> tuple[float, ...]:
        """σ per spatial dimension that ``heatmap(smooth="auto")`` blurs with: the standard deviation of the
        receptive field of the model's stem (``lrpc.views.stem_sigma``); () where the stem has no window."""
        build = self._build
        if build.smoothing_sigma is None:
            build.smoothing_sigma = stem_sigma(build.plans)
        return build.smoothing_sigma

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
        """Move (or cast) the model, and with it the explainer: a followed model is moved whole and compiled
        again on its new device / in its new dtype (inputs must then come in that dtype); otherwise the
        generated module is moved with its rule constants and the model submodules it shares."""
        if self._model is None:
            self.module.to(*args, **kwargs)
            self._build.multi_run = self._build.positions_run = None   # they hold the constants as they were
            device, dtype = torch._C._nn._parse_to(*args, **kwargs)[:2]
            self._build.device = self._build.device if device is None else device
            self._build.dtype = self._build.dtype if dtype is None else dtype
            return self
        self._model.to(*args, **kwargs)
        self._guard.rebuild_now(force=False)
        return self

    def compile(self, **torch_compile_kwargs) -> "Explainer":
        """Hand the whole generated module to ``torch.compile`` as one graph, as ``torch.nn.Module.compile`` does
        for a module (``lrpc.compile`` built the explainer; this compiles its code). On CPU inductor needs a C++
        compiler. The first call compiles (tens of seconds for a ResNet); later calls reuse the code, and a
        rebuild after a model change compiles its new module with the same arguments.

        The z⁺ fallback (the ``default`` preset) is one opaque op in the graph (``lrpc.zplus_fallback``): it
        runs its extra convolutions only where an output with relevance has no positive evidence, compiled or not.

        The compiled code is cached on disk (``TORCHINDUCTOR_CACHE_DIR``, else ``~/.cache/lrpc/torch-compile``),
        so another process compiling the same model and rules starts warm: ``lrpc.compile_cache``."""
        self._torch_compile.configure(torch_compile_kwargs)
        self._build.run = self._compiled(self.module)
        self._build.multi_run = self._build.positions_run = None
        return self

    # ---------------------------------------------------------------------------------------------------- calls
    def check_input(self, x: torch.Tensor, build: Build | None = None) -> None:
        """Refuse an input the module was not compiled for (``lrpc.call_checks.check_input``)."""
        call_checks.check_input(x, build or self._build)

    def check_target(self, target, batch: int, num_classes: int, device) -> torch.Tensor | None:
        """``target`` as a LongTensor [B], or [B, 2] for a contrast ``(a, b)``: the score of a minus that of b."""
        classes = "tokens in the model's vocabulary" if self.tokens is not None else "classes"
        return call_checks.check_target(target, batch, num_classes, device, classes)

    def __call__(self, x: torch.Tensor, target=None, *, attention_mask: torch.Tensor | None = None) -> Explanation:
        """Explain the batch ``x`` for ``target``: None (the predicted class; for a language model the predicted
        next token after each row's last real token), an int or LongTensor [B], or a contrast ``(a, b)`` of them
        (the score of a minus the score of b; ``exp.target`` is then [B, 2]). A token model takes token ids
        ``x`` [B, T] and an optional ``attention_mask`` [B, T] (1: a real token, 0: padding, left or right)."""
        build = self._current()
        inputs = call_checks.module_inputs(x, attention_mask, build)
        target = self.check_target(target, x.shape[0], build.num_classes, x.device)
        with self._gate.shared(), torch.inference_mode():
            outputs = build.run(*inputs, target)
            return self._explanation(outputs, build)

    def explain_targets(self, x: torch.Tensor, targets, *, attention_mask: torch.Tensor | None = None) -> Explanation:
        """Explain K classes of every image with ONE forward pass: the relevance pass runs on B·K rows (the
        activations repeated per target). ``targets``: K class indices for every image (a list or a LongTensor
        [K]) or one row per image (LongTensor [B, K]). The explanation has B·K rows, image-major: row b·K + k
        explains image b for its k-th target (``exp.relevance.view(B, K, *x.shape[1:])``). A token model takes
        its ``attention_mask`` as in a call, and explains K next tokens after each row's last real token."""
        build = self._current()
        inputs = call_checks.module_inputs(x, attention_mask, build)
        targets = call_checks.target_matrix(targets, x.shape[0], x.device)
        repeats = targets.shape[1]
        flat = self.check_target(targets.reshape(-1), targets.numel(), build.num_classes, x.device)
        with self._gate.shared():
            if build.multi_run is None:
                check_batch_major(build.plans)
                build.multi_run = self._compiled(multi_target_module(build.module))
            with torch.inference_mode():
                return self._explanation(build.multi_run(*inputs, flat, repeats), build)

    def explain_positions(self, input_ids: torch.Tensor, positions, targets=None, *,
                          attention_mask: torch.Tensor | None = None) -> Explanation:
        """A language model's next-token scores at K positions of every row, explained with ONE forward pass
        (the relevance pass runs on B·K rows, as in ``explain_targets``). Row b·K + k of the explanation explains
        the score that position ``positions[b, k]`` gives token ``targets[b, k]`` (the logits there predict the
        token after that position): ``exp.relevance.view(B, K, T, D)``, ``exp.heatmap().view(B, K, T)``.

        ``positions``: a list of ints or a LongTensor [K] (the same for every row) or [B, K]; each must be a real
        token of its row. ``targets``: None (the token the model predicts at each position), or token ids of the
        shape of ``positions``. For generated text ``ids`` (prompt + new tokens at positions p₀ … p₀+N−1), the
        [new tokens × all tokens] matrix is ``explain_positions(ids, range(p₀ − 1, p₀ + N − 1),
        ids[:, p₀:p₀ + N]).heatmap().view(B, N, T)``: causal attention keeps each row to the tokens before it."""
        build = self._current()
        if build.tokens is None or not build.tokens.per_position:
            raise LrpcError("explain_positions explains a language model's scores per position; this explainer "
                            "was compiled for a model with one score vector per input (use explain_targets)")
        ids, mask, _ = call_checks.module_inputs(input_ids, attention_mask, build)
        positions = check_positions(positions, mask)
        repeats = positions.shape[1]
        if targets is not None:
            targets = call_checks.target_matrix(targets, ids.shape[0], ids.device)
            if targets.shape != positions.shape:
                raise LrpcError(f"targets {tuple(targets.shape)} must match positions {tuple(positions.shape)}")
            targets = self.check_target(targets.reshape(-1), targets.numel(), build.num_classes, ids.device)
        with self._gate.shared():
            if build.positions_run is None:
                check_batch_major(build.plans)
                module = multi_target_module(build.module, per_row=("positions", kernels.pick_scores))
                build.positions_run = self._compiled(module)
            with torch.inference_mode():
                return self._explanation(build.positions_run(ids, mask, positions, targets, repeats), build)

    def _explanation(self, outputs, build: Build) -> Explanation:
        logits, resolved, relevance, layer_sums, node_sums, kept = outputs
        call_checks.check_scores(logits, build)
        relevances = {name: kept[name][0] for name in kept}
        activations = {name: kept[name][1] for name in kept}
        return Explanation(relevance, logits, resolved, layer_sums, node_sums, build.layer_names, self,
                           relevances, activations)

    def __repr__(self) -> str:
        return (f"Explainer(rules={self.rules.name!r}, layers={len(self.layer_names)}, "
                f"input={self.input_shape})")
