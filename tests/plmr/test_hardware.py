"""HardwareSpec: built-in targets, loading custom specs from TOML/JSON, and validation."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import plmr
from plmr import WSE2, WSE3, InputError, get_spec, load_spec_file
from plmr.hardware import spec_from_mapping


def _full(spec=WSE2, **overrides):
    """Every field of ``spec`` as plain JSON-able values, built field by field (independent of
    ``HardwareSpec.to_dict``, which has its own tests), with ``overrides`` applied."""
    data = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if isinstance(value, tuple):
            value = list(value)
        elif f.name == "simd_widths":
            value = {op: dict(per) for op, per in value.items()}
        data[f.name] = value
    data.update(overrides)
    return data


def _toml(data) -> str:
    """A minimal TOML writer for ``_full`` mappings (scalars, lists, one level of nested tables)."""
    def val(v):
        return json.dumps(v)  # ints, floats, strings and lists of ints read the same in TOML
    lines = [f"{k} = {val(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            for sub, per in v.items():
                lines.append(f"[{k}.{sub}]")
                lines += [f"{d} = {val(w)}" for d, w in per.items()]
    return "\n".join(lines) + "\n"


def _widths(op, dtype, value, spec=WSE2):
    """``spec``'s full SIMD width table with one entry set to ``value``."""
    widths = {o: dict(per) for o, per in spec.simd_widths.items()}
    widths[op][dtype] = value
    return widths

# ------------------------------------------------------------------------------------------------
# Built-ins
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [WSE2, WSE3], ids=["wse2", "wse3"])
def test_builtin_common_values(spec):
    assert spec.sram_bytes == 48 * 1024
    assert spec.num_colors == 24
    assert spec.reserved_colors == (21, 22, 23)
    assert spec.routable_colors == tuple(range(21))
    assert len(spec.routable_colors) == 21
    assert spec.clock_hz == 1.1e9
    assert spec.power_watts == pytest.approx(37.5 * 400.0)
    assert spec.wavelet_bits == 32 and spec.wavelet_bytes == 4
    assert spec.usable_sram_bytes == spec.sram_bytes - spec.sram_reserve_bytes
    assert 0 < spec.usable_sram_bytes < spec.sram_bytes
    assert spec.mesh_width <= spec.fabric_width and spec.mesh_height <= spec.fabric_height
    assert spec.num_pes == spec.mesh_width * spec.mesh_height


def test_wse2_geometry_and_widths():
    assert (WSE2.mesh_width, WSE2.mesh_height) == (750, 994)
    assert WSE2.num_pes == 745_500
    assert WSE2.simd_width("fmac", "fp16") == 4
    assert WSE2.simd_width("fmac", "fp32") == 1
    assert WSE2.name == "wse2"


def test_wse3_geometry_and_widths():
    assert WSE3.simd_width("fmac", "fp16") == 8
    assert WSE3.name == "wse3"
    # Same NoC as WSE-2 (cycle parameters carried over), bigger mesh.
    assert WSE3.hop_cycles == WSE2.hop_cycles
    assert WSE3.num_pes > WSE2.num_pes


def test_builtin_specs_mapping():
    assert set(plmr.BUILTIN_SPECS) == {"wse2", "wse3"}
    assert plmr.BUILTIN_SPECS["wse2"] is WSE2
    assert plmr.BUILTIN_SPECS["wse3"] is WSE3


def test_elements_per_wavelet():
    assert WSE2.elements_per_wavelet("fp16") == 1
    assert WSE2.elements_per_wavelet("fp16", packed=True) == 2
    assert WSE2.elements_per_wavelet("fp32") == 1
    assert WSE2.elements_per_wavelet("fp32", packed=True) == 1


def test_unknown_dtype_and_op():
    with pytest.raises(InputError, match="dtype"):
        WSE2.elements_per_wavelet("bf16")
    with pytest.raises(InputError, match="dtype"):
        WSE2.simd_width("fmac", "int8")
    with pytest.raises(InputError, match="frobnicate"):
        WSE2.simd_width("frobnicate", "fp16")


