"""The upstream glue: running an upstream checkout's own scripts (``launch``), building its models
(``upstream``, ``checkout``) and the official release's compatibility mode (``official``).

Method-neutral: what a method needs (its registry hooks, key maps) is its adapter's
(``anysr_plugin.adapters``, beside this layer), found through the runtime's adapter registry.
"""
