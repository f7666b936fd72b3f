"""Reading a layout back: placement and routes of ring and chain layouts against independent models
(a hop-by-hop walk of the recovered routes; the worked P = 6 table of hardware-and-csl.md §6.11), and
the vectorised evaluator against the iteration-by-iteration one."""

from __future__ import annotations

from pathlib import Path

import pytest

from csl_templates.comptime import EvalError
from csl_templates.layout_reader import evaluate_layout
from csl_templates.parser import parse

SAMPLES = Path(__file__).parent / "samples"
STEP = {"EAST": (1, 0, "WEST"), "WEST": (-1, 0, "EAST"), "NORTH": (0, -1, "SOUTH"), "SOUTH": (0, 1, "NORTH")}


def deliveries(lay, colours):
    """Brute force over the recovered routes: from every PE injecting on a colour (rx RAMP), follow
    the tx directions hop by hop (the neighbour must accept from that side) to the PEs whose tx has
    RAMP. Returns {(src, colour): sorted destinations}."""
    routes = lay.routes()
    out = {}
    for (x, y, c), (rx, tx) in routes.items():
        if c not in colours or "RAMP" not in rx:
            continue
        dests, frontier, seen = [], [(x, y, tx)], set()
        while frontier:
            px, py, ptx = frontier.pop()
            for d in ptx:
                if d == "RAMP":
                    if (px, py) != (x, y):
                        dests.append((px, py))
                    continue
                dx, dy, back = STEP[d]
                n = (px + dx, py + dy, c)
                assert n in routes and back in routes[n][0], f"{d} from {(px, py)} on {c} is not received"
                if n not in seen:
                    seen.add(n)
                    frontier.append((n[0], n[1], routes[n][1]))
        out[((x, y), c)] = sorted(dests)
    return out


def ring_order(p):
    """Logical ring of §6.11: 0, 2, 4, ..., last even, last odd, ..., 3, 1."""
    return list(range(0, p, 2)) + list(range(p - 1 if p % 2 == 0 else p - 2, 0, -2))


@pytest.mark.parametrize("p, h", [(3, 1), (4, 2), (6, 1), (7, 3), (10, 2)])
def test_ring_layout_sends_each_pe_to_its_ring_successor(p, h):
    lay = evaluate_layout(SAMPLES / "ring_layout.csl", {"W": p, "H": h})
    got = deliveries(lay, {3, 4, 5})
    order = ring_order(p)
    succ = {order[k]: order[(k + 1) % p] for k in range(p)}
    for y in range(h):
        sent = {src[0]: dst for (src, c), dst in got.items() if src[1] == y}
        assert sent == {x: [(succ[x], y)] for x in range(p)}
        for x in range(p):  # every link spans at most two hops
            assert abs(succ[x] - x) <= 2


def test_ring_layout_matches_the_worked_p6_table():
    """hardware-and-csl.md §6.11, P = 6: receives / sends / relays per PE (colours r0..r2 = 3..5)."""
    lay = evaluate_layout(SAMPLES / "ring_layout.csl", {"W": 6, "H": 1})
    table = {  # PE: (receive colour, from), (send colour, to), relay or None
        0: ((3, "EAST"), (4, "EAST"), None), 1: ((5, "EAST"), (3, "WEST"), (4, "WEST", "EAST")),
        2: ((4, "WEST"), (3, "EAST"), (5, "EAST", "WEST")), 3: ((4, "EAST"), (5, "WEST"), (3, "WEST", "EAST")),
        4: ((3, "WEST"), (5, "EAST"), (4, "EAST", "WEST")), 5: ((5, "WEST"), (4, "WEST"), None),
    }
    for x, ((rc, rfrom), (sc, sto), relay) in table.items():
        assert lay.route(x, 0, rc) == (frozenset({rfrom}), frozenset({"RAMP"}))
        assert lay.route(x, 0, sc) == (frozenset({"RAMP"}), frozenset({sto}))
        if relay:
            assert lay.route(x, 0, relay[0]) == (frozenset({relay[1]}), frozenset({relay[2]}))
        configured = {c for c in (3, 4, 5) if lay.route(x, 0, c) is not None}
        assert len(configured) == (3 if relay else 2)


