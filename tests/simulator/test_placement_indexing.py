"""The one-pass indexing placement uses over every PE (distinct values by counting, not sorting) gives
numpy's sorted answers: ``np.unique`` with its inverse and first occurrences, and ``np.isin``."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.program import _first_and_inverse, _isin, _line_index, _unique_inverse

ints = st.lists(st.integers(-3, 40), min_size=1, max_size=60) | st.lists(st.integers(-2**40, 2**40), min_size=1,
                                                                          max_size=20)


@settings(max_examples=200, deadline=None)
@given(values=ints)
def test_unique_inverse_is_numpys(values):
    a = np.array(values, dtype=np.int64)
    u, inv = _unique_inverse(a)
    want_u, want_inv = np.unique(a, return_inverse=True)
    np.testing.assert_array_equal(u, want_u)
    np.testing.assert_array_equal(inv, want_inv.ravel())
    assert u.dtype == a.dtype


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.integers(0, 300), min_size=1, max_size=60)
       | st.lists(st.integers(0, 2**50), min_size=1, max_size=20))
def test_first_and_inverse_is_numpys(values):
    key = np.array(values, dtype=np.int64)
    first, inv = _first_and_inverse(key)
    _, want_first, want_inv = np.unique(key, return_index=True, return_inverse=True)
    np.testing.assert_array_equal(first, want_first)
    np.testing.assert_array_equal(inv, want_inv.ravel())


@settings(max_examples=100, deadline=None)
@given(size=st.integers(1, 30), data=st.data())
def test_line_index_is_numpys(size, data):
    c = np.array(data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=80)), dtype=np.int64)
    u, inv = _line_index(c, size)
    want_u, want_inv = np.unique(c, return_inverse=True)
    np.testing.assert_array_equal(u, want_u)
    np.testing.assert_array_equal(inv, want_inv.ravel())


@given(values=st.lists(st.integers(-5, 30), max_size=40), allowed=st.lists(st.integers(0, 24), max_size=10))
def test_isin_is_numpys(values, allowed):
    a = np.array(values, dtype=np.int64)
    np.testing.assert_array_equal(_isin(a, allowed), np.isin(a, np.array(allowed, dtype=np.int64)))
    f = a.astype(np.float64) + 0.5
    np.testing.assert_array_equal(_isin(f, allowed), np.isin(f, np.array(allowed, dtype=np.int64)))
