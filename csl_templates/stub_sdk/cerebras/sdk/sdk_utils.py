"""Stub of ``cerebras.sdk.sdk_utils``: the helpers host scripts use to move 16-bit data and read TSCs
(hardware-and-csl.md §6.8, §10.2)."""

import numpy as np


def input_array_to_u32(np_arr, sentinel=None, fast_dim_sz=1):
    """16-bit values, one per 32-bit word (low half), as MEMCPY_16BIT copies them; 32-bit arrays pass."""
    a = np.asarray(np_arr)
    if a.dtype.itemsize == 2:
        return a.ravel().view(np.uint16).astype(np.uint32)
    if a.dtype.itemsize == 4:
        return a.ravel()
    raise ValueError(f"input_array_to_u32: unsupported dtype {a.dtype}")


def memcpy_view(arr, dtype):
    """The low halves of 32-bit words as ``dtype`` (16-bit), or the words themselves (32-bit)."""
    dtype = np.dtype(dtype)
    a = np.asarray(arr)
    if dtype.itemsize == 2:
        return a.view(np.uint16)[::2].view(dtype)
    return a.view(dtype)


def calculate_cycles(timestamp_buf):
    """Cycles between two 48-bit TSC values packed into three f32 (start, end), as §6.8 packs them."""
    w = np.asarray(timestamp_buf, dtype=np.float32).view(np.uint16).astype(np.int64)
    start = w[0] + (w[1] << 16) + (w[2] << 32)
    end = w[3] + (w[4] << 16) + (w[5] << 32)
    return int(end - start)