def test_input_queue_wavelets():
    # 6 words of 16 bits = 3 wavelets of 32 bits; 2 words = 1 wavelet.
    assert WSE2.input_queue_wavelets(0) == 3
    assert WSE2.input_queue_wavelets(4) == 1


def test_seconds():
    assert WSE2.seconds(1.1e9) == pytest.approx(1.0)
    assert WSE2.seconds(0) == 0


def test_spec_is_immutable():
    with pytest.raises(Exception):
        WSE2.hop_cycles = 5.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        WSE2.simd_widths["fmac"] = {}  # type: ignore[index]


# ------------------------------------------------------------------------------------------------
# get_spec by name and by file
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,expected", [("wse2", WSE2), ("WSE2", WSE2), ("Wse3", WSE3), ("wse3", WSE3)])
def test_get_spec_by_name_case_insensitive(name, expected):
    assert get_spec(name) is expected


def test_get_spec_unknown_name():
    with pytest.raises(InputError) as exc:
        get_spec("wse4")
    msg = str(exc.value)
    assert "wse4" in msg and "wse2" in msg and "\n" not in msg


def test_get_spec_toml_file_with_base(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(
        'base = "wse2"\n'
        'name = "small"\n'
        "mesh_width = 16\n"
        "mesh_height = 12\n"
        "hop_cycles = 3.5\n"
        "[simd_widths.fmac]\n"
        "fp16 = 16\n"
    )
    spec = get_spec(str(path))
    assert spec.name == "small"
    assert (spec.mesh_width, spec.mesh_height) == (16, 12)
    assert spec.hop_cycles == 3.5
    # Inherited from wse2.
    assert spec.fabric_width == WSE2.fabric_width
    assert spec.sram_bytes == WSE2.sram_bytes
    assert spec.reserved_colors == WSE2.reserved_colors
    assert spec.ramp_cycles == WSE2.ramp_cycles
    # simd_widths merged per op and dtype: only fmac.fp16 overridden.
    assert spec.simd_width("fmac", "fp16") == 16
    assert spec.simd_width("fmac", "fp32") == WSE2.simd_width("fmac", "fp32")
    assert spec.simd_width("add", "fp16") == WSE2.simd_width("add", "fp16")
    # The built-in is untouched.
    assert WSE2.simd_width("fmac", "fp16") == 4
    # A Path works too.
    assert get_spec(path) == spec


def test_get_spec_json_file_with_base(tmp_path):
    path = tmp_path / "mini.JSON"
    path.write_text(json.dumps({"base": "wse3", "name": "mini", "mesh_width": 8, "mesh_height": 8,
                                "task_cycles": 7}))
    spec = get_spec(path)
    assert spec.name == "mini" and spec.mesh_width == 8
    assert spec.task_cycles == 7.0 and isinstance(spec.task_cycles, float)
    assert spec.simd_width("fmac", "fp16") == 8  # inherited from wse3
    assert spec.fabric_height == WSE3.fabric_height


def test_full_toml_spec_without_base(tmp_path):
    path = tmp_path / "full.toml"
    path.write_text(_toml(_full(name="t", mesh_width=20, hop_cycles=1.5, simd_widths=_widths("mul", "fp32", 2))))
    spec = get_spec(str(path))
    assert (spec.name, spec.mesh_width, spec.hop_cycles) == ("t", 20, 1.5)
    assert spec.simd_width("mul", "fp32") == 2
    assert spec.with_params(name="wse2", mesh_width=750, hop_cycles=2.0,
                            simd_widths=WSE2.simd_widths) == WSE2


def test_full_spec_without_base(tmp_path):
    data = _full(name="copy")
    path = tmp_path / "copy.json"
    path.write_text(json.dumps(data))
    spec = load_spec_file(path)
    assert spec.name == "copy"
    assert spec.with_params(name="wse2") == WSE2


def test_power_watts_is_optional(tmp_path):
    data = _full()
    del data["power_watts"]
    spec = spec_from_mapping(data)
    assert spec.power_watts == 0.0


@pytest.mark.parametrize("spec", [WSE2, WSE3], ids=["wse2", "wse3"])
def test_to_dict_round_trips_through_json(spec):
    text = json.dumps(spec.to_dict())
    back = spec_from_mapping(json.loads(text))
    assert back == spec
    assert back.simd_width("fmac", "fp16") == spec.simd_width("fmac", "fp16")
    assert back.reserved_colors == spec.reserved_colors
    assert isinstance(back.reserved_colors, tuple)
    assert back.input_queue_words == spec.input_queue_words


def test_with_params_returns_a_validated_copy():
    spec = WSE2.with_params(hop_cycles=3.0, mesh_width=100)
    assert spec.hop_cycles == 3.0 and spec.mesh_width == 100
    assert WSE2.hop_cycles == 2.0 and WSE2.mesh_width == 750
    assert spec != WSE2


@pytest.mark.parametrize(
    "changes,needle",
    [
        ({"mesh_width": 10_000}, "larger than the fabric"),
        ({"mesh_height": 0}, "mesh_height"),
        ({"sram_bytes": -1}, "sram_bytes"),
        ({"hop_cycles": -1.0}, "hop_cycles"),
        ({"op_issue_cycles": math.inf}, "op_issue_cycles"),
        ({"clock_hz": 0.0}, "clock_hz"),
        ({"sram_reserve_bytes": 48 * 1024}, "sram_reserve_bytes"),
        ({"reserved_colors": (30,)}, "reserved colour"),
        ({"wavelet_bits": 24}, "wavelet_bits"),
        ({"input_queue_words": ()}, "input_queue_words"),
    ],
)
def test_with_params_validates(changes, needle):
    with pytest.raises(InputError) as exc:
        WSE2.with_params(**changes)
    msg = str(exc.value)
    assert needle in msg
    assert "\n" not in msg


# ------------------------------------------------------------------------------------------------
# Validation errors from files and mappings: InputError, one line
# ------------------------------------------------------------------------------------------------


def _one_line_error(fn, *args) -> str:
    with pytest.raises(InputError) as exc:
        fn(*args)
    msg = str(exc.value)
    assert msg and "\n" not in msg, f"message not one line: {msg!r}"
    return msg


@pytest.mark.parametrize(
    "data,needle",
    [
        (_full(hop_cylces=2.0), "hop_cylces"),  # unknown key
        (_full(mesh_width=-4), "mesh_width"),  # negative size
        (_full(sram_bytes=-48), "sram_bytes"),  # negative size
        (_full(num_colors=0, reserved_colors=[]), "num_colors"),  # zero colours
        (_full(num_colors=3, reserved_colors=[0, 1, 2]), "no routable colours"),
        (_full(mesh_width=758), "larger than the fabric"),
        (_full(mesh_height=997), "larger than the fabric"),
        ({"base": "wse9"}, "wse9"),  # unknown base
        (_full(mesh_width=12.5), "mesh_width"),
        (_full(mesh_width=True), "mesh_width"),
        (_full(hop_cycles="fast"), "hop_cycles"),
        (_full(reserved_colors="21"), "reserved_colors"),
        (_full(name=""), "name"),
        ({"name": "x", "mesh_width": 4}, "missing key"),
        (_full(simd_widths=_widths("fmac", "fp16", 0)), "simd_widths.fmac.fp16"),
        (_full(simd_widths=_widths("fmac", "fp16", -2)), "simd_widths.fmac.fp16"),
        (_full(simd_widths=_widths("fmac", "fp16", 2.5)), "simd_widths.fmac.fp16"),
        (_full(simd_widths=_widths("fmac", "fp16", "4")), "simd_widths.fmac.fp16"),
        (_full(simd_widths=_widths("fmac", "int4", 4)), "int4"),
        (_full(simd_widths={**_widths("fmac", "fp16", 4), "fmac": 4}), "simd_widths"),
        (_full(simd_widths=4), "simd_widths"),
    ],
)
def test_bad_mapping_raises_one_line_input_error(data, needle):
    msg = _one_line_error(spec_from_mapping, data)
    assert needle in msg


def test_missing_simd_op_without_base():
    data = _full()
    data["simd_widths"] = {op: per for op, per in data["simd_widths"].items() if op != "max"}
    msg = _one_line_error(spec_from_mapping, data)
    assert "'max'" in msg


def test_non_mapping_rejected():
    _one_line_error(spec_from_mapping, [1, 2, 3])


def test_unknown_key_in_toml_file_names_the_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(_toml(_full(mesh_widht=4)))
    msg = _one_line_error(get_spec, str(path))
    assert "mesh_widht" in msg and str(path) in msg


def test_negative_size_in_json_file(tmp_path):
    path = tmp_path / "neg.json"
    path.write_text(json.dumps(_full(mesh_height=-3)))
    msg = _one_line_error(get_spec, path)
    assert "mesh_height" in msg


def test_malformed_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('base = "wse2"\nmesh_width = = 4\n[unterminated\n')
    msg = _one_line_error(get_spec, str(path))
    assert "malformed TOML" in msg


def test_malformed_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"base": "wse2",\n "mesh_width": 4,,}\n')
    msg = _one_line_error(get_spec, str(path))
    assert "malformed JSON" in msg and "line 2" in msg


