"""Speed benchmark: lrpc against a plain forward, an input-gradient pass, zennit and captum (when installed).

    python benchmarks/speed.py                      # the full table (tens of minutes on 2 cores)
    python benchmarks/speed.py --quick              # ResNet-50 and VGG-16 at batch 8, a few minutes
    python benchmarks/speed.py --json out.json --threads 1 --models resnet50 --batches 8

Timing: every method of one (model, batch) is set up first, warmed up once, then timed round-robin — the order
rotates each round — so machine noise hits all methods alike; the table gives the median, the spread
(max − min) / median of the rounds, images/s and the ratios to the plain forward and to the input-gradient pass
of the same model and batch, all from the same run. A ratio is the median of the per-round ratios: on a shared
host the speed drifts by tens of percent over minutes, and that drift cancels within a round. Weights are random (no downloads): the timings do not
depend on them, except lrpc's data-dependent z+ fallback (the `default` preset), which runs where a z+ output
is exactly zero.

Memory: each method runs once in a fresh subprocess; the peak resident set size (VmHWM, reset through
/proc/self/clear_refs just before the call) is read after it. "call MB" is that peak minus the resident size
just before the call — the working memory of the call, beyond the model, lrpc's rule constants and the torch
runtime, which are resident before it — and "peak RSS MB" the absolute peak of the process.

Compile time: ``lrpc.compile`` (trace, canonicalise, annotate, relevance pass; no torch.compile), median of
three after one warm-up, in a fresh subprocess; for the torch.compile'd rows (inductor with freezing: the
weights become constants, folded and pre-packed) the first call, which compiles.

GPU: ``--device cuda [--dtype bfloat16] [--tf32] [--compile-mode reduce-overhead]`` (CUDA graphs) times every
call up to ``torch.cuda.synchronize()``; the memory columns are then the GPU's (torch.cuda.max_memory_allocated:
"call MB" the peak minus what was allocated before the call, "peak" the peak). ``benchmarks/gpu.sh`` runs the
ResNet-50 GPU measurement in one command.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torchvision
from torch import nn

import lrpc

CLASSES = 1000
SIZE = 224
PRESETS = ("otsuki2024", "default", "epsilon-plus-flat")   # the last one has zennit's EpsilonPlusFlat rules
COMPILED_PRESETS = ("otsuki2024", "default")
GOAL_PRESETS = ("otsuki2024", "default")
TRANSFORMER_PRESETS = ("default", "cp-lrp", "attnlrp")   # eager and compiled on the transformers
# The floor row each preset is compared with (benchmarks/README.md, "The floor"): z⁺ needs W⁺ on every layer's
# input and a transposed map, LRP-0 / ε with the bias in z divides by the forward's own output and needs only the
# transposed map. (epsilon-plus-flat: z⁺ on the convs, which dominate; cp-lrp / attnlrp: LRP-0 on the linears.)
FLOOR_OF = {"otsuki2024": "floor z+", "default": "floor z+", "epsilon-plus-flat": "floor z+",
            "cp-lrp": "floor epsilon", "attnlrp": "floor epsilon"}


def _vit_s_16() -> nn.Module:
    # torchvision's VisionTransformer class (nn.MultiheadAttention, the spelling LXT's ViT map patches) at ViT-S/16
    model = torchvision.models.VisionTransformer(image_size=SIZE, patch_size=16, num_layers=12, num_heads=6,
                                                 hidden_dim=384, mlp_dim=1536, num_classes=CLASSES)
    nn.init.normal_(model.heads.head.weight, std=0.02)   # torchvision's zero head: every logit, so cp-lrp's start, 0
    return model


def _swin_t() -> nn.Module:
    # timm's Swin-T (the rows measured so far; torchvision's swin_t compiles too since 0ff1ce9)
    import timm
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=CLASSES)


TRANSFORMERS = {"vit_s_16": _vit_s_16, "swin_t": _swin_t}


def _preset_applies(preset: str, presets_for_cnns: tuple[str, ...]) -> Callable[[str], bool]:
    return lambda arch: preset in (TRANSFORMER_PRESETS if arch in TRANSFORMERS else presets_for_cnns)


# ------------------------------------------------------------------------------------------------ methods
@dataclass
class Method:
    """A way to explain (or just run) a batch: ``setup(model, x, target, stack)`` returns the timed call.

    Methods of one group are set up together and timed round-robin in one process; the torch.compile'd group
    runs apart (with its own forward and input-gradient rounds) so that no process holds every method's
    constants at once (VGG-16 at batch 32 would not fit in this machine's 23 GB)."""

    name: str
    setup: Callable[..., Callable[[], object]]
    applies: Callable[[str], bool] = lambda arch: True
    group: str = "eager"   # "eager" rows also get their memory measured; "compiled" ones do not (compiling)


def _forward(model, x, target, stack):
    def run():
        with torch.inference_mode():
            return model(x)
    return run


def _input_gradient(model, x, target, stack):
    """d logit_target / d x with the parameters frozen: what a gradient-based explanation costs."""
    def run():
        xg = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(xg).gather(1, target[:, None]).sum(), xg)
        return grad
    return run


