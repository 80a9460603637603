"""Step 5 of the pipeline: the user-facing explainer (validated calls into the generated module) and readout."""
from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.fx as fx
from torch import nn

from . import kernels, modalities
from .annotate import NodePlan
from .compile_cache import use_cache_dir
from .errors import LrpcError
from .fingerprint import Fingerprint, training_modules
from .presets import Rules
from .relevance_pass import Pairing
from .tokens import TokenInput, check_positions, check_tokens, graph_inputs
from .views import heatmap_view, stem_sigma


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
    def absorbed_matrix(self) -> torch.Tensor:
        """[B, L]: relevance each node's op takes out of the flow (a bias, a stabiliser, a constant input such as
        a cls token); negative where an op creates relevance. The cut after a node minus the cut before it."""
        cut = self.layer_sum_matrix
        before = torch.cat([torch.zeros_like(cut[:, :1]), cut[:, :-1]], 1)
        absorbed = cut - before
        if self.explainer.plans[self.layer_names[0]].info.kind == "input":
            absorbed[:, 0] = 0   # its cut is the input relevance itself
        return absorbed

    @property
    def absorbed(self) -> dict[str, torch.Tensor]:
        """Node → [B]: every sink of the explanation, so that ``relevance.sum() + Σ absorbed == start`` per sample.
        Lists constants (always) and every node whose op takes more than rounding (100 ulp of |start|)."""
        matrix = self.absorbed_matrix
        scale = 100 * torch.finfo(matrix.dtype).eps * self.start.abs().unsqueeze(1)
        sinks = (matrix.abs() > scale).any(0).tolist()
        plans = self.explainer.plans
        return {name: matrix[:, k] for k, name in enumerate(self.layer_names)
                if sinks[k] or plans[name].info.kind == "inert"}

    @property
    def node_sums(self) -> dict[str, torch.Tensor]:
        return {name: self.node_sum_matrix[:, k] for k, name in enumerate(self.layer_names)}

    def heatmap(self, quantize: int | None = None, sign: str = "signed", smooth=None) -> torch.Tensor:
        """The input relevance summed over its channels, read as a view (``lrpc.views``; docs/views.md).

        The sum: [B, H, W] for images, [B, T] for waveforms, [B, C, T] kept per channel for multichannel signals,
        [B, T, H, W] for videos, [B, D, H, W] for volumes (``lrpc.modalities``); for a token model, the relevance
        of each token [B, T] (the sum over the embedding's D). Then, in this order: ``sign`` ("signed": R,
        "positive": max(R, 0), "absolute": |R|), ``smooth`` (a Gaussian blur: σ in pixels, or "auto":
        ``explainer.smoothing_sigma``, from the model's stem), ``quantize=8``: Heat Quantization with Q = 8.
        The defaults return the raw map; ``exp.relevance`` is never changed."""
        heat = (self.relevance.sum(-1) if self.explainer.tokens is not None
                else modalities.heatmap(self.relevance, self.explainer.channel_axis))
        return heatmap_view(heat, sign=sign, smooth=smooth, quantize=quantize,
                            auto=lambda: self.explainer.smoothing_sigma)

    def conservation_error(self) -> torch.Tensor:
        """Per sample: the largest |layer sum − start| relative to |start| (``lrpc.debug.accounting.start_scale``)."""
        from .debug.accounting import start_scale
        deviation = (self.layer_sum_matrix - self.start.unsqueeze(1)).abs().amax(1)
        return deviation / start_scale(self.start)

    def leaks(self, tol: float = 1e-6, relative: bool = True) -> list:
        """Nodes whose relevance op creates or loses more than ``tol`` (of |start| when ``relative``), largest
        first, as ``lrpc.debug.Leak(node, kind, delta [B], size)``. The first thing to run when a map looks wrong."""
        from .debug import leaks
        return leaks(self, tol, relative)

    def dump(self, path, *, sample: int | None = None):
        """``explainer.dump(path, explanation=self)``: the graph with this explanation's relevance per node."""
        return self.explainer.dump(path, self, sample=sample)