def test_unknown_file_suffix(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("base: wse2\n")
    msg = _one_line_error(get_spec, str(path))
    assert "unknown format" in msg
    msg = _one_line_error(load_spec_file, path)
    assert ".toml" in msg and ".json" in msg


def test_missing_file(tmp_path):
    msg = _one_line_error(get_spec, str(tmp_path / "nowhere.toml"))
    assert "nowhere.toml" in msg


def test_unknown_name_that_is_not_a_path():
    msg = _one_line_error(get_spec, "cerebras-9000")
    assert "cerebras-9000" in msg


# ------------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 757),
    height=st.integers(1, 996),
    hop=st.floats(0, 100, allow_nan=False),
    fmac=st.integers(1, 64),
)
def test_valid_overrides_round_trip(width, height, hop, fmac):
    data = {"base": "wse2", "mesh_width": width, "mesh_height": height, "hop_cycles": hop,
            "simd_widths": {"fmac": {"fp16": fmac}}}
    spec = spec_from_mapping(data)
    assert (spec.mesh_width, spec.mesh_height, spec.hop_cycles) == (width, height, hop)
    assert spec.simd_width("fmac", "fp16") == fmac
    assert spec_from_mapping(json.loads(json.dumps(spec.to_dict()))) == spec


@settings(max_examples=60, deadline=None)
@given(num=st.integers(1, 40), data=st.data())
def test_routable_colours_are_the_complement(num, data):
    reserved = data.draw(st.lists(st.integers(0, num - 1), unique=True, max_size=num))
    if len(reserved) == num:
        with pytest.raises(InputError):
            WSE2.with_params(num_colors=num, reserved_colors=tuple(reserved))
        return
    spec = WSE2.with_params(num_colors=num, reserved_colors=tuple(reserved))
    assert set(spec.routable_colors) == set(range(num)) - set(reserved)
    assert list(spec.routable_colors) == sorted(spec.routable_colors)


