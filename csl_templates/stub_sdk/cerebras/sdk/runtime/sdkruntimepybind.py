"""Stub of the SDK's ``sdkruntimepybind``, backed by waferllm's simulator (``csl_templates.stub_runtime``)."""

from csl_templates.stub_runtime import MemcpyDataType, MemcpyOrder, SdkRuntime, StubError  # noqa: F401

__all__ = ["SdkRuntime", "MemcpyDataType", "MemcpyOrder", "StubError"]
