"""Command groups registered on the `medchat` click group."""
