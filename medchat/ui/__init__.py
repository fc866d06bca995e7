"""The Textual chat app. Only this package imports textual; the engine never does."""
