"""Stub of ``cerebras.sdk.runtime``."""
