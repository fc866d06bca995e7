"""medchat: chat with, and LoRA fine-tune, small medical reasoning models in the terminal.

Importing this package stays cheap: torch, transformers, unsloth and textual are imported only
inside the functions that need them.
"""

__version__ = "0.1.0"