def test_bad_simd_width_with_base():
    """A partial ``simd_widths`` override on top of a base is merged and validated."""
    msg = _one_line_error(spec_from_mapping, {"base": "wse2", "simd_widths": {"add": {"fp32": 0}}})
    assert "simd_widths.add.fp32" in msg


def test_boolean_simd_width_rejected():
    """``fp16 = true`` is not a width (integer fields reject booleans; SIMD widths must too)."""
    msg = _one_line_error(spec_from_mapping, _full(simd_widths=_widths("fmac", "fp16", True)))
    assert "simd_widths.fmac.fp16" in msg


def test_base_spec_inherits_everything():
    spec = spec_from_mapping({"base": "wse3"})
    assert spec == WSE3


def test_json_top_level_must_be_an_object(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2, 3]")
    assert "table/object" in _one_line_error(get_spec, path)


def test_directory_is_not_a_spec(tmp_path):
    d = tmp_path / "specs.toml"
    d.mkdir()
    assert "cannot read" in _one_line_error(get_spec, d)


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_non_utf8_file_is_an_input_error(tmp_path, suffix):
    """A binary or mis-encoded spec file is bad user input, not a crash (UnicodeDecodeError)."""
    path = tmp_path / f"binary{suffix}"
    path.write_bytes(b"\xff\xfe\x00mesh_width = 4\n")
    msg = _one_line_error(get_spec, path)
    assert "binary" in msg
