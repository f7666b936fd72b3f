"""Stub of the ``cerebras`` namespace: see ``csl_templates/stub_runtime.py``."""
