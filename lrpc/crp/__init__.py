"""Concept Relevance Propagation (Achtibat et al., Nature Machine Intelligence 2023): concepts of a layer, their
reference examples over a dataset, and the "glocal" figure.

    examples = lrpc.crp.reference_examples("job", "layer4", channel=7)   # after explain-dataset --concepts layer4
    crops = examples.crops()                                             # the images cut to their receptive fields
"""
from .references import ReferenceExamples, reference_crops, reference_examples

__all__ = ["ReferenceExamples", "reference_crops", "reference_examples"]
