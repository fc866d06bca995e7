"""How good is a fine-tune: the report card (base vs adapter on held-out rows)."""