@pytest.mark.parametrize("w, h", [(2, 1), (5, 3), (8, 4)])
def test_chain_layout_places_and_routes_illustration_b(w, h):
    lay = evaluate_layout(SAMPLES / "chain_layout.csl", {"W": w, "H": h, "n": 8})
    got = deliveries(lay, {1, 2})
    assert got == {((x, y), 1 if x % 2 == 0 else 2): [(x + 1, y)] for x in range(w - 1) for y in range(h)}
    for (x, y), (fname, params) in lay.placements().items():
        assert fname == "chain_pe.csl"
        assert params["is_first"] == (x == 0) and params["is_last"] == (x == w - 1)
        assert params["send_c"] == (1 if x % 2 == 0 else 2) and params["recv_c"] == (2 if x % 2 == 0 else 1)
        assert params["n"] == 8 and isinstance(params["memcpy_params"], str)
    assert len(lay.placements()) == w * h


@pytest.mark.parametrize("name, params", [
    ("ring_layout.csl", {"W": 7, "H": 3}),
    ("chain_layout.csl", {"W": 5, "H": 2, "n": 4}),
    ("legacy_layout.csl", {"P": 5, "Mt": 2, "Nt": 3}),
    ("constructs_layout.csl", {"W": 5, "H": 3}),
    ("skeleton_layout.csl", {"W": 4, "H": 3, "K": 8}),
])
def test_vectorised_evaluation_equals_iteration_by_iteration(name, params):
    a = evaluate_layout(SAMPLES / name, params, vectorize=True)
    b = evaluate_layout(SAMPLES / name, params, vectorize=False)
    assert a.placements() == b.placements() and a.routes() == b.routes()
    assert (a.width, a.height) == (b.width, b.height) and a.routes()


def test_functions_returning_per_lane_structs_and_while_loops():
    """legacy_layout: comm(px) returns a different struct per column (vectorised `return`)."""
    lay = evaluate_layout(SAMPLES / "legacy_layout.csl", {"P": 4, "Mt": 2, "Nt": 3})
    for (x, y), (_f, params) in lay.placements().items():
        want = {"send_color": 5, "recv_color": 6} if x % 2 == 0 else {"send_color": 6, "recv_color": 5}
        assert params["comm_params"] == want and params["P"] == 4


def _layout(body: str, header: str = "") -> str:
    return header + "layout {\n  @set_rectangle(4, 2);\n" + body + "\n}\n"


def test_comptime_errors_carry_their_location():
    src = _layout("  const a = [2]u16{1, 2};\n  for (@range(u16, 4)) |x| {\n"
                  "    for (@range(u16, 2)) |y| { @set_tile_code(x, y, \"p.csl\", .{ .v = a[x] }); }\n  }")
    with pytest.raises(EvalError) as ei:
        evaluate_layout(parse(src, "l.csl"))
    col = src.splitlines()[4].index("a[x]") + 1
    assert (ei.value.node.line, ei.value.node.col) == (5, col) and "out of range" in ei.value.message


def test_duplicate_tile_code_and_outside_coordinates_are_recorded():
    src = _layout("  for (@range(u16, 4)) |x| { for (@range(u16, 2)) |y| { @set_tile_code(x, y, \"p.csl\", .{}); } }\n"
                  "  @set_tile_code(1, 1, \"p.csl\", .{});\n  @set_tile_code(9, 0, \"p.csl\", .{});")
    lay = evaluate_layout(parse(src, "l.csl"))
    assert int(lay.tile_count[1, 1]) == 2 and int(lay.tile_count.sum()) == 9
    assert [p.rule for p in lay.problems] == ["layout.outside"]


def test_unbound_params_are_reported_not_guessed():
    lay = evaluate_layout(parse("param W: i16;\nparam H: i16 = 2;\n" + _layout(""), "l.csl"), {})
    assert [p.name for p in lay.unbound_params] == ["W"]


