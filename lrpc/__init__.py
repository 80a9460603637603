"""lrpc: an explicit-graph relevance compiler for PyTorch.

    explainer = lrpc.compile(model, rules="otsuki2024", example_input=torch.randn(1, 3, 224, 224))
    exp = explainer(x)            # exp.relevance, exp.heatmap(quantize=8), exp.layer_sums, exp.start
"""
from . import crp, modalities, models, rules
from .captum import LRPC
from .compiler import compile
from .errors import LrpcError
from .generation import explain_generation
from .presets import IMAGENET_HIGH, IMAGENET_LOW, preset, presets
from .quantize import heat_quantize
from .rule_set import LayerContext, Rules
from .runtime import Explainer, Explanation
from .splitting import Splitting

__all__ = ["compile", "preset", "presets", "Rules", "Splitting", "LayerContext", "Explainer", "Explanation",
           "LrpcError", "crp", "explain_generation", "heat_quantize", "modalities", "models", "rules",
           "IMAGENET_LOW", "IMAGENET_HIGH", "LRPC"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The dataset engine (torch.distributed, zarr, pyarrow) loads on first use, so `import lrpc` stays light.
    if name == "explain_dataset":
        from .dataset_jobs import explain_dataset
        return explain_dataset
    raise AttributeError(f"module 'lrpc' has no attribute {name!r}")


__all__ += ["explain_dataset"]
