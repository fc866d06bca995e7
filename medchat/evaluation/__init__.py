"""How good is a fine-tune: `medchat eval` and the end-of-training report card.

``benchmarks`` reads each benchmark shape into items, ``extract`` reads the answer strictly, ``run``
asks base and adapter the same items and scores them, ``stats`` gives intervals and McNemar's p,
``contamination`` removes rows the adapter was trained on, ``report_card`` loads the model and runs it
all, ``record`` and ``model_card`` keep the results (report, manifest, README.md).
"""
