"""Collectives along one mesh axis, emitted into an existing ``MeshProgram`` (waferllm-method.md §6-7).

Every function works on the *lines* of one axis at once: ``axis="y"`` means positions are rows
(y = 0 … height-1) and a line is one column (x fixed), so data moves NORTH/SOUTH; ``axis="x"``
means positions are columns and a line is one row, data moves EAST/WEST. ``lines`` selects which
lines take part (default: all). The collective works on a buffer ``buf`` that every PE of the
selected lines already declared; its length may differ between lines (uneven blocks) but must be the
same along a line.

The routes come from ``meshgemm.routing`` (the single source of the four routing patterns), with
colour *slots* mapped to hardware colour ids by the caller (``colours[slot]``, e.g. a
``meshgemm.kernel.ColourMap``); ``colours_needed`` says how many each collective takes. Routes are
static for the whole program, so two collectives in one program need disjoint colours unless their
routes are identical.

Instruction schedule (all fabric ops blocking unless stated; the simulator charges c_op per issue,
c_task per ``Wait``):

* **broadcast** (pattern 4): the root ``Send``s, every other PE ``Recv``s into ``buf``.
* **K-tree reduce** (``plmr.ktree.build_ktree``; K = 1 is one chain, the pipeline reduce is a chain
  into the end PE): per phase and group, the two end members ``Send``, intermediate members
  ``RecvAddSend`` (receive, add own ``buf``, forward), non-participants between them pass the stream
  through in hardware (express chain). A root with one side ``RecvAdd``s into ``buf``; a root with
  two sides receives the shorter side asynchronously into ``scratch``, ``RecvAdd``s the other into
  ``buf``, joins (``Wait``) and adds ``scratch`` (``Add``). Phases run in sequence.
* **ring allreduce** on the interleaved ring (pattern 1, 3 colours): 2(P−1) steps, each an async
  ``Send`` of one chunk to the ring successor, a blocking receive of the next chunk from the
  predecessor (``RecvAdd`` during the reduce-scatter, ``Recv`` during the allgather) and a ``Wait``
  on the send. (Fusing the steps into ``RecvAddSend`` chains deadlocks on a ring: every PE would
  block on its output before any PE receives.)
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from plmr.errors import InputError
from plmr.interleave import interleave, ring_position
from plmr.ktree import KTree, KTreeLevel, build_ktree
from plmr.primitives import balanced_split
from simulator.instructions import Add, Recv, RecvAdd, RecvAddSend, Ref, Send
from simulator.statements import Wait
from simulator.program import MeshProgram, Port

from meshgemm import routing
from meshgemm.routing import Transfer

AXES = ("x", "y")


# ------------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------------


def _check_axis(axis: str) -> None:
    if axis not in AXES:
        raise InputError(f"axis must be 'x' or 'y', got {axis!r}")


def axis_length(prog: MeshProgram, axis: str) -> int:
    """Number of positions on a line of ``axis`` (PEs taking part in one collective)."""
    _check_axis(axis)
    return prog.height if axis == "y" else prog.width


def num_lines(prog: MeshProgram, axis: str) -> int:
    _check_axis(axis)
    return prog.width if axis == "y" else prog.height


def _lines(prog: MeshProgram, axis: str, lines) -> list[int]:
    n = num_lines(prog, axis)
    if lines is None:
        return list(range(n))
    if isinstance(lines, int):
        lines = [lines]
    out = sorted(set(int(v) for v in lines))
    if out and (out[0] < 0 or out[-1] >= n):
        raise InputError(f"line index out of range 0..{n - 1} for axis {axis}")
    return out


def sel(axis: str, pos, lines) -> tuple:
    """(x, y) selection of positions ``pos`` on ``lines``."""
    return (lines, pos) if axis == "y" else (pos, lines)


def _dir(axis: str, src: int, dst: int) -> Port:
    """Port leading from position src towards dst."""
    if axis == "y":
        return Port.SOUTH if dst > src else Port.NORTH
    return Port.EAST if dst > src else Port.WEST


def emit_transfer(prog: MeshProgram, axis: str, lines: list[int], t: Transfer, colour: int) -> None:
    """Set the routes of one line transfer (point-to-point or multicast) on every selected line:
    the source injects from its RAMP, PEs in between pass through (delivering to their RAMP if they
    are multicast receivers), the far ends deliver to their RAMP."""
    if not lines:
        return
    recv = set(t.receivers)
    sides = defaultdict(list)
    for d in t.receivers:
        sides[d > t.src].append(d)
    tx_src = {_dir(axis, t.src, max(v) if up else min(v)) for up, v in sides.items()}
    prog.set_route(*sel(axis, t.src, lines), colour=colour, rx={Port.RAMP}, tx=tx_src)
    for up, v in sides.items():
        far = max(v) if up else min(v)
        step = 1 if up else -1
        out = _dir(axis, t.src, far)
        for p in range(t.src + step, far + step, step):
            tx = set()
            if p in recv:
                tx.add(Port.RAMP)
            if p != far:
                tx.add(out)
            prog.set_route(*sel(axis, p, lines), colour=colour, rx={out.opposite}, tx=tx)


def emit_transfers(prog: MeshProgram, axis: str, lines: list[int], transfers: list[Transfer],
                   colours: Sequence[int]) -> None:
    n = axis_length(prog, axis)
    try:
        routing.check_colours(transfers, n)
    except ValueError as exc:  # a bug in a pattern, not a user error
        raise AssertionError(f"colour conflict in a collective: {exc}") from None
    for t in transfers:
        emit_transfer(prog, axis, lines, t, colours[t.color])


def _by_length(prog: MeshProgram, axis: str, lines: list[int], buf: str) -> dict[int, list[int]]:
    """Lines grouped by the length of ``buf`` (checked equal along each line at position 0 and the
    last position)."""
    n = axis_length(prog, axis)
    groups: dict[int, list[int]] = defaultdict(list)
    for line in lines:
        x0, y0 = sel(axis, 0, line)
        x1, y1 = sel(axis, n - 1, line)
        a = prog.buffer(x0, y0, buf).length
        b = prog.buffer(x1, y1, buf).length
        if a != b:
            raise InputError(f"buffer {buf!r} has lengths {a} and {b} along line {line} of axis {axis}")
        groups[a].append(line)
    return dict(groups)


# ------------------------------------------------------------------------------------------------
# Colour counts
# ------------------------------------------------------------------------------------------------


def colours_needed(kind: str, n_ax: int, k: int = 2, broadcast: bool = True) -> int:
    """Colour slots of a collective on a line of ``n_ax`` PEs (method §6.4 [D], §7)."""
    if n_ax <= 1:
        return 0
    if kind == "broadcast":
        return 1
    if kind in ("chain", "chain_reduce"):
        return 2 + (1 if broadcast else 0)
    if kind == "ktree":
        return 2 * k + (1 if broadcast else 0)
    if kind == "pipeline":
        return 3
    if kind == "ring":
        return 3 if n_ax >= 3 else 2
    raise ValueError(f"unknown collective kind {kind!r}")


def ktree_group_counts(n_ax: int, k: int, group_size: int | None) -> tuple[int, ...] | None:
    """Group counts for ``build_ktree`` from a level-1 group size: level 1 has ⌈n_ax/g⌉ balanced
    groups (so no group is larger than g), the remaining levels ≈ equal sizes. None: the default
    (≈ n_ax^(1/K) members per group). Ignored for K = 1 (one group)."""
    if group_size is None or k == 1 or n_ax <= 1:
        return None
    from plmr.ktree import default_group_counts

    c1 = max(1, min(n_ax, -(-n_ax // group_size)))
    return (c1,) + default_group_counts(c1, k - 1)


# ------------------------------------------------------------------------------------------------
# Broadcast
# ------------------------------------------------------------------------------------------------


def emit_broadcast(prog: MeshProgram, axis: str, buf: str, root: int, colour: int,
                   lines=None) -> None:
    """Multicast ``buf`` from position ``root`` to every PE of the selected lines (1 colour)."""
    n = axis_length(prog, axis)
    lines = _lines(prog, axis, lines)
    if not 0 <= root < n:
        raise InputError(f"broadcast root {root} outside the axis of {n} PEs")
    tr = routing.multicast_transfer(n, root, 0)
    if not tr or not lines:
        return
    emit_transfers(prog, axis, lines, tr, [colour])
    prog.add(*sel(axis, root, lines), Send(colour, buf))
    others = [p for p in range(n) if p != root]
    for p in others:
        prog.add(*sel(axis, p, lines), Recv(colour, buf))


# ------------------------------------------------------------------------------------------------
# Reduce: K-tree (any K), chain with any root, pipeline
# ------------------------------------------------------------------------------------------------


def chain_tree(n: int, root: int) -> KTree:
    """A one-level 'tree': a single chain over the whole line into ``root``."""
    if not 0 <= root < n:
        raise InputError(f"chain root {root} outside the axis of {n} PEs")
    return KTree(n=n, levels=(KTreeLevel(groups=(tuple(range(n)),), roots=(root,)),))


def _level_transfers(tree: KTree) -> list[list[Transfer]]:
    return [phase for phase in routing.ktree_transfers(tree, with_broadcast=False)]


def emit_tree_reduce(prog: MeshProgram, axis: str, buf: str, scratch: str, tree: KTree,
                     colours: Sequence[int], lines=None) -> int:
    """Reduce ``buf`` along the axis into the tree's global root (returned). ``colours`` has
    2·K slots (two per level, alternating by distance to the group root). ``scratch`` is a buffer
    as long as ``buf``, used by roots with two incoming chains."""
    n = axis_length(prog, axis)
    if tree.n != n:
        raise InputError(f"tree over {tree.n} PEs used on an axis of {n}")
    lines = _lines(prog, axis, lines)
    if n <= 1 or not lines:
        return tree.root
    phases = _level_transfers(tree)
    emit_transfers(prog, axis, lines, [t for ph in phases for t in ph], colours)
    for li, (level, phase) in enumerate(zip(tree.levels, phases)):
        for group, root in zip(level.groups, level.roots):
            i = group.index(root)
            # p -> colour it sends on / receives on within this group
            out_c = {t.src: colours[t.color] for t in phase if t.src in group}
            in_c = {t.dst: [] for t in phase}
            for t in phase:
                if t.src in group:
                    in_c.setdefault(t.dst, []).append((t.src, colours[t.color]))
            for j, p in enumerate(group):
                if p == root:
                    continue
                ins = in_c.get(p, [])
                if not ins:
                    prog.add(*sel(axis, p, lines), Send(out_c[p], buf))
                else:
                    prog.add(*sel(axis, p, lines), RecvAddSend(ins[0][1], out_c[p], buf))
            ins = sorted(in_c.get(root, []), key=lambda s: abs(s[0] - root))
            if len(ins) == 1:
                prog.add(*sel(axis, root, lines), RecvAdd(ins[0][1], buf))
            elif len(ins) == 2:
                # the shorter side (fewer links) arrives first: receive it asynchronously
                left = [g for g in group[:i]]
                right = [g for g in group[i + 1:]]
                src_short = group[i + 1] if len(right) <= len(left) else group[i - 1]
                c_short = dict((s, c) for s, c in ins)[src_short]
                c_long = [c for s, c in ins if s != src_short][0]
                tag = f"ktree{li}"
                prog.add(*sel(axis, root, lines),
                         Recv(c_short, scratch, id=tag), RecvAdd(c_long, buf), Wait((tag,)),
                         Add(buf, buf, scratch))
    return tree.root


def emit_ktree_reduce(prog: MeshProgram, axis: str, buf: str, scratch: str, colours: Sequence[int],
                      k: int = 2, group_counts: tuple[int, ...] | None = None, lines=None) -> int:
    """K-tree reduce (method §6.3) of ``buf`` into the global root position (returned)."""
    n = axis_length(prog, axis)
    tree = build_ktree(n, k, group_counts)
    return emit_tree_reduce(prog, axis, buf, scratch, tree, colours, lines)


def emit_chain_reduce(prog: MeshProgram, axis: str, buf: str, scratch: str, colours: Sequence[int],
                      root: int | None = None, lines=None) -> int:
    """Nearest-neighbour chains from both ends into ``root`` (default the middle; n-1 is the
    pipeline reduce). 2 colours."""
    n = axis_length(prog, axis)
    root = n // 2 if root is None else root
    return emit_tree_reduce(prog, axis, buf, scratch, chain_tree(n, root), colours, lines)


def emit_ktree_allreduce(prog: MeshProgram, axis: str, buf: str, scratch: str,
                         colours: Sequence[int], k: int = 2,
                         group_counts: tuple[int, ...] | None = None, broadcast: bool = True,
                         lines=None) -> int:
    """K-tree reduce, then (``broadcast``) a multicast of the total from the global root. Colours:
    2K + 1 slots (2K without the broadcast). Returns the root position."""
    root = emit_ktree_reduce(prog, axis, buf, scratch, colours, k, group_counts, lines)
    if broadcast:
        emit_broadcast(prog, axis, buf, root, colours[2 * k], lines)
    return root


def emit_chain_allreduce(prog: MeshProgram, axis: str, buf: str, scratch: str,
                         colours: Sequence[int], root: int | None = None, lines=None) -> int:
    """Chain into ``root`` then multicast back (3 colours)."""
    root = emit_chain_reduce(prog, axis, buf, scratch, colours[:2], root, lines)
    emit_broadcast(prog, axis, buf, root, colours[2], lines)
    return root


def emit_pipeline_allreduce(prog: MeshProgram, axis: str, buf: str, scratch: str,
                            colours: Sequence[int], lines=None) -> int:
    """The Cerebras-GEMV allreduce: chain into the end PE, then broadcast back (3 colours)."""
    n = axis_length(prog, axis)
    return emit_chain_allreduce(prog, axis, buf, scratch, colours, root=max(n - 1, 0), lines=lines)


# ------------------------------------------------------------------------------------------------
# Ring allreduce
# ------------------------------------------------------------------------------------------------


def ring_chunks(length: int, n_ax: int) -> list[tuple[int, int]]:
    """(offset, size) of the n_ax balanced chunks of a buffer; needs length >= n_ax."""
    sizes = balanced_split(length, n_ax)
    offs = [sum(sizes[:i]) for i in range(n_ax)]
    return list(zip(offs, sizes))


def emit_ring_allreduce(prog: MeshProgram, axis: str, buf: str, colours: Sequence[int],
                        lines=None) -> None:
    """Reduce-scatter + allgather on the interleaved ring (3 colours; 2 for n_ax = 2). ``buf``
    must hold at least n_ax elements (pad with zeros) so every chunk is non-empty."""
    n = axis_length(prog, axis)
    lines = _lines(prog, axis, lines)
    if n <= 1 or not lines:
        return
    transfers = routing.ring_transfers(n)
    emit_transfers(prog, axis, lines, transfers, colours)
    send_c = {t.src: colours[t.color] for t in transfers}
    recv_c = {t.dst: colours[t.color] for t in transfers}
    for length, group in _by_length(prog, axis, lines, buf).items():
        if length < n:
            raise InputError(f"ring allreduce: buffer {buf!r} holds {length} elements, fewer than the "
                             f"{n} PEs of the ring; pad it to at least {n}")
        chunks = ring_chunks(length, n)

        def ref(c: int) -> Ref:
            off, size = chunks[c % n]
            return Ref(buf, off, size)

        for p in range(n):
            i = ring_position(p, n) if n >= 3 else p
            sc, rc = send_c[p], recv_c[p]
            ops = []
            for s in range(n - 1):  # reduce-scatter: send chunk i-s, receive-and-add chunk i-s-1
                ops += [Send(sc, ref(i - s), id="rs"), RecvAdd(rc, ref(i - s - 1)), Wait(("rs",))]
            for s in range(n - 1):  # allgather: send chunk i+1-s, receive chunk i-s
                ops += [Send(sc, ref(i + 1 - s), id="ag"), Recv(rc, ref(i - s)), Wait(("ag",))]
            prog.add(*sel(axis, p, group), *ops)


def ring_successor(p: int, n: int) -> int:
    return interleave(p, n)[1]