def _lrpc(preset: str, compiled: bool = False):
    def setup(model, x, target, stack):
        explainer = lrpc.compile(model, preset, example_input=x[:1])
        eager = explainer(x, target).relevance if compiled else None
        if compiled:   # inductor with freezing (weights as constants: folded, pre-packed); one graph per batch
            explainer.compile(**compile_options())

        def run():
            return explainer(x, target)
        run.eager_relevance = eager   # what the compiled rows are compared with
        return run
    return setup


def _floor(family: str):
    """The cheapest pass a rule family allows: the forward, then for every conv and linear layer (last to first)
    only the maps its rule cannot do without, on the inputs the forward saw — ``z+``: W⁺ on the layer input
    (W⁺ and W⁻ on its two sign parts where the input is signed) and as many transposed maps; ``epsilon``: one
    transposed map (z is the forward's own output). Maps as lrpc runs them (lrpc.linear_maps), no elementwise
    work, no relevance bookkeeping; attention's own products (an nn.MultiheadAttention's in-projection) are not
    counted, so on torchvision's ViT the floor is a little low. Hooks on a copy of the model."""
    from lrpc.linear_maps import LINEAR_MAPS

    def setup(model, x, target, stack):
        model = copy.deepcopy(model)
        layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        seen: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
        for layer in layers:
            handle = layer.register_forward_hook(lambda m, args, out: seen.__setitem__(m, (args[0], out)))
            stack.callback(handle.remove)
        with torch.inference_mode():
            model(x)
        plan = []
        for layer in (layer for layer in layers if layer in seen):   # MultiheadAttention reads its out_proj's weight
            conv = isinstance(layer, nn.Conv2d)
            linear_map = LINEAR_MAPS["conv" if conv else "linear"]
            args = (layer.stride, layer.padding, layer.dilation, layer.groups) if conv else ()
            w = layer.weight.detach()
            signed = bool((seen[layer][0] < 0).any())
            weights = [w] if family == "epsilon" else [w.clamp(min=0)] + ([w.clamp(max=0)] if signed else [])
            plan.append((layer, linear_map, args, weights))

        def run():
            with torch.inference_mode():
                out = model(x)
                for layer, linear_map, args, weights in reversed(plan):
                    a, y = seen[layer]
                    for w in weights:
                        s = y if family == "epsilon" else linear_map.forward(a, w, None, args)
                        linear_map.transpose(s, a, w, args)
                return out
        return run
    return setup


def _zennit(model, x, target, stack):
    """zennit's EpsilonPlusFlat with its ResNet / VGG canonizer, attached once to a copy of the model (the
    canonizers edit the model they are attached to)."""
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer
    canonizer = ResNetCanonizer() if hasattr(model, "layer1") else VGGCanonizer()
    attributor = stack.enter_context(Gradient(model=copy.deepcopy(model),
                                              composite=EpsilonPlusFlat(canonizers=[canonizer])))
    onehot = torch.eye(CLASSES, device=x.device, dtype=x.dtype)[target]
    return lambda: attributor(x, onehot)[1]


def _captum(model, x, target, stack):
    from captum.attr import LRP
    explainer = LRP(copy.deepcopy(model))
    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # "input did not require gradients": it sets them itself
            return explainer.attribute(x, target=target)
    return run


