"""Pretraining objectives: turn windows of token ids into model inputs and targets."""

from lmforge.objectives.base import Objective, build_objective

__all__ = ["Objective", "build_objective"]
