"""Hospital datasets: the loader lives in the core (:mod:`fedchain.tabular`) so the coordinator
and the auditor can load the plan's public validation set with the same code; this module
keeps the node's import path."""

from fedchain.tabular import (  # noqa: F401  (re-exported)
    FeatureMoments,
    TabularData,
    apply_preprocessing,
    feature_moments,
    load_dataset,
    parse_dataset,
    split_dataset,
    split_for_plan,
    standardize,
)

__all__ = [
    "TabularData",
    "FeatureMoments",
    "load_dataset",
    "parse_dataset",
    "split_dataset",
    "split_for_plan",
    "feature_moments",
    "standardize",
    "apply_preprocessing",
]
