"""Stub of ``cerebras.sdk``: the runtime and ``sdk_utils`` that generated host scripts use."""
