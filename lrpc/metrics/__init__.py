"""Evaluation metrics: perturbation (Insertion/Deletion/ID), localisation against masks, and sanity checks."""
from .localisation import pointing_game, relevance_mass_accuracy, relevance_rank_accuracy
from .perturbation import (CANVASES, PROTOCOLS, SCORES, TIE_MODES, InsertionDeletionResult, Protocol,
                           insertion_deletion, normalised_trapezoid, resolve_protocol)
from .sanity import conservation_error, model_randomisation, spearman, target_sensitivity

__all__ = ["CANVASES", "PROTOCOLS", "SCORES", "TIE_MODES", "InsertionDeletionResult", "Protocol",
           "conservation_error", "insertion_deletion", "model_randomisation", "normalised_trapezoid",
           "pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy", "resolve_protocol", "spearman",
           "target_sensitivity"]
