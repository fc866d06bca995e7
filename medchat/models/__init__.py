"""The loading core: which model a spec means (catalog), how to load it (loading), how to attach an
adapter to it (adapters). The one place medchat turns names into weights in memory."""
