"""Calibration: the fitted WSE-2 parameters reproduce the published LLaMA3-8B figures, the recorded
fit is what ``fit()`` returns, and docs/CALIBRATION.md is exactly what the report renders today."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from plmr.hardware import WSE2, WSE2_CALIBRATED
from waferllm.calibration import FITTED, check_targets, fit, load_targets, predict_targets, render_report

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "CALIBRATION.md"
TARGETS = load_targets()


@pytest.fixture(scope="module")
def residuals():
    return predict_targets(WSE2)


@pytest.fixture(scope="module")
def fitted():
    return fit()  # ~1.5 s: run once


def test_targets_file_shape():
    assert TARGETS["model"] == "llama3-8b" and TARGETS["hardware"] == "wse2" and TARGETS["clock_hz"] == 1.1e9
    assert len(TARGETS["decode"]) == 3 and len(TARGETS["prefill"]) == 3 and len(TARGETS["kv_cache"]) == 1


def test_predictions_cover_every_throughput_figure_with_published_values(residuals):
    published = [p["tokens_per_s"] for p in TARGETS["decode"]] + [p["tokens_per_s"] for p in TARGETS["prefill"]]
    assert [r.published for r in residuals] == published
    for r, p in zip(residuals[:3], TARGETS["decode"]):
        assert f"{p['grid']}x{p['grid']}" in r.figure and "decode" in r.figure
    for r, p in zip(residuals[3:], TARGETS["prefill"]):
        assert f"{p['grid']}x{p['grid']}" in r.figure and "prefill" in r.figure


def test_residuals_within_15_percent(residuals):
    bad = [(r.figure, f"{r.error:+.1%}") for r in residuals if abs(r.error) > 0.15]
    assert not bad


def test_residuals_within_13_percent_as_recorded(residuals):
    # The recorded fit has every residual <= 9.2% (prefill 720x720) since the paper method prices the
    # decode and prefill programs the simulator runs (docs/BENCHMARKS.md, Refit on the six LLaMA3-8B
    # figures); 13% leaves room without hiding a regression.
    bad = [(r.figure, f"{r.error:+.1%}") for r in residuals if abs(r.error) > 0.13]
    assert not bad


def test_residual_error_definition(residuals):
    for r in residuals:
        assert r.error == pytest.approx(r.predicted / r.published - 1.0)
        assert r.predicted > 0 and math.isfinite(r.predicted)


def test_predicted_trends(residuals):
    dec, pre = [r.predicted for r in residuals[:3]], [r.predicted for r in residuals[3:]]
    assert dec[0] > dec[1] > dec[2]
    assert pre[0] < pre[1] < pre[2]


def test_kv_capacity_check_within_15_percent_and_ratio_is_grid_side():
    checks = check_targets(WSE2)
    point = TARGETS["kv_cache"][0]
    shift, concat = checks
    assert "shift" in shift.figure and "concat" in concat.figure
    assert (shift.published, concat.published) == (point["max_tokens_shift"], point["max_tokens_concat"])
    assert shift.predicted == pytest.approx(point["max_tokens_shift"], rel=0.15)
    assert concat.predicted == pytest.approx(point["max_tokens_concat"], rel=0.15)
    assert shift.predicted / concat.predicted == pytest.approx(point["grid"], rel=0.01)


def test_calibration_doc_is_the_current_report():
    assert DOC.is_file(), "docs/CALIBRATION.md is missing"
    # Regenerate with: python -m waferllm.calibration --write docs/CALIBRATION.md
    assert DOC.read_text() == render_report(WSE2)


def test_calibration_doc_residual_table_lists_every_prediction(residuals):
    text = DOC.read_text()
    for r in residuals:
        assert f"| {r.figure} | {r.published:,.1f} | {r.predicted:,.1f} | {r.error:+.1%} |" in text


def test_fit_returns_the_recorded_parameters(fitted):
    assert set(fitted.params) == set(FITTED)
    assert fitted.params == {k: float(v) for k, v in WSE2_CALIBRATED.items()}
    for name in FITTED:
        assert getattr(WSE2, name) == fitted.params[name], name
    assert fitted.spec == WSE2


def test_fit_residuals_are_the_shipped_residuals(fitted, residuals):
    assert [(r.figure, r.predicted) for r in fitted.residuals] == [(r.figure, r.predicted) for r in residuals]
    assert fitted.score == pytest.approx(sum(math.log1p(r.error) ** 2 for r in residuals))


def test_fit_respects_relay_lower_bound(fitted):
    from waferllm.calibration import MIN_RELAY

    assert fitted.params["relay_cycles"] >= MIN_RELAY


def test_only_the_three_overheads_are_fitted(fitted):
    # Every other field (hop, ramp, SIMD widths, clock, SRAM, ...) is the hardware reference's.
    for f in dataclasses.fields(WSE2):
        if f.name not in FITTED:
            assert getattr(fitted.spec, f.name) == getattr(WSE2, f.name), f.name