def test_large_layout_is_evaluated_in_one_pass():
    """A 720 x 720 ring layout (the lead's emitter size): vectorised, so it finishes quickly; checked
    here only for content (timing lives in docs/BENCHMARKS.md)."""
    lay = evaluate_layout(SAMPLES / "ring_layout.csl", {"W": 720, "H": 720})
    assert lay.tile_count.min() == 1 and lay.tile_count.max() == 1
    assert lay.route(719, 719, 5) == (frozenset({'WEST'}), frozenset({'RAMP'})) and len(lay.params) == 3


def ring_model(p, h):
    """The ring of §6.11 from its prose: the logical ring 0, 2, 4, ..., 3, 1; every link a -> b uses the
    colour c[m % 3] of the PE m it passes through (two hops) or turns at (one hop: the end PE, 0 or
    P - 1); the sender injects (rx RAMP), a relay passes it on, the receiver delivers it (tx RAMP)."""
    order = ring_order(p)
    routes = {}

    def put(x, y, c, rx, tx):
        key = (x, y, 3 + c)
        assert key not in routes, key  # one configuration per (PE, colour)
        routes[key] = (frozenset({rx}), frozenset({tx}))

    for k in range(p):
        a, b = order[k], order[(k + 1) % p]
        toward, back = ("EAST", "WEST") if b > a else ("WEST", "EAST")
        if abs(b - a) == 2:
            m = (a + b) // 2
        else:
            m = a if a in (0, p - 1) else b
        for y in range(h):
            put(a, y, m % 3, "RAMP", toward)
            if abs(b - a) == 2:
                put(m, y, m % 3, back, toward)
            put(b, y, m % 3, back, "RAMP")
    return routes


@pytest.mark.parametrize("p, h", [(3, 1), (4, 1), (5, 2), (6, 1), (9, 2), (12, 1)])
def test_ring_layout_equals_the_prose_model_exactly(p, h):
    lay = evaluate_layout(SAMPLES / "ring_layout.csl", {"W": p, "H": h})
    assert lay.routes() == ring_model(p, h)


@pytest.mark.parametrize("distinct, shape", [(1, (5, 3)), (3, (4, 6, 1, 1)), (16, (40,)), (17, (9, 9)),
                                             (40, (7, 11)), (2, (0, 3))])
def test_object_codes_group_lanes_by_identity(distinct, shape):
    """``object_codes`` (a lane array's distinct objects, read from its pointers) against grouping the
    lanes one by one with ``is``: equal but distinct objects stay apart, every lane maps back to its
    own object; a non-contiguous view reads the elements it shows."""
    import numpy as np

    from csl_templates.comptime import object_codes

    rng = np.random.default_rng(distinct)
    pool = [[i % 3] for i in range(distinct)]  # lists: equal values, distinct objects
    n = int(np.prod(shape))
    arr = np.empty(n, dtype=object)
    for i, j in enumerate(rng.integers(0, distinct, n).tolist()):
        arr[i] = pool[j]
    arr = arr.reshape(shape)
    for a in (arr, arr[::-1] if arr.ndim and arr.shape[0] else arr, arr.T):
        objs, codes = object_codes(a)
        assert codes.shape == a.shape
        flat = a.reshape(-1).tolist()
        assert [objs[c] is o for c, o in zip(codes.reshape(-1).tolist(), flat)] == [True] * len(flat)
        want = []  # distinct objects by identity, brute force
        for o in flat:
            if not any(o is w for w in want):
                want.append(o)
        assert len(objs) == len(want) and all(any(o is w for w in want) for o in objs)


@pytest.mark.parametrize("values", [[-3, 7, 7, 0, -3], [True, False, True], [5], [0, 1 << 40, 3],
                                    [200, 3, 3, 255], [2.5, -1.0, 2.5]])
def test_unique_inverse_equals_numpys(values):
    """The lookup-table factorisation of per-lane parameters gives what ``np.unique`` gives (values,
    their dtype, each lane's index), in a small range and out of it (a sort then)."""
    import numpy as np

    from csl_templates.layout_reader import _unique_inverse

    src = np.array(values, dtype=np.uint8 if max(values) == 255 else None).reshape(-1, 1)
    (u, i), (wu, wi) = _unique_inverse(src), np.unique(src, return_inverse=True)
    assert u.dtype == wu.dtype and u.tolist() == wu.tolist()
    assert i.reshape(-1).tolist() == wi.reshape(-1).tolist()
