"""The `medchat` command line: one module per command group, each thin (parse, load settings, delegate, print).

Nothing here imports torch, transformers or textual at module level: `medchat --help` stays instant.
"""
