"""Downstream tasks: one module each, all implementing lmforge.tasks.base.Task."""
