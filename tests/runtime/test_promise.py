"""The promise's arithmetic (split conformal bound, fallback) and the audit's breach test."""

from __future__ import annotations

import numpy as np
import pytest

from uvq_int8.runtime import promise as P


def test_the_conformal_rank_is_the_largest_k_with_coverage_at_least_the_fraction():
    assert P.conformal_rank(18) == 0          # 1 - 1/19 < 0.95
    assert P.conformal_rank(19) == 1          # 1 - 1/20 = 0.95
    assert P.conformal_rank(39) == 2 and P.conformal_rank(40) == 2
    assert P.conformal_rank(99, 0.9) == 10
    assert P.frames_needed() == 19 and P.frames_needed(0.9) == 9
    for n in range(1, 200):
        k = P.conformal_rank(n)
        assert k == 0 or 1 - k / (n + 1) >= 0.95 - 1e-12
        assert 1 - (k + 1) / (n + 1) < 0.95
    with pytest.raises(ValueError):
        P.conformal_rank(10, 1.0)


def test_the_bound_is_the_kth_largest_error():
    errors = np.arange(40) / 100.0            # 0.00 .. 0.39; k = 2
    assert P.conformal_bound(errors) == pytest.approx(0.38)
    assert P.conformal_bound(errors[:10]) is None
    p = P.confirm(errors, budget=0.385, images=5, content="natural")
    assert p.holds and p.rank == 2 and p.bound == pytest.approx(0.38)
    assert p.max_logit_delta == pytest.approx(0.39) and p.coverage == pytest.approx(1 - 2 / 41)
    assert "holds" in p.sentence() and "5 images" in p.sentence()
    assert not P.confirm(errors, budget=0.37, images=5, content="natural").holds
    # Too few frames: nothing is promised, whatever the errors.
    small = P.confirm([0.0] * 10, budget=1.0, images=2, content="natural")
    assert not small.holds and "cannot support" in small.sentence()


def test_the_fallback_is_float32_and_keeps_the_budget_by_definition():
    failed = P.confirm(np.full(20, 0.5), budget=0.1, images=5, content="natural")
    assert not failed.holds
    fallback = P.float32_fallback(failed)
    assert fallback.holds and fallback.fallback and fallback.max_logit_delta == 0
    assert P.Promise.from_dict(fallback.as_dict()) == fallback
    assert "fell back to float32" in fallback.sentence()


def test_the_conformal_bound_covers_new_frames_at_the_stated_rate():
    """Exchangeable errors: the bound from n frames covers a new one >= 95% of the time."""
    rng = np.random.default_rng(0)
    hits = []
    for _ in range(4000):
        sample = rng.gamma(2.0, 0.05, 41)
        hits.append(sample[40] <= P.conformal_bound(sample[:40]))
    assert np.mean(hits) >= 0.945


def test_one_unlucky_frame_is_not_a_breach_but_a_pattern_is():
    assert P.binomial_tail(3, 2, 0.05) == pytest.approx(3 * 0.05 ** 2 * 0.95 + 0.05 ** 3)
    assert P.contradicts([0.5], 0.1) == (False, pytest.approx(0.05))
    assert not P.contradicts([0.5] + [0.0] * 9, 0.1)[0]
    assert P.contradicts([0.5, 0.5, 0.0], 0.1)[0]
    assert not P.contradicts([0.5] * 4 + [0.0] * 16, 0.1)[0]   # p = 0.016
    assert P.contradicts([0.5] * 5 + [0.0] * 15, 0.1)[0]       # p = 0.003
    assert not P.contradicts([0.1] * 30, 0.1)[0]                # at the budget is within


def test_looks_split_the_miscoverage_and_need_more_frames():
    assert P.look_fraction(0.95, 1) == pytest.approx(0.95)
    assert P.look_fraction(0.95, 2) == pytest.approx(0.975)
    assert P.frames_needed(0.95, 2) == 39 and P.frames_needed(0.95, 3) == 59
    assert P.supported_looks(60, 0.95, 3) == 3
    assert P.supported_looks(40, 0.95, 3) == 2
    assert P.supported_looks(19, 0.95, 3) == 1 and P.supported_looks(18, 0.95, 3) == 0
    p = P.confirm(np.arange(60) / 100.0, budget=0.6, images=5, content="natural", looks=3)
    assert p.rank == 1 and p.bound == pytest.approx(0.59) and p.holds
    assert p.coverage == pytest.approx(1 - 3 / 61) and p.coverage >= 0.95
    with pytest.raises(ValueError):
        P.look_fraction(0.95, 0)


def test_a_rejected_first_choice_ends_on_the_next_candidate_not_on_float32():
    # A constructed case: the fastest choice misses on the confirmation frames, the next holds.
    errors = {"int8": np.full(60, 0.3), "mixed": np.linspace(0, 0.08, 60), "fp16": np.zeros(60)}
    looked = []

    def deltas_of(choice):
        looked.append(choice)
        return errors[choice]

    chosen, found, rejected = P.confirm_first(["int8", "mixed", "fp16"], deltas_of, 0.1, 5,
                                              "natural", 0.95, looks=3)
    assert chosen == "mixed" and found.holds and found.look == 2 and found.looks == 3
    assert [c for c, _ in rejected] == ["int8"] and not rejected[0][1].holds
    assert looked == ["int8", "mixed"]  # the third was never measured
    # No more looks than allowed: with one look the miss ends the search.
    chosen, found, rejected = P.confirm_first(["int8", "mixed"], deltas_of, 0.1, 5, "natural",
                                              0.95, looks=1)
    assert chosen is None and found is None and len(rejected) == 1


def test_the_bonferroni_bound_covers_the_kept_choice_at_the_promised_rate():
    """Three candidates, each over budget on some share of frames: the one kept after up to
    three looks leaves a new frame over D at most 5 % of the time (the union bound)."""
    rng = np.random.default_rng(1)
    budget, over = 0.1, 0.0
    trials = 3000
    shares = (0.2, 0.08, 0.04)  # the share of frames over D for each candidate
    kept = 0
    for _ in range(trials):
        frames = {i: np.where(rng.random(61) < s, 0.2, 0.0) for i, s in enumerate(shares)}
        chosen, found, _ = P.confirm_first(range(3), lambda i: frames[i][:60], budget, 5,
                                           "natural", 0.95, looks=3)
        if chosen is not None:
            kept += 1
            over += frames[chosen][60] > budget
    assert kept > 0 and over / trials <= 0.05