def _installed(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:
        return False


BASELINES = ("forward", "input-gradient", "floor z+", "floor epsilon")   # timed in every process


def methods(compiled: bool) -> list[Method]:
    out = [Method("forward", _forward), Method("input-gradient", _input_gradient),
           Method("floor z+", _floor("z+")),
           Method("floor epsilon", _floor("epsilon"), applies=lambda arch: arch in TRANSFORMERS)]
    every = dict.fromkeys((*PRESETS, *TRANSFORMER_PRESETS))
    out += [Method(f"lrpc {p}", _lrpc(p), applies=_preset_applies(p, PRESETS)) for p in every]
    if compiled:
        out += [Method(f"lrpc {p} compiled", _lrpc(p, compiled=True), group="compiled",
                       applies=_preset_applies(p, COMPILED_PRESETS))
                for p in dict.fromkeys((*COMPILED_PRESETS, *TRANSFORMER_PRESETS))]
    if _installed("zennit"):
        out.append(Method("zennit EpsilonPlusFlat", _zennit,   # its canonizers: ResNet and VGG only
                          applies=lambda arch: arch.startswith(("resnet", "vgg"))))
    if _installed("captum"):   # captum's LRP has no rule for residual adds: VGG only
        out.append(Method("captum LRP", _captum, applies=lambda arch: arch.startswith("vgg")))
    return out


# ------------------------------------------------------------------------------------------------ helpers
MEMORY_FORMAT = torch.contiguous_format   # --channels-last: model and batch stored channels-last, for every method
DEVICE = torch.device("cpu")              # --device: model, batch and explainers, for every method
DTYPE = torch.float32                     # --dtype
COMPILE_MODE: str | None = None           # --compile-mode: torch.compile's mode (None: inductor with freezing)
TF32 = False                              # --tf32: float32 matmuls and convolutions on tensor cores (CUDA)


def make_inputs(arch: str, batch: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The model and a batch with targets, on --device in --dtype (targets stay int64). The targets are the
    predicted classes, as an explanation without a target has them: a random class of a random-weight model has
    a softmax probability of 1e-14–1e-42, and a relevance pass started there runs in denormal floats, which the
    CPU computes several times slower (ResNet-50 `default`, batch 8: 13.4 s against 2.4 s of CPU time with
    denormals flushed) — the old tables' softmax-start rows measured that."""
    x, _ = make_batch(batch)
    model, x = make_model(arch).to(device=DEVICE, dtype=DTYPE), x.to(device=DEVICE, dtype=DTYPE)
    with torch.no_grad():   # not inference_mode: the input-gradient row gathers with these targets under autograd
        target = model(x).argmax(1)
    return model, x, target


def synchronize() -> None:
    """Wait for the device: CUDA calls return before their kernels finish."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def compile_options() -> dict:
    """torch.compile's arguments for the compiled rows."""
    if COMPILE_MODE is not None:
        return {"dynamic": False, "mode": COMPILE_MODE}
    return {"dynamic": False, "options": {"freezing": True}}


def make_model(arch: str) -> nn.Module:
    torch.manual_seed(0)
    model = TRANSFORMERS[arch]() if arch in TRANSFORMERS else torchvision.models.get_model(arch, weights=None,
                                                                                             num_classes=CLASSES)
    return model.eval().requires_grad_(False).to(memory_format=MEMORY_FORMAT)


def make_batch(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 3, SIZE, SIZE, generator=g).contiguous(memory_format=MEMORY_FORMAT)
    return x, torch.randint(0, CLASSES, (batch,), generator=g)


def _child() -> list[str]:
    """The command line of a measuring subprocess, with this run's memory format."""
    return [sys.executable, __file__, *(["--channels-last"] if MEMORY_FORMAT is torch.channels_last else []),
            "--device", str(DEVICE), "--dtype", str(DTYPE).removeprefix("torch."), *(["--tf32"] if TF32 else []),
            *(["--compile-mode", COMPILE_MODE] if COMPILE_MODE else [])]


def paired_ratio(a: "Row", b: "Row") -> float:
    """Median over rounds of a's time / b's time in the same round: the machine's drift over a run (large on a
    shared host) cancels within a round, where a ratio of two medians would keep it."""
    return statistics.median(x / y for x, y in zip(a.rounds, b.rounds))


def paired_cpu_ratio(a: "Row", b: "Row") -> float:
    return statistics.median(x / y for x, y in zip(a.cpu_rounds, b.cpu_rounds))


def _status(field_name: str) -> int:
    """A field of /proc/self/status in kB."""
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field_name}:\s+(\d+)", f.read()).group(1))


def load() -> str:
    with contextlib.suppress(OSError), open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])
    return "?"


