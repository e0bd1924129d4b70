"""Observer settings and the ``lnsync observe`` command refuse bad input with one clear line."""

from __future__ import annotations

import pytest

from lnsync import cli
from lnsync.config import ConfigError, load_settings
from services.observer.report import parse_duration


def test_interval_must_divide_a_day() -> None:
    assert (
        load_settings(None, persistence={"observation_interval": 900}).persistence.observation_interval == 900
    )
    assert load_settings(None, persistence={"observation_interval": 0}).persistence.observation_interval == 0
    for bad in (7, 7000):
        with pytest.raises(ConfigError, match="observation_interval"):
            load_settings(None, persistence={"observation_interval": bad})


def test_raw_rows_must_outlive_an_interval() -> None:
    with pytest.raises(ConfigError, match="observation_retention"):
        load_settings(None, persistence={"observation_retention": 3600})  # < 2 x (3600 + 3600)
    ok = load_settings(None, persistence={"observation_retention": 3600, "observation_interval": 0})
    assert ok.persistence.observation_retention == 3600


def test_reconcile_intervals_are_increasing_seconds() -> None:
    assert load_settings(None).observer.reconcile_intervals == [1, 10, 60, 600]
    assert load_settings(None, observer={"reconcile_intervals": [5]}).observer.reconcile_intervals == [5]
    for bad in ([60, 10], [], [0, 1], [1, 86401], list(range(1, 10))):
        with pytest.raises(ConfigError, match="reconcile_intervals"):
            load_settings(None, observer={"reconcile_intervals": bad})


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90s", "15m", "24h", "7d", "1w", "600")] == [
        90,
        900,
        86400,
        604800,
        604800,
        600,
    ]
    for bad in ("", "h", "-1h", "0h", "1.5h", "24x"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_observe_report_errors(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LNSYNC_DATABASE_URL", raising=False)
    monkeypatch.delenv("LNSYNC_CONFIG", raising=False)
    assert cli.main(["observe", "report", "--since", "yesterday"]) == 2
    assert "--since: not a duration" in capsys.readouterr().err
    assert cli.main(["observe", "report", "--since", "1h"]) == 2
    assert "database_url is not set" in capsys.readouterr().err
    for bad in ("10,1", "0", "1,x"):
        assert cli.main(["observe", "report", "--intervals", bad, "--database-url", "postgresql:///x"]) == 2
        assert "--intervals: " in capsys.readouterr().err


def test_random_peer_set_is_bounded() -> None:
    o = load_settings(None).observer
    assert (o.random_peers, o.max_random_peers, o.rotate_interval, o.rotate_share) == (0, 32, 3600, 0.25)
    ok = load_settings(None, observer={"random_peers": 40, "max_random_peers": 40}).observer
    assert ok.random_peers == 40
    too_many = r"observer\.random_peers \(33\) exceeds observer\.max_random_peers \(32\)"
    with pytest.raises(ConfigError, match=too_many):
        load_settings(None, observer={"random_peers": 33})
    with pytest.raises(ConfigError, match=r"observer\.max_random_peers"):
        load_settings(None, observer={"max_random_peers": 501})
    for key, bad in (
        ("rotate_share", 0),
        ("rotate_share", 1.5),
        ("rotate_interval", 0),
        ("attempts_per_minute", 0),
        ("stall_timeout", 1),
        ("random_peers", -1),
    ):
        with pytest.raises(ConfigError, match=rf"observer\.{key}"):
            load_settings(None, observer={key: bad})
