"""The generation engine: backends stream text, the splitter turns it into typed events.

Never imports textual; heavy libraries are imported inside the backends that need them.
"""
