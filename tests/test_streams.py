"""Reseeded streams: the compiled seeding agrees with numpy's, and draws keep their numbers.

Only the tests of the compiled seeding need the extension; Reseeded and the delay streams are
tested with or without it (without it Reseeded returns numpy's generators).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from gdcode import delays
from gdcode.kernels import reference
from gdcode.streams import Reseeded

try:
    streams = importlib.import_module("gdcode.kernels.streams")
except ImportError:
    streams = None

compiled = pytest.mark.skipif(streams is None, reason="the extension gdcode.kernels.streams is not built")

ENTROPIES = [[0], [1], [0, 0], [2**32 - 1], [2**32], [2**64 - 1], [0, 0xDE1A, 3, 17], [5, 0xDE1A, 3, 17, 2],
             [2**63 + 5, 0xBA7C4, 0, 1], [1, 2, 3, 4, 5, 6, 7, 8], [2**40, 2**33, 7, 2**64 - 2, 0]]


def _numpy_state(entropy):
    state = np.random.PCG64(np.random.SeedSequence(entropy)).state["state"]
    return state["state"], state["inc"]


@pytest.mark.parametrize("entropy", [*ENTROPIES, [2**70, 3], list(range(12))])
def test_numpy_twin_seeding_agrees_with_numpy(entropy):
    assert reference.pcg64_state(entropy) == _numpy_state(entropy)


@compiled
@pytest.mark.parametrize("entropy", ENTROPIES)
def test_compiled_seeding_agrees_with_numpy_and_twin(entropy):
    assert streams.pcg64_state(entropy) == _numpy_state(entropy) == reference.pcg64_state(entropy)


@compiled
def test_compiled_seeding_agrees_on_random_entropy():
    rng = np.random.default_rng(7)
    for _ in range(3000):
        n = int(rng.integers(1, 9))
        bits = rng.choice([1, 16, 32, 33, 63, 64], size=n)
        entropy = [int(rng.integers(0, 2**int(b), dtype=np.uint64)) for b in bits]
        assert streams.pcg64_state(entropy) == _numpy_state(entropy), entropy


@compiled
@pytest.mark.parametrize("entropy", [[-1], [2**64], list(range(9))])
def test_compiled_seeding_refuses_what_it_does_not_take(entropy):
    with pytest.raises(OverflowError):
        streams.pcg64_state(entropy)


@pytest.mark.parametrize("entropy", [*ENTROPIES, [2**70, 3], list(range(12))])
def test_reseeded_draws_numpys_numbers(entropy):
    reseeded = Reseeded()
    expected = np.random.default_rng(entropy)
    for _ in range(2):  # the reused generator is reseeded, not continued
        assert np.array_equal(reseeded(entropy).random(5), np.random.default_rng(entropy).random(5))
    assert reseeded(entropy).exponential(0.5) == expected.exponential(0.5)


@pytest.mark.parametrize("entropy", [[0], [5, 0xDE1A, 3, 17, 2], [2**70, 3]])
def test_reseeded_without_the_extension_returns_numpys_generators(monkeypatch, entropy):
    import gdcode.streams

    monkeypatch.setattr(gdcode.streams, "pcg64_state", None)
    reseeded = Reseeded()
    first = reseeded(entropy)
    assert np.array_equal(first.random(5), np.random.default_rng(entropy).random(5))
    assert reseeded(entropy) is not first  # a generator of its own each call
    with pytest.raises(TypeError):
        reseeded([1.5])


def test_reseeded_refuses_negative_entropy_like_numpy():
    with pytest.raises(ValueError):
        Reseeded()([-1])


@pytest.mark.parametrize("entropy", [[1.5], [3, 0.5]])
def test_reseeded_refuses_non_integers_like_numpy(entropy):
    with pytest.raises(TypeError):
        np.random.default_rng(entropy)
    with pytest.raises(TypeError):
        Reseeded()(entropy)


@compiled
def test_compiled_seeding_refuses_non_integers_like_numpy():
    with pytest.raises(TypeError):
        streams.pcg64_state([1.5])


@pytest.mark.parametrize("spec", ["exp:0.5", "shifted-exp:0.01,0.2", "pareto:0.01,1.5", "markov:0.1,5,0.1,0.3",
                                  "correlated:0.2,0.5,0.3,2"])
def test_draws_come_from_the_documented_streams(spec):
    model = delays.parse(spec, seed=3)
    for worker, iteration, repeat in [(0, 1, 0), (5, 17, 0), (2, 9, 1), (2, 9, 4)]:
        expected = model.sample(np.random.default_rng([3, 0xDE1A, worker, iteration, *([repeat] if repeat else [])]),
                                worker, iteration, 0.0)
        assert model.draw_repeat(worker, iteration, repeat) == expected
        assert model.draw_repeat(worker, iteration, repeat) == model.sample(model.rng(worker, iteration, repeat),
                                                                          worker, iteration, 0.0)