def lrpc_commit() -> str:
    """The commit of the lrpc being measured (where it is a git checkout)."""
    result = subprocess.run(["git", "-C", os.path.dirname(lrpc.__file__), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True)
    return result.stdout.strip() or "?"


def cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


# -------------------------------------------------------------------------------------------- measurement
@dataclass
class Row:
    model: str
    batch: int
    method: str
    group: str                         # the process it was timed in, with that group's forward and gradient
    median_s: float                    # wall clock
    spread: float                      # (max - min) / median of the wall-clock rounds
    cpu_s: float                       # CPU time of the process (with one thread: wall clock minus preemption)
    cpu_spread: float
    rounds: list[float] = field(default_factory=list)
    cpu_rounds: list[float] = field(default_factory=list)
    first_call_s: float = 0.0          # warm-up call: for torch.compile'd rows, compiling
    images_per_s: float = 0.0
    x_forward: float = 0.0             # wall-clock ratios, paired by round (``paired_ratio``)
    x_input_gradient: float = 0.0
    cpu_x_forward: float = 0.0         # CPU-time ratios
    cpu_x_input_gradient: float = 0.0
    call_mb: float | None = None
    peak_rss_mb: float | None = None
    conservation_error: float | None = None   # lrpc rows: the largest per-sample conservation error
    diff_vs_eager: float | None = None        # compiled rows: max |R - R_eager| / max |R_eager|
    x_floor: float | None = None              # lrpc rows: wall-clock ratio to the rule family's floor, paired by round
    load_before: float | None = None          # 1-minute load average when this row's process started timing
    load_after: float | None = None           # ... and when it finished


def floor_row(method: str) -> str | None:
    """The floor row an lrpc row is compared with (``lrpc default compiled`` → ``floor z+``), None for others."""
    if not method.startswith("lrpc "):
        return None
    return FLOOR_OF.get(method.removeprefix("lrpc ").removesuffix(" compiled"))


def busy(load_average: float | None) -> bool:
    """A load above the core count: the row measured its share of an oversubscribed CPU, not its speed."""
    return load_average is not None and load_average > (os.cpu_count() or 1)


def time_cell_here(arch: str, batch: int, chosen: list[Method], repeats: int, log) -> list[Row]:
    """Set up ``chosen`` (one group, with the baselines), warm each up once, then time them round-robin."""
    group = next((m.group for m in chosen if m.name not in BASELINES), "eager")
    model, x, target = make_inputs(arch, batch)
    calls, first, checks = {}, {}, {}
    with contextlib.ExitStack() as stack:
        for m in chosen:
            calls[m.name] = m.setup(model, x, target, stack)
            start = time.perf_counter()
            result = calls[m.name]()
            synchronize()
            first[m.name] = time.perf_counter() - start
            if isinstance(result, lrpc.Explanation):
                checks[m.name] = conservation_and_difference(result, getattr(calls[m.name], "eager_relevance", None))
            del result
            log(f"  {arch} b{batch} {m.name}: warm-up {first[m.name]:.2f}s")
        rounds = {name: [] for name in calls}
        cpu_rounds = {name: [] for name in calls}
        names = list(calls)
        load_before = os.getloadavg()[0]
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                start, cpu_start = time.perf_counter(), time.process_time()
                calls[name]()
                synchronize()
                rounds[name].append(time.perf_counter() - start)
                cpu_rounds[name].append(time.process_time() - cpu_start)
        load_after = os.getloadavg()[0]
    rows = []
    for name, ts in rounds.items():
        med, cpu = statistics.median(ts), statistics.median(cpu_rounds[name])
        conservation, difference = checks.get(name, (None, None))
        rows.append(Row(arch, batch, name, group, med, (max(ts) - min(ts)) / med, cpu,
                        (max(cpu_rounds[name]) - min(cpu_rounds[name])) / cpu, ts, cpu_rounds[name], first[name],
                        batch / med, conservation_error=conservation, diff_vs_eager=difference,
                        load_before=load_before, load_after=load_after))
    by_name = {r.method: r for r in rows}
    for r in rows:
        r.x_forward = paired_ratio(r, by_name["forward"])
        r.x_input_gradient = paired_ratio(r, by_name["input-gradient"])
        r.cpu_x_forward = paired_cpu_ratio(r, by_name["forward"])
        r.cpu_x_input_gradient = paired_cpu_ratio(r, by_name["input-gradient"])
        floor = by_name.get(floor_row(r.method))
        r.x_floor = None if floor is None else paired_ratio(r, floor)
    return rows


def conservation_and_difference(exp, eager_relevance) -> tuple[float, float | None]:
    """The largest per-sample conservation error and, for a compiled row, max |R − R eager| / max |R eager|."""
    difference = None
    if eager_relevance is not None:
        difference = float((exp.relevance - eager_relevance).abs().max() / eager_relevance.abs().max())
    return float(exp.conservation_error().max()), difference


def time_cell(arch: str, batch: int, group: str, names: list[str], repeats: int, threads: int) -> list[Row]:
    """``time_cell_here`` in a fresh subprocess: memory from one cell cannot pile onto the next."""
    result = subprocess.run([*_child(), "--cell-child", arch, str(batch), group, ",".join(names),
                             "--repeats", str(repeats), "--threads", str(threads)], text=True,
                            stdout=subprocess.PIPE)
    if result.returncode != 0:
        raise RuntimeError(f"timing subprocess for {arch} b{batch} ({group}) failed with {result.returncode}")
    return [Row(**row) for row in json.loads(result.stdout.strip().splitlines()[-1])]


def measure_memory_here(arch: str, batch: int, method: str) -> dict:
    """Run in the subprocess: set up, reset the peak RSS (on CUDA: the peak GPU memory), make ONE call, report."""
    chosen = next(m for m in methods(compiled=False) if m.name == method)   # eager methods only
    model, x, target = make_inputs(arch, batch)
    with contextlib.ExitStack() as stack:
        call = chosen.setup(model, x, target, stack)
        if DEVICE.type == "cuda":
            synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            call()
            synchronize()
            peak = torch.cuda.max_memory_allocated()
            return {"call_mb": (peak - before) / 2**20, "peak_rss_mb": peak / 2**20}
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")   # peak RSS := current RSS
        before = _status("VmRSS")
        call()
        peak = _status("VmHWM")
    return {"call_mb": (peak - before) / 1024, "peak_rss_mb": peak / 1024}


def measure_memory(arch: str, batch: int, method: str, threads: int) -> dict:
    result = subprocess.run([*_child(), "--memory-child", arch, str(batch), method,
                             "--threads", str(threads)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"memory subprocess for {arch} b{batch} {method} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def multi_target_times(arch: str, targets: int, repeats: int, preset: str = "otsuki2024") -> dict:
    """One image, its K highest-scoring classes: one ``explain_targets`` call against K explainer calls (rounds
    interleaved). Not classes 0..K-1: on a random-weight model their softmax probabilities are ~1e-40, and the
    relevance pass would run in denormal floats, several times slower on a CPU, measuring that instead."""
    model, x, _ = make_inputs(arch, 1)
    with torch.inference_mode():
        classes = model(x).topk(targets, dim=1).indices[0].tolist()
    explainer = lrpc.compile(model, preset, example_input=x)
    try:
        explainer.explain_targets(x, classes)
    except lrpc.LrpcError as refusal:   # e.g. a model whose attention holds the batch in dimension 1
        return {"model": arch, "preset": preset, "targets": targets, "refused": str(refusal)}
    calls = {"explain_targets": lambda: explainer.explain_targets(x, classes),
             "one call per target": lambda: [explainer(x, c) for c in classes]}
    rounds = {name: [] for name in calls}
    for name, call in calls.items():
        call()
    for r in range(repeats):
        for name in (list(calls) if r % 2 == 0 else list(calls)[::-1]):
            start = time.perf_counter()
            calls[name]()
            synchronize()
            rounds[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(ts) for name, ts in rounds.items()}
    return {"model": arch, "preset": preset, "targets": targets, **medians,
            "speedup": medians["one call per target"] / medians["explain_targets"]}


def compile_times_here(arch: str, repeats: int = 3) -> dict[str, float]:
    """Run in a fresh subprocess (a long-lived process full of explainers slows the garbage collector)."""
    model, example, _ = make_inputs(arch, 1)
    lrpc.compile(model, PRESETS[0], example_input=example)   # imports and first-use caches out of the timing
    out = {}
    for preset in PRESETS:
        ts = []
        for _ in range(repeats):
            start = time.perf_counter()
            lrpc.compile(model, preset, example_input=example)
            ts.append(time.perf_counter() - start)
        out[preset] = statistics.median(ts)
    return out


def compile_times(arch: str, threads: int) -> dict[str, float]:
    result = subprocess.run([*_child(), "--compile-child", arch, "--threads", str(threads)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"compile-time subprocess for {arch} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- reporting
def goals(rows: list[Row], compile_s: dict, memory_batch: int) -> list[dict]:
    """The issue's goals, checked on this run's numbers where the run has them."""
    at = {(r.model, r.batch, r.method): r for r in rows}
    out = []

    def add(goal, value, target, ok, note=""):
        out.append({"goal": goal, "value": value, "target": target, "met": ok, "note": note})

    for method, limit in (("otsuki2024", 3.0), ("default", 3.2), ("otsuki2024 compiled", 2.7)):
        r = at.get(("resnet50", 8, f"lrpc {method}"))
        if r:
            add(f"ResNet-50 b8 {method} / forward", round(r.x_forward, 2), f"<= {limit}", r.x_forward <= limit)
    r = at.get(("resnet50", 8, "lrpc otsuki2024 compiled"))
    if r:
        add("ResNet-50 b8 otsuki2024 compiled / input-gradient", round(r.x_input_gradient, 2), "<= 1.1",
            r.x_input_gradient <= 1.1)
    for model in dict.fromkeys(r.model for r in rows):   # compiled default against its own eager code
        eager, compiled = at.get((model, 8, "lrpc default")), at.get((model, 8, "lrpc default compiled"))
        if eager and compiled:
            ratio = compiled.x_forward / eager.x_forward
            add(f"{model} b8 default compiled / default eager", round(ratio, 2), "< 1", ratio < 1,
                "each × its own run's forward")
    for preset in ("cp-lrp", "attnlrp"):
        r = at.get(("swin_t", 8, f"lrpc {preset}"))
        if r:
            add(f"Swin-T b8 {preset} eager / input-gradient", round(r.x_input_gradient, 2), "<= 1.2",
                r.x_input_gradient <= 1.2)
    anchors = (("resnet50", "ResNet-50", "zennit EpsilonPlusFlat", ">= 3", lambda v: v >= 3, ("epsilon-plus-flat",)),
               ("vgg16", "VGG-16", "captum LRP", "> 1", lambda v: v > 1, (*GOAL_PRESETS, "epsilon-plus-flat")))
    for arch, label, method, target, met, presets in anchors:   # how many times faster lrpc is than each anchor
        other = at.get((arch, 8, method))
        for preset in presets:
            r = at.get((arch, 8, f"lrpc {preset}"))
            if other and r:
                speedup = paired_ratio(other, r)
                add(f"{label} b8 {method.split()[0]} / lrpc {preset}", round(speedup, 2), target, met(speedup))
    g = at.get(("resnet50", memory_batch, "input-gradient"))
    if g and g.call_mb:
        for preset in GOAL_PRESETS:
            r = at.get(("resnet50", memory_batch, f"lrpc {preset}"))
            if r and r.call_mb is not None:
                ratio = r.call_mb / g.call_mb
                add(f"ResNet-50 b{memory_batch} {preset} call memory / input-gradient", round(ratio, 2), "<= 1.5",
                    ratio <= 1.5, f"{r.call_mb:.0f} MB vs {g.call_mb:.0f} MB")
                ratio_rss = r.peak_rss_mb / g.peak_rss_mb
                add(f"ResNet-50 b{memory_batch} {preset} peak RSS / input-gradient", round(ratio_rss, 2),
                    "<= 1.5", ratio_rss <= 1.5, f"{r.peak_rss_mb:.0f} MB vs {g.peak_rss_mb:.0f} MB")
    for preset, seconds in compile_s.get("resnet50", {}).items():
        add(f"ResNet-50 lrpc.compile {preset}", round(seconds, 2), "< 2 s", seconds < 2)
    return out


def markdown(rows: list[Row], compile_s: dict, goal_rows: list[dict], env: dict, multi: list[dict]) -> str:
    lines = [f"torch {env['torch']}, {env['threads']} thread(s), {env['cpu']}, {env.get('device', 'cpu')}, "
             f"{env.get('dtype', 'float32')}{', TF32' if env.get('tf32') else ''}, "
             f"compile mode {env.get('compile_mode') or 'default (freezing)'}, {env.get('memory_format', 'contiguous')} "
             f"tensors; load average {env['load_before']} "
             f"before, {env['load_after']} after; {env['repeats']} rounds per method, medians (ratios: median of "
             f"the per-round ratios); lrpc "
             f"{env['lrpc'].split(' @ ')[-1]}, {env['date']}.{'' if env.get('complete') else ' PARTIAL RUN.'}",
             "Compiled rows are timed in their own process, round-robin with a forward and an input-gradient pass "
             "of their own: their ratios are to those.", ""]
    lines += ["| model | batch | method | wall ms | spread | CPU ms | spread | images/s | × forward wall / CPU | "
              "× input-grad wall / CPU | × floor | call MB | peak RSS MB | load before → after |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        mem = ("–", "–") if r.call_mb is None else (f"{r.call_mb:.0f}", f"{r.peak_rss_mb:.0f}")
        floor = "–" if r.x_floor is None else f"{r.x_floor:.2f}"
        loads = "–" if r.load_before is None else (f"{r.load_before:.1f} → {r.load_after:.1f}"
                                                   f"{' **BUSY**' if busy(max(r.load_before, r.load_after)) else ''}")
        lines.append(f"| {r.model} | {r.batch} | {r.method} | {1e3 * r.median_s:.0f} | {100 * r.spread:.0f}% | "
                     f"{1e3 * r.cpu_s:.0f} | {100 * r.cpu_spread:.0f}% | {r.images_per_s:.1f} | "
                     f"{r.x_forward:.2f} / {r.cpu_x_forward:.2f} | {r.x_input_gradient:.2f} / "
                     f"{r.cpu_x_input_gradient:.2f} | {floor} | {mem[0]} | {mem[1]} | {loads} |")
    if any(busy(r.load_before) or busy(r.load_after) for r in rows if r.load_before is not None):
        lines += ["", f"**BUSY**: the 1-minute load average exceeded this host's {os.cpu_count()} cores while the "
                  "row's process timed it: its times measure a share of an oversubscribed CPU; rerun it idle."]
    compiled = [r for r in rows if r.method.endswith("compiled")]
    explained = [r for r in rows if r.conservation_error is not None]
    if explained:
        lines += ["", "| model | batch | method | conservation error (max over the batch) | "
                  "max abs(R − R eager) / max abs(R eager) |", "|---|---:|---|---:|---:|"]
        lines += [f"| {r.model} | {r.batch} | {r.method} | {r.conservation_error:.1e} | "
                  f"{'–' if r.diff_vs_eager is None else f'{r.diff_vs_eager:.1e}'} |" for r in explained]
    lines += ["", "| model | preset | lrpc.compile s (trace + pass) |", "|---|---|---:|"]
    for arch, times in compile_s.items():
        lines += [f"| {arch} | {preset} | {seconds:.2f} |" for preset, seconds in times.items()]
    if compiled:
        lines += ["", "| model | batch | method | torch.compile first call s |", "|---|---:|---|---:|"]
        lines += [f"| {r.model} | {r.batch} | {r.method} | {r.first_call_s:.0f} |" for r in compiled]
    if multi:
        lines += ["", "| model | preset | one image, K classes | explain_targets ms | K calls ms | speed-up |",
                  "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {m['model']} | {m['preset']} | {m['targets']} | {1e3 * m['explain_targets']:.0f} | "
                  f"{1e3 * m['one call per target']:.0f} | {m['speedup']:.2f} |" if "refused" not in m else
                  f"| {m['model']} | {m['preset']} | {m['targets']} | refused: {m['refused'][:120]} | – | – |"
                  for m in multi]
    lines += ["", "| goal | value | target | met | note |", "|---|---:|---|---|---|"]
    lines += [f"| {g['goal']} | {g['value']} | {g['target']} | {'yes' if g['met'] else '**no**'} | {g['note']} |"
              for g in goal_rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-50 and VGG-16 at batch 8, 3 rounds, "
                        "no torch.compile")
    parser.add_argument("--models", default=None, help="comma-separated (default resnet18,resnet50,vgg16; "
                        "also vit_s_16, swin_t)")
    parser.add_argument("--batches", default=None, help="comma-separated (default 1,8,32)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per method (default 5)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help=f"torch threads (default {torch.get_num_threads()})")
    parser.add_argument("--methods", default=None, help="comma-separated subset of method names")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd lrpc rows")
    parser.add_argument("--compile-batches", default="8", help="batch sizes that get torch.compile'd rows "
                        "(default 8; each compile takes minutes on a CPU)")
    parser.add_argument("--channels-last", action="store_true", help="store model and inputs channels-last for "
                        "every method (CPU convolutions run faster that way; lrpc keeps the layout throughout)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]: model, inputs and explainers")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "float64"),
                        help="dtype of model, inputs and explainers (default float32)")
    parser.add_argument("--tf32", action="store_true", help="CUDA: float32 matmuls and convolutions on TF32 "
                        "tensor cores")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode for the compiled rows, e.g. "
                        "reduce-overhead (CUDA graphs) or max-autotune (default: inductor with freezing)")
    parser.add_argument("--no-compile-time", action="store_true", help="skip the lrpc.compile timing (a fresh "
                        "process per model, four compiles per preset)")
    parser.add_argument("--memory-batch", type=int, default=None,
                        help="batch size whose rows get memory measured (default: the largest; 0 = none)")
    parser.add_argument("--targets", type=int, default=5, help="K for the multi-target timing: one image, K "
                        "classes, one explain_targets call against K calls (default 5; 1 = skip)")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this path")
    parser.add_argument("--refuse-busy", action="store_true", help="stop (keeping what was measured) instead of "
                        "timing a table while the 1-minute load average exceeds the core count; without it such "
                        "rows are marked BUSY")
    parser.add_argument("--from-json", default=None, help="print the tables of a (possibly partial) JSON result")
    parser.add_argument("--memory-child", nargs=3, metavar=("MODEL", "BATCH", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--compile-child", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--cell-child", nargs=4, metavar=("MODEL", "BATCH", "GROUP", "METHODS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    global MEMORY_FORMAT, DEVICE, DTYPE, COMPILE_MODE, TF32
    MEMORY_FORMAT = torch.channels_last if args.channels_last else torch.contiguous_format
    DEVICE, DTYPE, COMPILE_MODE, TF32 = torch.device(args.device), getattr(torch, args.dtype), args.compile_mode, args.tf32
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = TF32

    def log(message):
        print(message, file=sys.stderr, flush=True)

    if args.memory_child:
        arch, batch, method = args.memory_child
        print(json.dumps(measure_memory_here(arch, int(batch), method)))
        return
    if args.compile_child:
        print(json.dumps(compile_times_here(args.compile_child)))
        return
    if args.cell_child:
        arch, batch, group, names = args.cell_child
        chosen = [m for m in methods(compiled=group == "compiled") if m.name in names.split(",")]
        rows = time_cell_here(arch, int(batch), chosen, args.repeats, log)
        print(json.dumps([asdict(r) for r in rows]))
        return
    if args.from_json:
        with open(args.from_json) as f:
            result = json.load(f)
        rows = [Row(**r) for r in result["rows"]]
        print(markdown(rows, result["compile_s"], result["goals"], result["environment"], result["multi_target"]))
        return

    models = (args.models or ("resnet50,vgg16" if args.quick else "resnet18,resnet50,vgg16")).split(",")
    batches = [int(b) for b in (args.batches or ("8" if args.quick else "1,8,32")).split(",")]
    repeats = args.repeats or (3 if args.quick else 5)
    memory_batch = max(batches) if args.memory_batch is None else args.memory_batch
    chosen_all = methods(compiled=not (args.quick or args.no_compile))
    if args.methods:
        wanted = set(args.methods.split(",")) | set(BASELINES)
        chosen_all = [m for m in chosen_all if m.name in wanted]

    env = {"torch": torch.__version__, "threads": args.threads, "cpu": cpu_name(), "python": platform.python_version(),
           "device": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu",
           "dtype": args.dtype, "tf32": TF32, "compile_mode": COMPILE_MODE,
           "memory_format": "channels_last" if args.channels_last else "contiguous",
           "load_before": load(), "repeats": repeats, "date": time.strftime("%Y-%m-%d %H:%M"),
           "lrpc": f"{lrpc.__file__} @ {lrpc_commit()}", "complete": False}
    log(f"lrpc from {env['lrpc']}")
    rows: list[Row] = []
    compile_s: dict = {}
    multi: list[dict] = []

    def save():   # after every cell, so that a crash (or an OOM kill) keeps what was measured
        env["load_after"] = load()
        goal_rows = goals(rows, compile_s, memory_batch)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"environment": env, "rows": [asdict(r) for r in rows], "compile_s": compile_s,
                           "multi_target": multi, "goals": goal_rows}, f, indent=1)
        return goal_rows

    for arch in models:
        applicable = [m for m in chosen_all if m.applies(arch)]
        for batch in batches:
            for group in ("eager", "compiled"):
                names = [m.name for m in applicable if m.group == group]
                if group == "compiled" and str(batch) not in args.compile_batches.split(","):
                    continue
                if not names:
                    continue
                names = [*(m.name for m in applicable if m.name in BASELINES),
                         *(n for n in names if n not in BASELINES)]
                log(f"{arch} batch {batch} ({group}): timing {len(names)} methods, load {load()}")
                if args.refuse_busy and busy(os.getloadavg()[0]):
                    save()
                    raise SystemExit(f"load average {load()} exceeds the {os.cpu_count()} cores: refusing to time "
                                     f"{arch} batch {batch} ({group}); the rows so far are in {args.json}")
                part = time_cell(arch, batch, group, names, repeats, args.threads)
                if group == "eager" and batch == memory_batch:
                    for r in part:
                        log(f"  memory {arch} b{batch} {r.method}")
                        mem = measure_memory(arch, batch, r.method, args.threads)
                        r.call_mb, r.peak_rss_mb = mem["call_mb"], mem["peak_rss_mb"]
                rows += [r for r in part if group == "eager" or r.method not in BASELINES]
                save()
    for arch in models if not args.no_compile_time else ():
        compile_s[arch] = compile_times(arch, args.threads)
    if args.targets > 1:
        for arch in models:
            log(f"{arch}: {args.targets} targets of one image")
            multi.append(multi_target_times(arch, args.targets, repeats))
    env["complete"] = True
    print(markdown(rows, compile_s, save(), env, multi))


if __name__ == "__main__":
    main()
