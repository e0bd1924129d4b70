"""The snapshot ladder and the timestamp -> snapshot mapping."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lnsync.rgs import ladder
from lnsync.rgs.ladder import FULL, NOTHING_NEW, choose, scopes

H = 3600
D = 86400


def test_reference_ladders() -> None:
    assert scopes(3 * H) == [3 * H, 6 * H, 12 * H, D, 2 * D, 4 * D, 8 * D, 16 * D, 32 * D]
    assert scopes(D) == [D, 2 * D, 4 * D, 8 * D, 16 * D, 32 * D]


def test_special_timestamps() -> None:
    R = 1_760_000_000 - 1_760_000_000 % D
    ladder = scopes(D)
    assert choose(0, R, ladder).scope == FULL
    assert choose(R, R, ladder).scope == NOTHING_NEW
    assert choose(R + 5, R, ladder).scope == NOTHING_NEW
    assert choose(R - D, R, ladder).scope == D
    assert choose(R - D - 1, R, ladder).scope == 2 * D
    assert choose(R - 33 * D, R, ladder).scope == FULL


@given(
    R=st.integers(10**9, 2**32 - 1), T=st.integers(1, 2**32 - 1), interval=st.sampled_from([3 * H, D, 2 * D])
)
def test_chosen_scope_always_covers_the_client(R: int, T: int, interval: int) -> None:
    ladder = scopes(interval)
    choice = choose(T, R, ladder)
    if T >= R:
        assert choice.scope == NOTHING_NEW
    elif choice.scope != FULL:
        assert choice.scope >= R - T  # computed against R - scope <= T: a superset of what T lacks
        smaller = [s for s in ladder if s < choice.scope]
        assert all(s < R - T for s in smaller)  # and the smallest such
    else:
        assert ladder[-1] < R - T


def test_apply_lag_covers_publication_serving_and_http_caches() -> None:
    """A blob of the generation at R is served until the next generation is published (R + interval
    + ingest_lag + margin) and an HTTP cache may keep it its lifetime longer: the engine's lag."""
    from lnsync.config import GatewaySettings

    g = GatewaySettings(cache_max_age=600, cache_s_maxage=3600, cache_stale_while_revalidate=300)
    assert g.cache_lifetime == 3900  # the longer of max-age and s-maxage, plus stale-while-revalidate
    assert ladder.apply_lag(86400, 60, 3600) == 86400 + 60 + ladder.APPLY_MARGIN + 3600
    assert ladder.apply_lag(10800, 1, 0) == 10800 + 1 + ladder.APPLY_MARGIN
