"""Topology generators: edge lists ``(edges, 2)`` of ``[source, destination]``, 0 = ground.

Non-ground nodes are numbered 1..n. Each generator is deterministic: the same arguments
give the same edge order, so parameters line up across runs and exports.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from .config import TopologySpec
from .errors import UserInputError


def fully_connected(n: int, repeat: int = 1, include_ground: bool = True) -> list[tuple[int, int]]:
    """Every ordered pair of distinct nodes among 1..n (and ground, if asked), ``repeat`` times.

    With ground included, node 0 appears as source or destination but never both.
    """
    if n < 1 or repeat < 1:
        raise UserInputError("n and repeat must be >= 1")
    nodes = range(0 if include_ground else 1, n + 1)
    pairs = [(s, d) for s in nodes for d in nodes if s != d]
    return [p for p in pairs for _ in range(repeat)]


def grid_index(c: int, h: int, w: int, grid: tuple[int, int, int]) -> int:
    """Node number (1-based) of channel ``c``, row ``h``, column ``w`` on a C×H×W grid."""
    _, height, width = grid
    return 1 + c * height * width + h * width + w


def neighbourhood(grid: tuple[int, int, int], kernel: int = 3, repeat: int = 1) -> list[tuple[int, int]]:
    """Convolution-like edges: ordered pairs of distinct nodes within a kernel×kernel window.

    Windows are centred on the source pixel and span every channel, as a convolution does.
    """
    channels, height, width = grid
    if min(grid) < 1 or kernel < 1:
        raise UserInputError("grid sizes and kernel must be >= 1")
    r = kernel // 2
    edges: list[tuple[int, int]] = []
    for c in range(channels):
        for h in range(height):
            for w in range(width):
                s = grid_index(c, h, w, grid)
                for c2 in range(channels):
                    for h2 in range(max(0, h - r), min(height, h + r + 1)):
                        for w2 in range(max(0, w - r), min(width, w + r + 1)):
                            d = grid_index(c2, h2, w2, grid)
                            if d != s:
                                edges.extend([(s, d)] * repeat)
    return edges


def mixed(grid: tuple[int, int, int], kernel: int = 3, repeat: int = 1, hubs: int = 2) -> list[tuple[int, int]]:
    """Neighbourhood edges, plus an edge each way between every node and ground, plus
    ``hubs`` evenly spaced nodes wired to every other node in both directions."""
    n = grid[0] * grid[1] * grid[2]
    edges = neighbourhood(grid, kernel, repeat)
    edges += [(k, 0) for k in range(1, n + 1)] + [(0, k) for k in range(1, n + 1)]
    if hubs:
        hub_nodes = sorted({1 + round(i * (n - 1) / max(hubs - 1, 1)) for i in range(hubs)})
        present = set(edges)
        for hub in hub_nodes:
            for k in range(1, n + 1):
                for pair in ((hub, k), (k, hub)):
                    if k != hub and pair not in present:
                        edges.append(pair)
                        present.add(pair)
    return edges


def explicit(edges: Iterable[Sequence[int]], nodes: int) -> list[tuple[int, int]]:
    """Validate a user edge list; ValueError naming the edge at fault."""
    out = []
    for k, e in enumerate(edges):
        if len(e) != 2:
            raise UserInputError(f"edge {k}: expected [source, destination], got {list(e)!r}")
        s, d = int(e[0]), int(e[1])
        if s != e[0] or d != e[1]:
            raise UserInputError(f"edge {k}: node indices must be integers, got {list(e)!r}")
        if not (0 <= s <= nodes and 0 <= d <= nodes):
            raise UserInputError(f"edge {k}: node index outside 0..{nodes} in {[s, d]}")
        if s == d:
            raise UserInputError(f"edge {k}: self-loop on node {s}")
        out.append((s, d))
    return out


def build(spec: TopologySpec, nodes: int) -> list[tuple[int, int]]:
    """Edge list for a :class:`TopologySpec` over ``nodes`` non-ground nodes."""
    if spec.kind == "full":
        return fully_connected(nodes, spec.repeat, spec.include_ground)
    grid = spec.grid or (1, 1, nodes)
    if grid[0] * grid[1] * grid[2] != nodes:
        raise UserInputError(f"grid {grid} does not hold {nodes} nodes")
    if spec.kind == "neighbourhood":
        edges = neighbourhood(grid, spec.kernel, spec.repeat)
        if spec.include_ground:
            edges += [(k, 0) for k in range(1, nodes + 1)] + [(0, k) for k in range(1, nodes + 1)]
        return edges
    return mixed(grid, spec.kernel, spec.repeat, spec.hubs)
