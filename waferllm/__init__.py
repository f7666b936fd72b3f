"""waferllm: compile HuggingFace models to wafer-scale mesh plans."""

__version__ = "0.1.0"
