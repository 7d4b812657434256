"""Bridges to other frameworks. Each submodule imports its framework lazily; none is a core dependency."""