@dataclass
class Build:
    """What one ``lrpc.compile`` produced; swapped whole when the explainer rebuilds, so a call never mixes two."""

    module: fx.GraphModule
    layer_names: list[str]
    plans: dict[str, NodePlan]
    pairings: dict[str, Pairing]
    input_shape: tuple[int, ...]
    num_classes: int
    dtype: torch.dtype                     # of example_input: the input dtype the module was compiled for
    device: torch.device
    run: Callable = None                   # the module, or torch.compile's wrapper of it
    multi_run: Callable | None = None      # built on the first explain_targets call
    positions_run: Callable | None = None  # built on the first explain_positions call
    fingerprint: Fingerprint | None = None  # of the model at compile time (None: not following a model)
    tokens: TokenInput | None = None       # a token model: what its calls must pass (else an image-like input)
    smoothing_sigma: tuple[float, ...] | None = None   # computed on first use (lrpc.views.stem_sigma)

    def __post_init__(self):
        self.run = self.run or self.module


class _SharedExclusive:
    """Calls share, a rebuild is exclusive: capturing the model runs its submodules under tracing machinery that
    promises no thread safety, so a rebuild waits for the calls in flight and holds back new ones."""

    def __init__(self):
        self._condition = threading.Condition()
        self._active = 0
        self._exclusive = False

    @contextmanager
    def shared(self):
        with self._condition:
            self._condition.wait_for(lambda: not self._exclusive)
            self._active += 1
        try:
            yield
        finally:
            with self._condition:
                self._active -= 1
                self._condition.notify_all()

    @contextmanager
    def exclusive(self):
        with self._condition:
            self._condition.wait_for(lambda: not self._exclusive)
            self._exclusive = True
            self._condition.wait_for(lambda: self._active == 0)
        try:
            yield
        finally:
            with self._condition:
                self._exclusive = False
                self._condition.notify_all()


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
        self._build = Build(module, layer_names, {n.name: p for n, p in plans.items()}, pairings,
                            tuple(example_input.shape), num_classes, example_input.dtype, example_input.device,
                            tokens=tokens)
        self._compile_kwargs: dict | None = None   # set by compile(); applies to rebuilt and multi-target modules
        self._model: nn.Module | None = None
        self._rebuild: Callable[[], "Explainer"] | None = None
        self._gate = _SharedExclusive()
        self._rebuild_lock = threading.Lock()     # one rebuild at a time; calls wait on the gate, not on this
        self.rebuilds = 0                         # how often the model changed under this explainer
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
        self._model, self._rebuild = model, rebuild
        self._build.fingerprint = Fingerprint.of(model)
        self._refuse_training(self._build.fingerprint)

    def refresh(self) -> "Explainer":
        """Compile again from the model as it is now. Calls do this by themselves after any change a version
        counter sees; call it after writes none sees: through ``p.data``, or to inference tensors."""
        if self._rebuild is None:
            raise LrpcError("this explainer does not follow a model (it was not made by lrpc.compile)")
        self._rebuild_now(force=True)
        return self

    def _refuse_training(self, state: Fingerprint) -> None:
        if state.any_training:
            names = training_modules(self._model)
            raise LrpcError(f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''} in training mode: lrpc "
                            "explains the model in inference mode (BatchNorm with its running statistics, no "
                            "Dropout); call model.eval() before explaining")

    def _current(self) -> Build:
        """The build that answers this call: the compiled one, or a fresh one when the model changed since."""
        if self._model is None:
            return self._build
        with self._gate.shared():   # a rebuild in flight has the parameters swapped for export's fake tensors
            state = Fingerprint.of(self._model)
        self._refuse_training(state)
        if state != self._build.fingerprint:
            self._rebuild_now(force=False)
        return self._build

    def _rebuild_now(self, force: bool) -> None:
        with self._rebuild_lock, self._gate.exclusive():
            if not force and Fingerprint.of(self._model) == self._build.fingerprint:
                return   # another thread rebuilt while this one waited
            fresh = self._rebuild()
            build, self._rebuild = fresh._build, fresh._rebuild
            build.run = self._compiled(build.module)
            self._build = build
            self.rebuilds += 1

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
        self._rebuild_now(force=False)
        return self

    def compile(self, **torch_compile_kwargs) -> "Explainer":
        """Hand the whole generated module to ``torch.compile`` as one graph (on CPU, inductor needs a C++
        compiler). The first call compiles (tens of seconds for a ResNet); later calls reuse the code, and a
        rebuild after a model change compiles its new module with the same arguments.

        Rule sets with the z⁺ fallback (the ``default`` preset) keep their eager code, and a warning says so:
        eager code runs the fallback's extra convolutions only where an output has no positive evidence, one
        compiled graph (no data-dependent branch) would run them always — twice the eager cost on ResNet-50.

        The compiled code is cached on disk (``TORCHINDUCTOR_CACHE_DIR``, else ``~/.cache/lrpc/torch-compile``),
        so another process compiling the same model and rules starts warm: ``lrpc.compile_cache``."""
        use_cache_dir()
        fallback = sorted(name for name, plan in self.plans.items() if getattr(plan.rule, "fallback", False))
        if fallback:
            warnings.warn(f"explainer.compile(): {len(fallback)} layers (e.g. {fallback[0]!r}) use the z+ fallback, "
                          "which compiled code would run always and eager code runs only where needed; this "
                          "explainer keeps its eager code (faster here)", stacklevel=2)
        self._compile_kwargs = None if fallback else torch_compile_kwargs
        self._build.run = self._compiled(self.module)
        self._build.multi_run = self._build.positions_run = None
        return self

    def _compiled(self, module: fx.GraphModule):
        """``module`` as calls run it: through ``torch.compile`` after ``compile()``, else as it is."""
        return module if self._compile_kwargs is None else torch.compile(module, **self._compile_kwargs)

    def check_input(self, x: torch.Tensor, build: Build | None = None) -> None:
        build = build or self._build
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a tensor, got {type(x).__name__}")
        if x.dim() != len(build.input_shape):
            raise LrpcError(f"input has {x.dim()} dimensions {tuple(x.shape)}, the model was compiled for "
                            f"{len(build.input_shape)} like {build.input_shape} (add a batch dimension?)")
        if len(build.input_shape) > 1 and x.shape[1] != build.input_shape[1]:
            raise LrpcError(f"input has {x.shape[1]} channels {tuple(x.shape)}, the model expects "
                            f"{build.input_shape[1]}")
        if tuple(x.shape[1:]) != build.input_shape[1:]:
            # torch.export specialises every size but the batch: a graph run on another size may compute
            # something else without failing (a baked-in reshape, an interpolated position embedding)
            raise LrpcError(f"input of shape {tuple(x.shape)} differs in size from the example_input "
                            f"{build.input_shape} the module was compiled for; compile with an example_input "
                            "of this size")
        if not x.is_floating_point():
            raise LrpcError(f"input must be a floating-point tensor, got {x.dtype}")
        if x.dtype != build.dtype:   # refused, not converted: a silent cast would change the answer's precision
            raise LrpcError(f"input is {x.dtype}, the explainer was compiled for {build.dtype} (the dtype of "
                            f"example_input and the model); pass x.to({build.dtype}), or cast the model and "
                            f"compile with an example_input of {x.dtype}")
        if not _same_device(x.device, build.device):
            raise LrpcError(f"input is on {x.device}, the explainer's model on {build.device}; pass "
                            f"x.to({str(build.device)!r}) or move the model")
        if not bool(torch.isfinite(x).all()):
            raise LrpcError("input contains NaN or Inf values")

    def check_target(self, target, batch: int, num_classes: int, device) -> torch.Tensor | None:
        """``target`` as a LongTensor [B], or [B, 2] for a contrast ``(a, b)``: the score of a minus that of b."""
        if target is None:
            return None
        if isinstance(target, tuple):
            if len(target) != 2 or any(t is None for t in target):
                raise LrpcError(f"a contrastive target is a pair (a, b) of ints or LongTensors [B], got {target!r}")
            return torch.stack([self.check_target(t, batch, num_classes, device) for t in target], 1)
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
            raise LrpcError(f"target must be None, an int or a LongTensor [B], or a pair (a, b) of them (a "
                            f"contrast), got {type(target).__name__}")
        bad = (target < 0) | (target >= num_classes)
        if bool(bad.any()):
            what = "tokens in the model's vocabulary" if self.tokens is not None else "classes"
            raise LrpcError(f"target {target[bad].tolist()} out of range for {num_classes} {what}")
        return target

    def __call__(self, x: torch.Tensor, target=None, *, attention_mask: torch.Tensor | None = None) -> Explanation:
        """Explain the batch ``x`` for ``target``: None (the predicted class; for a language model the predicted
        next token after each row's last real token), an int or LongTensor [B], or a contrast ``(a, b)`` of them
        (the score of a minus the score of b; ``exp.target`` is then [B, 2]). A token model takes token ids
        ``x`` [B, T] and an optional ``attention_mask`` [B, T] (1: a real token, 0: padding, left or right)."""
        build = self._current()
        inputs = self._inputs(x, attention_mask, build)
        target = self.check_target(target, x.shape[0], build.num_classes, x.device)
        with self._gate.shared(), torch.inference_mode():
            outputs = build.run(*inputs, target)
            return self._explanation(outputs, build)

    def _check_scores(self, logits: torch.Tensor, build: Build) -> None:
        """A token model's own forward can fail on a mask (Hugging Face's eager attention turns a query whose
        keys are all padding, as a sliding window over left padding gives, into NaN): say so, not a NaN map."""
        if build.tokens is None:
            return
        bad = ~torch.isfinite(logits).reshape(len(logits), -1).all(1)
        if bool(bad.any()):
            raise LrpcError(f"the model's own forward gives NaN/Inf scores for rows {bad.nonzero().flatten().tolist()}"
                            " with this attention_mask (in eager attention a query whose keys are all padding, "
                            "e.g. a sliding window over left padding, gives NaN); pad on the right or use SDPA")

    def _inputs(self, x, attention_mask, build: Build) -> tuple[torch.Tensor, ...]:
        """The generated module's inputs, checked: ``(x,)``, or a token model's ``(input_ids, attention_mask)``."""
        if build.tokens is not None:
            mask = check_tokens(x, attention_mask, build.tokens, build.device)
            return graph_inputs(x, mask, build.tokens.per_position)
        if attention_mask is not None:
            raise LrpcError("attention_mask is for token models (compiled from token ids); this explainer was "
                            f"compiled for inputs like {build.input_shape}")
        self.check_input(x, build)
        return (x,)

    def explain_targets(self, x: torch.Tensor, targets, *, attention_mask: torch.Tensor | None = None) -> Explanation:
        """Explain K classes of every image with ONE forward pass: the relevance pass runs on B·K rows (the
        activations repeated per target). ``targets``: K class indices for every image (a list or a LongTensor
        [K]) or one row per image (LongTensor [B, K]). The explanation has B·K rows, image-major: row b·K + k
        explains image b for its k-th target (``exp.relevance.view(B, K, *x.shape[1:])``). A token model takes
        its ``attention_mask`` as in a call, and explains K next tokens after each row's last real token."""
        from .multitarget import check_batch_major, multi_target_module
        build = self._current()
        inputs = self._inputs(x, attention_mask, build)
        targets = self._target_matrix(targets, x.shape[0], x.device)
        repeats = targets.shape[1]
        flat = self.check_target(targets.reshape(-1), targets.numel(), build.num_classes, x.device)
        with self._gate.shared():
            if build.multi_run is None:
                check_batch_major(build.plans)
                module = multi_target_module(build.module)
                build.multi_run = self._compiled(module)
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
        from .multitarget import check_batch_major, multi_target_module
        build = self._current()
        if build.tokens is None or not build.tokens.per_position:
            raise LrpcError("explain_positions explains a language model's scores per position; this explainer "
                            "was compiled for a model with one score vector per input (use explain_targets)")
        ids, mask, _ = self._inputs(input_ids, attention_mask, build)
        positions = check_positions(positions, mask)
        repeats = positions.shape[1]
        if targets is not None:
            targets = self._target_matrix(targets, ids.shape[0], ids.device)
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

    def _target_matrix(self, targets, batch: int, device) -> torch.Tensor:
        """``targets`` of explain_targets as a LongTensor [B, K]."""
        if isinstance(targets, range):
            targets = list(targets)
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

    def _explanation(self, outputs, build: Build) -> Explanation:
        logits, resolved, relevance, layer_sums, node_sums, kept = outputs
        self._check_scores(logits, build)
        relevances = {name: kept[name][0] for name in kept}
        activations = {name: kept[name][1] for name in kept}
        return Explanation(relevance, logits, resolved, layer_sums, node_sums, build.layer_names, self,
                           relevances, activations)

    def __repr__(self) -> str:
        return (f"Explainer(rules={self.rules.name!r}, layers={len(self.layer_names)}, "
                f"input={self.input_shape})")


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` are the same device here (``model.to("cuda")`` gives the one, tensors the other)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)
