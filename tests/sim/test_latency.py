"""Latency models: fixed and lognormal draws, spikes, seeding, and config round trips."""

from __future__ import annotations

import random
import statistics

import msgspec
import pytest

from sim.latency import ConstantLatency, Latency, LognormalLatency


def test_constant_latency_when_only_entry_set_then_cancel_and_response_default_to_it() -> None:
    model = ConstantLatency(entry=700)
    rng = random.Random(1)
    assert (model.entry_ns(rng), model.cancel_ns(rng), model.response_ns(rng)) == (700, 700, 700)
    other = ConstantLatency(entry=700, cancel=200, response=50)
    assert (other.entry_ns(rng), other.cancel_ns(rng), other.response_ns(rng)) == (700, 200, 50)


def test_constant_latency_when_no_spikes_then_generator_untouched() -> None:
    rng = random.Random(5)
    before = rng.getstate()
    ConstantLatency(entry=10).entry_ns(rng)
    assert rng.getstate() == before


def test_constant_latency_when_spike_prob_one_then_every_draw_spikes() -> None:
    model = ConstantLatency(entry=100, spike_prob=1.0, spike_ns=5_000)
    assert model.entry_ns(random.Random(0)) == 5_100


def test_lognormal_latency_when_seeded_then_reproducible_and_centred_on_median() -> None:
    model = LognormalLatency(median_ns=1_000_000, sigma=0.5)
    a = [model.entry_ns(random.Random(9)) for _ in range(3)]
    assert len(set(a)) == 1  # same seed, same draw
    rng = random.Random(42)
    draws = [model.entry_ns(rng) for _ in range(4_000)]
    assert all(isinstance(d, int) and d > 0 for d in draws)
    assert 900_000 < statistics.median(draws) < 1_100_000
    assert len(set(draws)) > 3_000


def test_lognormal_latency_when_spikes_then_about_the_given_share_is_slow() -> None:
    model = LognormalLatency(median_ns=1_000, sigma=0.1, spike_prob=0.2, spike_ns=1_000_000)
    rng = random.Random(3)
    draws = [model.response_ns(rng) for _ in range(2_000)]
    share = sum(d > 500_000 for d in draws) / len(draws)
    assert 0.16 < share < 0.24


def test_lognormal_latency_when_medians_differ_then_each_kind_uses_its_own() -> None:
    model = LognormalLatency(
        median_ns=1_000, cancel_median_ns=100_000, response_median_ns=10_000_000, sigma=0.0
    )
    rng = random.Random(0)
    assert (model.entry_ns(rng), model.cancel_ns(rng), model.response_ns(rng)) == (
        1_000,
        100_000,
        10_000_000,
    )


def test_latency_when_encoded_then_round_trips_as_tagged_union() -> None:
    for model in (ConstantLatency(entry=5, spike_prob=0.1, spike_ns=9), LognormalLatency()):
        data = msgspec.json.encode(model)
        assert msgspec.json.decode(data, type=Latency) == model


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ConstantLatency(entry=-1), "ConstantLatency.entry must be >= 0 ns, got -1"),
        (
            lambda: ConstantLatency(spike_prob=2.0),
            r"ConstantLatency.spike_prob must be in \[0, 1\]",
        ),
        (lambda: LognormalLatency(median_ns=0), "LognormalLatency.median_ns must be > 0 ns"),
        (lambda: LognormalLatency(sigma=-0.1), "LognormalLatency.sigma must be >= 0"),
    ],
)
def test_latency_when_invalid_then_value_error_names_field(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]
