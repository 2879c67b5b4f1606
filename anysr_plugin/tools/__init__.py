"""The tools built on the runtime: cost (MACs), benchmarks, budgets, evaluation and metrics, the
Algorithm-1 trainer, the demo, data and resizing, plots, and the reference look-alike models.

They import the runtime only; a model's method is asked of its adapter through the runtime's
registry, never imported.
"""
