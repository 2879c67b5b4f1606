"""The runtime: converting a model (``anysrify`` / ``unanysrify``) and everything a converted model
runs (config, width/scale policy, per-call plan, gates, blocks, controls, export, checkpoints).

The bottom layer: it imports nothing above it (no tool, no upstream glue, no method adapter);
it finds a model's adapter through the adapter registry (``methods.py``) and the compat mode
through the state's policy object (``policy.py``).
"""
