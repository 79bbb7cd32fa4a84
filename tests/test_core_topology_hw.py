"""Topology generators, hardware arithmetic and task generators."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_spec

from models import topology
from models.config import HardwareConstants, TopologySpec
from models.data import TASKS, get_task, potential1, potential2
from models.hardware import chip_timing, projected_latency_s


def test_fully_connected_counts_and_ground():
    assert len(topology.fully_connected(2, 50, True)) == 300  # the published twomoon layer
    edges = topology.fully_connected(3, 1, False)
    assert len(edges) == 6 and all(0 not in e for e in edges)
    assert (0, 0) not in topology.fully_connected(2, 1, True)


def test_neighbourhood_is_local_and_symmetric():
    grid = (1, 4, 4)
    edges = topology.neighbourhood(grid, kernel=3)
    # interior pixel has 8 neighbours, corner 3, edge 5: 4·3 + 8·5 + 4·8 = 84
    assert len(edges) == 84
    assert set(edges) == {(d, s) for s, d in edges}
    two_channel = topology.neighbourhood((2, 2, 2), kernel=3)
    assert len(two_channel) == 8 * 7  # every node sees every other within the 2×2 window


def test_mixed_adds_ground_edges_and_hubs():
    edges = topology.mixed((1, 4, 4), kernel=3, hubs=2)
    assert sum(1 for s, d in edges if d == 0) == 16 and sum(1 for s, d in edges if s == 0) == 16
    hubs = [1, 16]
    for hub in hubs:
        assert all((hub, k) in edges for k in range(1, 17) if k != hub)


def test_build_from_spec_checks_grid():
    with pytest.raises(ValueError, match="does not hold"):
        topology.build(TopologySpec(kind="neighbourhood", grid=(1, 3, 3)), 8)


def test_explicit_edges_errors_name_the_edge():
    with pytest.raises(ValueError, match="edge 1: self-loop"):
        topology.explicit([[0, 1], [2, 2]], 2)
    with pytest.raises(ValueError, match="edge 0: node index outside"):
        topology.explicit([[0, 7]], 2)


def test_projected_latency_arithmetic():
    hw = HardwareConstants()  # 1 pF · 1 V / 1 mA = 1 ns
    assert hw.tau_s == pytest.approx(1e-9)
    t = chip_timing(2.0, HardwareConstants(capacitance_f=2e-12, current_scale_a=1e-6,
                                           dac_setup_s=3e-9, adc_readout_s=4e-9))
    assert t.tau_s == pytest.approx(2e-6) and t.settle_s == pytest.approx(4e-6)
    assert t.total_s == pytest.approx(4e-6 + 7e-9)
    spec = tiny_spec(layers=4, duration=0.25)
    assert projected_latency_s(spec) == pytest.approx(1e-9 + 5e-9 + 5e-9)


def test_tasks_are_seeded_and_shaped():
    for task in TASKS.values():
        if task.kind != "data":
            continue
        a, b = task.sample(100, seed=3), task.sample(100, seed=3)
        assert a.shape == (100, task.dim) and torch.equal(a, b) and torch.isfinite(a).all()
    from sklearn.datasets import make_moons
    assert get_task("twomoon").sample(1000, 0).std(0).numpy() == pytest.approx(
        make_moons(1000, noise=0.1, random_state=0)[0].std(0), rel=0.15)
    d = get_task("digits").sample(500, 0).numpy()
    assert d.min() >= -2 and d.max() <= 2


def test_energies_have_their_minima_where_expected():
    ring = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    u1 = potential1(ring)
    assert u1[0] < u1[1]
    u2 = potential2(torch.tensor([[1.0, float(np.sin(2 * np.pi / 4))], [1.0, 3.0]]))
    assert u2[0] == pytest.approx(0.0, abs=1e-6) and u2[1] > 10


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task"):
        get_task("mnist")
