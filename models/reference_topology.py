"""Edge lists of the published KirchhoffNet code's connection builders, re-derived here.

The authors' results folders (``config.yaml`` + ``model.pth``) name one connection builder
per layer in ``network.net_struct`` (``{"name": ..., "args": {...}}``); the edge order of
that builder fixes which column of the layer's ``[3, E]`` parameter tensor belongs to which
edge, so each function here reproduces the builder's *order* as well as its edges.

Edges are ``(source, destination)``, 0 = ground, non-ground nodes 1..n (the same convention
as :mod:`models.topology`; these builders differ from ours in order and semantics, which is
why they live apart). Every function checks its arguments and raises ``ValueError`` with a
message that starts with the argument's name, so the caller can prefix the YAML key.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

Edges = list[tuple[int, int]]


def fully_connect(num_node: int, include_gnd: bool = True, repeat: list[int] | None = None) -> Edges:
    """``_fully_connect``: every ordered pair (i, j), i ≠ j, of the node set, visited in
    row-major order, contributes ``repeat[0]`` edges i→j followed by ``repeat[1]`` edges j→i.

    ``num_node`` counts ground when ``include_gnd`` (nodes 0..num_node−1), else the nodes
    are 1..num_node. Each ordered pair is visited twice (as (i, j) and as (j, i)), so i→j
    carries ``repeat[0] + repeat[1]`` parallel devices in all.
    """
    r0, r1 = _repeat_pair(repeat if repeat is not None else [1, 1])
    _check_bool("include_gnd", include_gnd)
    _check_int("num_node", num_node, 2)
    first = 0 if include_gnd else 1
    last = num_node - 1 if include_gnd else num_node
    edges: Edges = []
    for i in range(first, last + 1):
        for j in range(first, last + 1):
            if i != j:
                edges += [(i, j)] * r0 + [(j, i)] * r1
    return edges


def simple_connect(num_node: int, include_gnd: bool = True, repeat: list[int] | None = None) -> Edges:
    """``_simple_connect``: a chain i→i+1 for i over the node set, ``repeat[0]`` times each
    (``repeat[1]`` is accepted and unused, as in the published code)."""
    r0, _ = _repeat_pair(repeat if repeat is not None else [1, 1])
    _check_bool("include_gnd", include_gnd)
    _check_int("num_node", num_node, 1)
    first = 0 if include_gnd else 1
    last = num_node - 1 if include_gnd else num_node
    return [(i, i + 1) for i in range(first, last + 1) for _ in range(r0)]


def neighbor_index(num_channel: int, width: int, height: int, neighbor_size: int, padding: bool = False,
                   repeat: int = 1, sharing: bool = False, parallel: int = 1) -> Edges:
    """``_neighbor_index``: convolution-like windows over a C×W×H grid of nodes.

    Node of channel c at (x, y) is ``1 + c·W·H + x·H + y``. Windows of size k×k (k =
    ``neighbor_size``) slide with stride 1 over (x, y), row-major by their top-left corner;
    ``padding`` extends the grid by k−1 empty cells on every side (windows may then hang
    over the edge; empty cells make no edges). Inside a window the positions are ordered
    channel, x, y; every ordered pair of distinct occupied positions gives ``repeat`` edges.
    Overlapping windows repeat pairs, so neighbours carry several parallel devices.

    ``sharing`` changes only the parameter-sharing index of the published builder, which its
    circuit layer never reads, so the edges are the same. ``parallel`` = p stacks 2^(p−1)
    copies of the edge list, copy i shifted by i × (largest node index): the published loop
    doubles the list on every pass.
    """
    for name, value, low in (("num_channel", num_channel, 1), ("width", width, 1), ("height", height, 1),
                             ("neighbor_size", neighbor_size, 1), ("repeat", repeat, 1), ("parallel", parallel, 1)):
        _check_int(name, value, low)
    _check_bool("padding", padding)
    _check_bool("sharing", sharing)
    k = neighbor_size
    pad = k - 1 if padding else 0

    def node(c: int, x: int, y: int) -> int:
        inside = 0 <= x < width and 0 <= y < height
        return 1 + c * width * height + x * height + y if inside else 0

    edges: Edges = []
    for x0 in range(-pad, width + pad - k + 1):
        for y0 in range(-pad, height + pad - k + 1):
            window = [node(c, x0 + dx, y0 + dy) for c in range(num_channel) for dx in range(k) for dy in range(k)]
            for p, s in enumerate(window):
                for q, d in enumerate(window):
                    if p != q and s and d:
                        edges += [(s, d)] * repeat
    if not edges:
        raise ValueError(f"neighbor_size: a {k}×{k} window on a {width}×{height} grid "
                         f"({'with' if padding else 'without'} padding) connects no nodes")
    if parallel > 1:
        shift = max(max(e) for e in edges)
        edges = [(s + i * shift, d + i * shift) for i in range(2 ** (parallel - 1)) for s, d in edges]
    return edges


def mix_connect(num_channel: int, width: int, height: int, neighbor_size: int, fully_connect_node: int,
                repeat: list[int] | None = None, padding: bool = False, kernel_repeat: int = 1,
                sharing: bool = False, parallel: int = 1) -> Edges:
    """``_mix_connect``: :func:`neighbor_index` edges (``kernel_repeat`` per pair), then for
    every grid node n (1..N, N the largest index so far) ``repeat[0]`` edges n→0 followed by
    ``repeat[1]`` edges 0→n, then ``fully_connect_node`` extra hub nodes N+1.. each wired to
    every node 0..N (ground included, hubs not to each other): ``repeat[0]`` edges i→hub
    followed by ``repeat[1]`` edges hub→i, for i = 0..N in turn."""
    r0, r1 = _repeat_pair(repeat if repeat is not None else [1, 0])
    _check_int("fully_connect_node", fully_connect_node, 0)
    edges = neighbor_index(num_channel, width, height, neighbor_size, padding, kernel_repeat, sharing, parallel)
    top = max(max(e) for e in edges)
    for n in range(1, top + 1):
        edges += [(n, 0)] * r0 + [(0, n)] * r1
    for hub in range(top + 1, top + 1 + fully_connect_node):
        for i in range(top + 1):
            edges += [(i, hub)] * r0 + [(hub, i)] * r1
    return edges


# builder name in ``network.net_struct[l].name`` → (function, required args, optional args)
BUILDERS: dict[str, tuple[Callable[..., Edges], tuple[str, ...], tuple[str, ...]]] = {
    "_fully_connect": (fully_connect, ("num_node",), ("include_gnd", "repeat")),
    "_simple_connect": (simple_connect, ("num_node",), ("include_gnd", "repeat")),
    "_neighbor_index": (neighbor_index, ("num_channel", "width", "height", "neighbor_size"),
                        ("padding", "repeat", "sharing", "parallel")),
    "_mix_connect": (mix_connect, ("num_channel", "width", "height", "neighbor_size", "fully_connect_node"),
                     ("repeat", "padding", "kernel_repeat", "sharing", "parallel")),
}
UNSUPPORTED_BUILDERS = {"_pregiven": "it needs an edge-index tensor that a YAML file cannot hold"}


def build(name: Any, args: Any, where: str) -> Edges:
    """Edges of builder ``name`` called with ``args``; ValueError naming ``where`` (the YAML
    key of this layer, e.g. ``network.net_struct[0]``) and the argument at fault."""
    if name in UNSUPPORTED_BUILDERS:
        raise ValueError(f"{where}.name: builder {name!r} is not supported: {UNSUPPORTED_BUILDERS[name]}")
    if name not in BUILDERS:
        raise ValueError(f"{where}.name: unknown connection builder {name!r}; "
                         f"supported: {', '.join(BUILDERS)}")
    fn, required, optional = BUILDERS[name]
    args = {} if args is None else args
    if not isinstance(args, dict):
        raise ValueError(f"{where}.args: expected a mapping of builder arguments")
    for key in args:
        if key not in required + optional:
            raise ValueError(f"{where}.args.{key}: {name} takes no argument {key!r} "
                             f"(it takes {', '.join(required + optional)})")
    for key in required:
        if key not in args:
            raise ValueError(f"{where}.args.{key}: missing (required by {name})")
    try:
        return fn(**args)
    except ValueError as err:
        raise ValueError(f"{where}.args.{err}") from None


def _check_int(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected true or false, got {value!r}")


def _repeat_pair(repeat: Any) -> tuple[int, int]:
    if not (isinstance(repeat, list | tuple) and len(repeat) == 2):
        raise ValueError(f"repeat: expected a list of two integers [forward, backward], got {repeat!r}")
    for r in repeat:
        _check_int("repeat", r, 0)
    if repeat[0] + repeat[1] < 1:
        raise ValueError("repeat: at least one of the two counts must be >= 1")
    return int(repeat[0]), int(repeat[1])
