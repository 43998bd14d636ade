"""Symbolic causal models, counterfactual pairs, tasks and hypotheses. Never imports torch.

Words used throughout align-search: a *causal model* is a DAG of *variables*; an
*interchange* sets variables to their values under *source* inputs while the rest come from
the *base*; the resulting output is the *counterfactual label*. A *hypothesis* places
variables at a *site* (layer output x token position) under an *intervention*.
"""

from causal_models.causal_model import CausalModel, CausalModelError, Variable
from causal_models.dataset import load_pairs, make_splits, save_pairs, to_dataset
from causal_models.hypotheses import Hypothesis, enumerate_hypotheses, parse_layers
from causal_models.pairs import CounterfactualPair, PairSet, indistinguishable_variables, sample_pairs
from causal_models.task import Task, UnknownNameError
from causal_models.tasks import TASKS, get_task
from causal_models.templates import LAST, FieldChar, PromptTemplate, TextChar

__all__ = [
    "LAST", "TASKS", "CausalModel", "CausalModelError", "CounterfactualPair", "FieldChar", "Hypothesis",
    "PairSet", "PromptTemplate", "Task", "TextChar", "UnknownNameError", "Variable", "enumerate_hypotheses",
    "get_task", "indistinguishable_variables", "load_pairs", "make_splits", "parse_layers", "sample_pairs",
    "save_pairs", "to_dataset",
]
