"""Concept Relevance Propagation (Achtibat et al., Nature Machine Intelligence 2023): conditional heatmaps of
the channels (concepts) of an inner layer, zennit-crp's condition sets, the ranking of a layer's concepts, and
their reference examples over a dataset (``lrpc explain-dataset --concepts``). See docs/concepts.md."""
from .conditional import ConditionalAttribution, attribute, conditional_heatmaps
from .ranking import ConceptRanking, rank_concepts
from .references import ReferenceExamples, reference_crops, reference_examples

__all__ = ["conditional_heatmaps", "attribute", "ConditionalAttribution", "rank_concepts", "ConceptRanking",
           "ReferenceExamples", "reference_crops", "reference_examples"]
