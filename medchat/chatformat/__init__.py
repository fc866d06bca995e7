"""The chat format, with no torch: messages, the ``<think>`` tags and splitter, prompt rendering.

Chat, fine-tuning, evaluation and the server all build and read model text through this package, so
the text a model is trained on and the text it is asked at inference come from the same code.
"""
