"""``plmr.result_store``: a result computed once is read back equal by the next call (and SUMMA's
schedule through it equals the loop's own result), without computing again; a changed source or
argument computes anew; a damaged file is computed again and replaced."""

from __future__ import annotations

import types

import pytest

from plmr import result_store


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("WAFERLLM_RESULT_STORE", str(tmp_path / "store"))
    return tmp_path / "store"


def _module(tmp_path, text: str):
    src = tmp_path / "computes.py"
    src.write_text(text)
    return types.SimpleNamespace(__file__=str(src))


def test_a_result_is_computed_once_and_read_back_equal(tmp_path, store):
    mod = _module(tmp_path, "x = 1\n")
    calls = []

    def compute():
        calls.append(1)
        return (0.1 + 0.2, float("inf"), -3.0)  # not a round decimal, an infinity

    first = result_store.stored("f", mod, (3, 2.5, True), 3, compute)
    again = result_store.stored("f", mod, (3, 2.5, True), 3, compute)
    assert first == again == (0.1 + 0.2, float("inf"), -3.0) and len(calls) == 1
    assert len(list(store.glob("f-*.json"))) == 1 and not list(store.glob("*.tmp"))
    # another argument, another source: computed anew
    result_store.stored("f", mod, (3, 2.5, False), 3, compute)
    assert len(calls) == 2
    mod2 = _module(tmp_path, "x = 2\n")
    result_store.stored("f", mod2, (3, 2.5, True), 3, compute)
    assert len(calls) == 3


@pytest.mark.parametrize("damage", ["", "[1.0, 2.0", "[1.0]", '["a", 2.0]', "[1, 2.0]"])
def test_a_damaged_result_is_computed_again_and_replaced(tmp_path, store, damage):
    mod = _module(tmp_path, "y = 1\n")
    store.mkdir()
    path = store / f"{result_store.result_key('g', mod, (1,))}.json"
    path.write_text(damage)
    assert result_store.stored("g", mod, (1,), 2, lambda: (4.0, 5.0)) == (4.0, 5.0)
    assert result_store.stored("g", mod, (1,), 2, lambda: pytest.fail("read back, not computed")) == (4.0, 5.0)


def test_summa_schedule_through_the_store_equals_the_loop(store, monkeypatch):
    """A SUMMA run over the store's threshold (lowered here) is kept, and what the next call reads
    back gives the same total and parts as the loop computing it in the process."""
    import plmr.gemm_schedules as gs
    from plmr import _gemm_schedule_loops as loops
    from plmr.hardware import WSE2

    args = (WSE2, 6, 4, 24, 24, 24, 500.0, 30.0, 20.0, 20.0, 8, 8)
    monkeypatch.setattr(gs, "STORE_MIN_PE_STEPS", 10**12)
    want = gs.summa_schedule(*args)
    assert not store.exists()
    monkeypatch.setattr(gs, "STORE_MIN_PE_STEPS", 1)
    assert gs.summa_schedule(*args) == want
    assert len(list(store.glob("summa_steps-*.json"))) == 1
    monkeypatch.setattr(loops, "summa_steps", lambda *a: pytest.fail("read back, not computed"))
    assert gs.summa_schedule(*args) == want


def test_a_store_others_can_write_is_not_read(tmp_path, store):
    """A folder in a shared temporary directory that another user could fill: its results are not
    trusted (computed instead) and nothing is written there."""
    mod = _module(tmp_path, "z = 1\n")
    store.mkdir()
    store.chmod(0o777)
    (store / f"{result_store.result_key('h', mod, (2,))}.json").write_text("[666.0]")
    assert result_store.stored("h", mod, (2,), 1, lambda: (7.0,)) == (7.0,)
    assert sorted(p.suffix for p in store.iterdir()) == [".json"]  # only the planted file
