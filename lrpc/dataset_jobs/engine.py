"""``lrpc.explain_dataset``: explain every image of a folder into one job folder, on one or many processes.

One run: join the ranks (``distributed``); load the model on every rank; rank 0 lists the images, opens the
job folder (creating, resuming or refusing it) and finds the units still missing, and shares that plan; every
rank compiles the explainer once and explains its share of the missing units (every ``world_size``-th one),
loading the next unit's images in threads while it explains the current one and handing results to the store
writer thread; after a barrier, rank 0 merges the table parts, writes the summary and ``_SUCCESS``.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..data.folder import open_image
from ..models.loading import NORMALIZATIONS, LoadedModel, ModelInput, input_normalization, load_model
from ..presets import preset_for_input
from ..compiler import compile as compile_explainer
from ..data.folder import preprocess_image
from ..debug.accounting import absorber
from ..errors import LrpcError
from ..op_kinds import kind_of
from ..metrics.perturbation import PROTOCOLS, insertion_deletion, resolve_protocol
from ..presets import PRESETS
from ..views import heatmap_view
from .concepts import ConceptLayer, concept_layers, rank_references, unit_statistics
from .distributed import join_ranks, pick_device
from .job import JobFolder
from .progress import JobProgress, format_summary, summarize
from .store import DTYPES, StoreWriter, UnitMaps, create_store, open_store
from .table import done_units, merge_parts, table_schema, write_part
from .worklist import WorkList, scan_images, unit_count, unit_indices

__all__ = ["METRICS", "explain_dataset"]

METRICS = ("insertion", "deletion", "id")
CHANNELS = 3
# Test-only fault injection: "UNITS" or "RANK:UNITS" makes that rank (any rank) exit abruptly once it has
# committed UNITS units, on a job's first torchrun attempt only (so --max-restarts can finish the job).
FAULT_HOOK = "LRPC_TEST_EXIT_AFTER_UNITS"
FAULT_EXIT_CODE = 75


@dataclass(frozen=True)
class _Plan:
    """What rank 0 decided and every rank follows."""

    work: WorkList
    config: dict
    pending: tuple[int, ...]
    finished: dict | None  # the summary of a job that was already complete


def explain_dataset(root: str | os.PathLike, output: str | os.PathLike, *, model: str | nn.Module,
                    weights: str | os.PathLike | None = None, rules: str = "default", target: str | int = "pred",
                    unit: int = 32, relevance: bool = False, sign: str = "signed", smooth=None,
                    quantize: int | None = None, metrics: Sequence[str] = (), protocol: str = "fair",
                    dtype: str = "float32", compile: bool = False, input_size: int | None = None,
                    resize: int | None = None, normalize: str = "model", device: str | None = None,
                    overwrite: bool = False, progress: bool = True, loader_threads: int = 4,
                    concepts: Sequence[str] | str = (), top: int = 16) -> dict:
    """Explain every image under ``root`` into the job folder ``output``; returns the job's summary.

    ``root`` holds class folders (label = folder) or images. ``model`` is a model spec as ``--model`` takes
    it (``"groundtruth"``, ``"resnet50"``, ``"pkg.module:factory"``, …) or an ``nn.Module``; ``weights`` a
    state_dict file. ``target``: ``"pred"``, ``"label"`` (the folder's class) or a class index. ``unit``
    images form one batch, one zarr chunk and one resumable step. ``relevance`` also stores the
    ``[C, H, W]`` input relevance. ``sign`` / ``smooth`` / ``quantize``: the view stored as the heatmap (and
    scored by the metrics), as in ``Explanation.heatmap``; the relevance stays raw. ``dtype="float16"`` stores
    maps scaled per map. ``metrics`` ⊆
    ``("insertion", "deletion", "id")`` under ``protocol`` (a name of ``lrpc.metrics.PROTOCOLS``).
    ``compile`` runs the explainer through ``torch.compile``. Run the same call under ``torchrun`` and every
    rank does its share; run it again after an interruption and only the missing units are explained.
    A job made with other settings is refused unless ``overwrite``. ``concepts`` names layers (module paths
    or node names; a comma-separated string works too) whose channels get reference examples: the ``top``
    images by relevance and by activation per channel, in ``JOB/concepts.parquet`` (``lrpc.dataset_jobs.concepts``).
    """
    metrics = _check_settings(rules, target, unit, metrics, protocol, dtype, input_size, resize, normalize,
                              loader_threads)
    concepts = _check_concepts(concepts, top)
    view = {"sign": sign, "smooth": smooth, "quantize": quantize}
    heatmap_view(torch.zeros(1, 1, 1), **view)   # refuses a bad view before any work
    start_time = time.perf_counter()
    with join_ranks() as ranks:
        loaded = _load(model, weights)
        size = input_size or loaded.input.size
        resize = resize or round(size * 256 / 224)
        if resize < size:
            raise LrpcError(f"resize {resize} is smaller than the input size {size}")
        mean, std = input_normalization(normalize, loaded)
        job = JobFolder(output)
        model_digest = _state_digest(loaded.model)
        config = {"model": loaded.spec, "model_sha256": model_digest, "rules": rules, "target": str(target),
                  "unit": unit, "relevance": relevance, **view, "dtype": dtype, "metrics": list(metrics),
                  "protocol": protocol if metrics else None, "input_size": size, "resize": resize,
                  "mean": list(mean), "std": list(std)}
        if concepts:   # only then, so jobs made without concepts keep their identity
            config.update(concepts=list(concepts), top=top)

        device = pick_device(device, ranks)
        model_on_device = loaded.model.to(device)
        # compiled before the job is opened: the concept layers' channel counts shape the store
        explainer, layers = _compile(model_on_device, preset_for_input(rules, mean, std),
                                     torch.zeros(1, CHANNELS, size, size, device=device), concepts)
        plan = ranks.share(partial(_open_job, job, Path(root), loaded, config, overwrite, layers))
        if plan.config["model_sha256"] != model_digest:
            raise LrpcError(f"rank {ranks.rank} built a model with other weights than rank 0 (a model with random "
                            "weights differs in every process: pass weights)")
        if plan.finished is not None:
            return plan.finished
        if compile:
            explainer = explainer.compile()
        explain_unit = _UnitExplainer(explainer, model_on_device, plan, ranks.rank, device, layers)
        if compile:
            _compile_in_turn(explain_unit, ranks)
        bar = JobProgress(job.parts, len(plan.work), unit, enabled=progress and ranks.is_main)
        started = time.perf_counter()
        try:
            _run_units(plan.pending[ranks.rank::ranks.world_size], plan, job, explain_unit, ranks.rank,
                       loader_threads, partial(_load_image, resize=resize, size=size, mean=mean, std=std))
            ranks.barrier()
        finally:
            bar.close()
        seconds = time.perf_counter() - started
        images_now = sum(len(unit_indices(u, unit, len(plan.work))) for u in plan.pending)
        run = {"ranks": ranks.world_size, "units": len(plan.pending), "images": images_now,
               "seconds": seconds, "images_per_second": images_now / seconds if seconds > 0 else None,
               "total_seconds": time.perf_counter() - start_time, "device": str(device), "compile": compile,
               "lrpc": __version__, "torch": torch.__version__}
        return ranks.share(partial(_finish, job, plan, explain_unit.schema, explain_unit.metric_columns, run,
                                   layers))


def _compile(model: nn.Module, rules, example: torch.Tensor, concepts: Sequence[str]):
    """The job's explainer, keeping the concept layers' relevance and activation, and those layers."""
    explainer = compile_explainer(model, rules, example_input=example)
    if not concepts:
        return explainer, []
    layers = concept_layers(explainer, concepts)
    return compile_explainer(model, rules, example_input=example, keep=[layer.node for layer in layers]), layers


def _check_concepts(concepts: Sequence[str] | str, top: int) -> tuple[str, ...]:
    if isinstance(concepts, str):
        concepts = [name.strip() for name in concepts.split(",") if name.strip()]
    concepts = tuple(concepts)
    if len(set(concepts)) != len(concepts) or any(not isinstance(name, str) or not name for name in concepts):
        raise LrpcError(f"concepts must name distinct layers, got {list(concepts)!r}")
    if not isinstance(top, int) or top < 1:
        raise LrpcError(f"top must be a positive integer, got {top!r}")
    return concepts


def _check_settings(rules, target, unit, metrics, protocol, dtype, input_size, resize, normalize,
                    loader_threads) -> tuple[str, ...]:
    if not isinstance(rules, str) or rules not in PRESETS:
        raise LrpcError(f"rules must be a preset name ({', '.join(PRESETS)}), got {rules!r}")
    if not (target in ("pred", "label") or str(target).isdigit()):
        raise LrpcError(f"target must be 'pred', 'label' or a class index, got {target!r}")
    for name, value in (("unit", unit), ("input_size", input_size), ("resize", resize),
                        ("loader_threads", loader_threads)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise LrpcError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(metrics, str):
        metrics = [name for name in metrics.split(",") if name]
    unknown = [name for name in metrics if name not in METRICS]
    if unknown:
        raise LrpcError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    if protocol not in PROTOCOLS:
        raise LrpcError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if dtype not in DTYPES:
        raise LrpcError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if normalize not in NORMALIZATIONS:
        raise LrpcError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    return tuple(name for name in METRICS if name in metrics)  # one canonical order for the config


def _load(model: str | nn.Module, weights) -> LoadedModel:
    if isinstance(model, nn.Module):
        if weights is not None:
            raise LrpcError("weights are for a model spec; load them into the nn.Module yourself")
        return LoadedModel(model.eval(), f"{type(model).__module__}.{type(model).__qualname__}", ModelInput())
    return load_model(model, weights)


def _state_digest(model: nn.Module) -> str:
    """sha256 of the model's parameters and buffers: the job's identity of "the same weights"."""
    sha = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        sha.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        sha.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def _open_job(job: JobFolder, root: Path, loaded: LoadedModel, config: dict, overwrite: bool,
              layers: Sequence[ConceptLayer]) -> _Plan:
    """Rank 0: list the images, create / resume / refuse the job folder, and find the units left to do."""
    work = scan_images(root, loaded.input.class_names)
    if work.labels is None and (config["target"] == "label" or _needs_labels(config)):
        why = "--target label" if config["target"] == "label" else f"the {config['protocol']} protocol"
        raise LrpcError(f"{why} needs the images' labels: arrange {root} as class folders (root/<class>/<image>)")
    config = {**config, "images": len(work), "image_list_sha256": work.digest()}
    info = {"root": str(root.resolve()), "classes": list(work.classes), "label_source": work.label_source,
            "units": unit_count(len(work), config["unit"]), "lrpc": __version__, "torch": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if layers:
        info["concepts"] = {layer.layer: layer.describe() for layer in layers}
    store = partial(create_store, n_images=len(work), unit=config["unit"], channels=CHANNELS,
                    size=config["input_size"], relevance=config["relevance"], dtype=config["dtype"],
                    concepts={layer.layer: layer.channels for layer in layers})
    job.open(config, info, overwrite=overwrite, create_store=store)
    if job.complete:
        return _Plan(work, config, (), {**job.read_summary(), "already_complete": True})
    done = done_units(job.parts)
    return _Plan(work, config, tuple(u for u in range(info["units"]) if u not in done), None)


def _needs_labels(config: dict) -> bool:
    if not config["metrics"]:
        return False
    protocol = PROTOCOLS[config["protocol"]]
    return protocol.score_class == "label" or protocol.only_correct


def _load_image(path: Path, *, resize: int, size: int, mean, std) -> torch.Tensor | str:
    """The model input of one image, or why it could not be read (recorded in its row; the job goes on)."""
    try:
        return preprocess_image(open_image(path), resize, size, mean, std)
    except LrpcError as exc:
        return str(exc)
    except Exception as exc:  # a decoder failing on a bad file in any other way is still that file's problem
        return f"cannot read image {path}: {type(exc).__name__}: {exc}"


def _prefetched(units: Sequence[int], plan: _Plan, load, threads: int) -> Iterator[tuple[int, list]]:
    """(unit, its images or error strings), the next unit's images loading while the caller works."""
    n_images, unit = len(plan.work), plan.config["unit"]
    with ThreadPoolExecutor(threads, thread_name_prefix="lrpc-loader") as pool:
        def submit(unit_id: int) -> list:
            return [pool.submit(load, plan.work.file(i)) for i in unit_indices(unit_id, unit, n_images)]

        upcoming = submit(units[0]) if units else []
        for position, unit_id in enumerate(units):
            current = upcoming
            if position + 1 < len(units):
                upcoming = submit(units[position + 1])
            yield unit_id, [future.result() for future in current]


def _run_units(units: Sequence[int], plan: _Plan, job: JobFolder, explain_unit: "_UnitExplainer", rank: int,
               threads: int, load) -> None:
    writer = StoreWriter(open_store(job.maps), plan.config["dtype"])
    fault_after = _fault_after(rank)
    try:
        for count, (unit_id, images) in enumerate(_prefetched(units, plan, load, threads), 1):
            writer.submit(explain_unit(unit_id, images, partial(write_part, job.parts, unit_id,
                                                                schema=explain_unit.schema)))
            if fault_after is not None and count >= fault_after:
                writer.close()
                print(f"{FAULT_HOOK}: rank {rank} exits after {count} units", file=sys.stderr, flush=True)
                os._exit(FAULT_EXIT_CODE)
    finally:
        writer.close()  # what was explained is written even when the loop fails


def _fault_after(rank: int) -> int | None:
    spec = os.environ.get(FAULT_HOOK)
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return None
    rank_part, _, units = spec.rpartition(":")
    return int(units) if rank_part in ("", str(rank)) else None


def _compile_in_turn(explain_unit: "_UnitExplainer", ranks) -> None:
    """torch.compile compiles at the first call: ranks sharing a machine would all compile the same graph cold at
    once, each for minutes on the shared cores. Each machine's first rank (LOCAL_RANK 0) compiles first and fills
    the on-disk cache (``lrpc.compile_cache``) while the others wait at a barrier; they then compile from it."""
    if ranks.world_size == 1:
        return
    if ranks.local_rank == 0:
        explain_unit.warm_up()
    ranks.barrier()
    if ranks.local_rank != 0:
        explain_unit.warm_up()


class _UnitExplainer:
    """One unit in: its maps (NaN rows for images that failed) and its table rows out."""

    def __init__(self, explainer, model: nn.Module, plan: _Plan, rank: int, device: torch.device,
                 layers: Sequence[ConceptLayer]):
        config = plan.config
        self.layers = layers
        self.explainer, self.model, self.work, self.rank, self.device = explainer, model, plan.work, rank, device
        self.unit, self.target, self.relevance = config["unit"], config["target"], config["relevance"]
        self.view = {name: config[name] for name in ("sign", "smooth", "quantize")}
        self.mean, self.std, self.size = config["mean"], config["std"], config["input_size"]
        self.metrics = config["metrics"]
        self.protocol = resolve_protocol(config["protocol"]) if self.metrics else None
        # (column, kind, score): the protocol's first score unprefixed, the others prefixed by their name
        self.metric_spec = [((kind if score == self.protocol.scores[0] else f"{score}_{kind}"), kind, score)
                            for score in self.protocol.scores for kind in self.metrics] if self.metrics else []
        self.metric_columns = [column for column, _, _ in self.metric_spec]
        # Nodes that take relevance out of the flow by design (biases, stabilisers, constant inputs): the
        # 'absorbed' column exists exactly for rule sets that have them, so every unit's part has one schema.
        plans = explainer.plans
        self.absorbers = [k for k, name in enumerate(explainer.layer_names)
                          if absorber(plans[name]) or kind_of(plans[name]).absorbs_constant]
        self.schema = table_schema(self.metric_columns, bool(self.absorbers))
        if self.target.isdigit() and int(self.target) >= explainer.num_classes:
            raise LrpcError(f"target {self.target} out of range for {explainer.num_classes} classes")
        if self.target == "label" and max(plan.work.labels) >= explainer.num_classes:
            raise LrpcError(f"class folders give labels up to {max(plan.work.labels)}, but the model has "
                            f"{explainer.num_classes} classes")

    def warm_up(self) -> None:
        """One call on a full unit of zeros with the target kind real units use: what torch.compile specialises
        on (shapes, a target tensor or None), so that the units that follow reuse that compiled code."""
        x = torch.zeros(self.unit, CHANNELS, self.size, self.size, device=self.device)
        target = None if self.target == "pred" else torch.zeros(self.unit, dtype=torch.long, device=self.device)
        self.explainer(x, target)

    def __call__(self, unit_id: int, images: list, commit) -> UnitMaps:
        began = time.perf_counter()
        indices = unit_indices(unit_id, self.unit, len(self.work))
        n = len(indices)
        rows: dict[str, list] = {name: [None] * n for name in self.schema.names}
        rows["index"] = list(indices)
        rows["path"] = [self.work.paths[i] for i in indices]
        rows["label"] = [self.work.label(i) for i in indices]
        rows["error"] = [item if isinstance(item, str) else None for item in images]
        rows["rank"] = [self.rank] * n
        heatmap = np.full((n, self.size, self.size), np.nan, np.float32)
        relevance = np.full((n, CHANNELS, self.size, self.size), np.nan, np.float32) if self.relevance else None
        good = [k for k, item in enumerate(images) if not isinstance(item, str)]
        concepts: dict[str, np.ndarray] = {}
        if good:
            self._explain(torch.stack([images[k] for k in good]).to(self.device), [indices[k] for k in good],
                          good, rows, heatmap, relevance, concepts)
        rows["seconds"] = [(time.perf_counter() - began) / n] * n
        return UnitMaps(unit_id, indices.start, heatmap, relevance, partial(commit, rows), concepts)

    def _explain(self, x: torch.Tensor, indices: list[int], good: list[int], rows: dict, heatmap: np.ndarray,
                 relevance: np.ndarray | None, concepts: dict) -> None:
        labels = None if self.work.labels is None else torch.tensor([self.work.labels[i] for i in indices])
        if self.target == "pred":
            target = None
        elif self.target == "label":
            target = labels.to(x.device)
        else:
            target = int(self.target)
        exp = self.explainer(x, target)
        heat = exp.heatmap(**self.view).float()
        heatmap[good] = heat.cpu().numpy()
        if relevance is not None:
            relevance[good] = exp.relevance.float().cpu().numpy()
        for layer in self.layers:
            statistics = unit_statistics(layer, exp.relevances[layer.node], exp.activations[layer.node])
            for name, values in statistics.items():   # rows of failed images: NaN scores, position -1
                missing = -1 if values.dtype.kind == "i" else np.nan
                concepts[name] = np.full((len(heatmap), *values.shape[1:]), missing, values.dtype)
                concepts[name][good] = values
        probabilities = exp.logits.float().softmax(1)
        predicted = probabilities.argmax(1)
        values = {"target": exp.target, "predicted": predicted,
                  "probability": probabilities.gather(1, predicted[:, None])[:, 0],
                  "start": exp.start, "relevance_sum": exp.relevance.sum((1, 2, 3)),
                  "conservation_error": exp.conservation_error()}
        if self.absorbers:
            values["absorbed"] = exp.absorbed_matrix[:, self.absorbers].sum(1)
        if self.metric_spec:
            result = insertion_deletion(self.model, x, heat, protocol=self.protocol, labels=labels,
                                        targets=exp.target, mean=self.mean, std=self.std, sample_ids=indices)
            for column, kind, score in self.metric_spec:
                values[column] = result.auc(kind, score)
        for name, tensor in values.items():
            column = rows[name]
            for k, value in zip(good, tensor.detach().cpu().tolist()):
                column[k] = value


def _finish(job: JobFolder, plan: _Plan, schema, metric_columns: list[str], run: dict,
            layers: Sequence[ConceptLayer]) -> dict:
    """Rank 0, after every rank passed the barrier: merge the parts, rank the concepts' reference examples,
    write the summary, then ``_SUCCESS``."""
    n_images = len(plan.work)
    table = merge_parts(job.parts, unit_count(n_images, plan.config["unit"]), n_images, schema, job.table)
    if layers:
        rank_references(open_store(job.maps), layers, plan.work.paths, plan.config["unit"], plan.config["top"],
                        job.concepts)
    summary = summarize(table, metric_columns, run)
    job.finish(summary)
    return summary


def describe(summary: dict, job: str | os.PathLike) -> str:
    """The summary as printed at the end of a run."""
    if summary.get("already_complete"):
        return f"{job} is complete ({summary['images']} images, {summary['failed']} failed): nothing to do"
    return format_summary(summary, Path(job))
