"""Configuration: TOML + environment, precedence, and one clear error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from lnsync.config import ConfigError, PeerAddress, load_settings

KEY = "035e4ff418fc8b5554c5d9eea66396c227bd429a3251c8cbc711002ba215bfc226"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for var in list(os.environ):
        if var.startswith("LNSYNC_"):
            monkeypatch.delenv(var)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "lnsync.toml"
    p.write_text(text)
    return p


def test_defaults_serve_mainnet_with_public_peers() -> None:
    s = load_settings()
    assert s.network == "bitcoin"
    assert len(s.peer_addresses) >= 2
    assert s.snapshotter.interval == 86400


def test_env_beats_file_and_overrides_beat_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write(tmp_path, 'network = "testnet"\n[gateway]\nlisten = "127.0.0.1:1"\nmax_dynamic = 3\n')
    monkeypatch.setenv("LNSYNC_GATEWAY__LISTEN", "127.0.0.1:2")
    s = load_settings(cfg)
    assert s.network == "testnet"
    assert s.gateway.listen == "127.0.0.1:2"
    assert s.gateway.max_dynamic == 3  # nested file values survive an env override of a sibling
    s = load_settings(cfg, network="regtest")
    assert s.network == "regtest"


def test_mainnet_alias_and_peer_list_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LNSYNC_NETWORK", "Mainnet")
    monkeypatch.setenv("LNSYNC_PEERS", f"{KEY}@[::1]:9736, 02{'ab' * 32}@node.example.com,")
    s = load_settings()
    assert s.network == "bitcoin"
    a, b = s.peer_addresses
    assert (a.host, a.port) == ("::1", 9736)
    assert (b.host, b.port) == ("node.example.com", 9735)


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ("netwrk = 'bitcoin'", "netwrk: unknown setting"),
        ("[gateway]\nlsten = '1:1'", "gateway.lsten: unknown setting"),
        ("[snapshotter]\ninterval = 20000", "multiple of 10800"),
        ("network = 'litecoin'", "unknown network 'litecoin'"),
        ("peers = ['nonsense']", "must look like"),
        (f"peers = ['{KEY}@x.onion:9735']", "Tor (.onion) peers are not supported"),
        (f"peers = ['{KEY}@1.2.3.4:99999']", "port '99999'"),
        (f"peers = ['{KEY}@1.2.3.4', '{KEY}@5.6.7.8']", "listed twice"),
        ("[lookup]\nlisten = 'nowhere'", "is not host:port"),
        ("[gateway]\nadmin_listen = '0.0.0.0:8080'", "admin_listen must use another port than listen"),
        ("[gateway]\ncors_origins = ['*', 'https://a.example']", "list it alone"),
        ("[gateway]\ncors_origins = ['https://a.example/path']", "is not an origin"),
        ("[gateway]\ncache_stale_if_error = -1", "greater than or equal to 0"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, toml))
    assert fragment in str(err.value)


def test_gateway_admin_listener_and_cors_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    g = load_settings().gateway
    assert (g.listen, g.admin_listen) == ("127.0.0.1:8080", "127.0.0.1:8081")  # operator routes stay local
    assert g.cors_origins == ["*"]
    monkeypatch.setenv("LNSYNC_GATEWAY__CORS_ORIGINS", "https://a.example, http://localhost:3000,")
    assert load_settings().gateway.cors_origins == ["https://a.example", "http://localhost:3000"]
    monkeypatch.setenv("LNSYNC_GATEWAY__CORS_ORIGINS", "")
    assert load_settings().gateway.cors_origins == []


def test_unknown_environment_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LNSYNC_GATEWAY__LISTNE", "x")
    with pytest.raises(ConfigError, match="LNSYNC_GATEWAY__LISTNE"):
        load_settings()


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "network = "))


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        (f"{KEY}@1.2.3.4:9735", "1.2.3.4", 9735),
        (f"{KEY}@[2001:db8::1]:9999", "2001:db8::1", 9999),
        (f"{KEY}@example.org", "example.org", 9735),
    ],
)
def test_peer_address_round_trip(text: str, host: str, port: int) -> None:
    p = PeerAddress.parse(text)
    assert (p.host, p.port, p.node_id) == (host, port, KEY)
    assert PeerAddress.parse(str(p)) == p


def test_superseded_retention_must_cover_every_delta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Below max(14 days, the largest snapshot scope) + ingest_lag + the generation margin, pruned
    superseded updates would take change masks a served delta needs."""
    from lnsync.rgs import ladder

    assert load_settings().persistence.superseded_retention >= ladder.min_superseded_retention(86400, 60)
    # The daily ladder's largest scope is 32 days: 32 days + 60 s + 600 s.
    assert ladder.min_superseded_retention(86400, 60) == 32 * 86400 + 660
    # A 9-hour interval's ladder ends at 24 days; nothing may go below 14 days.
    assert ladder.min_superseded_retention(9 * 3600, 60) == 24 * 86400 + 660
    monkeypatch.setenv("LNSYNC_PERSISTENCE__SUPERSEDED_RETENTION", str(32 * 86400))
    with pytest.raises(ConfigError, match=r"persistence.superseded_retention must be at least 2765460 s"):
        load_settings()
    monkeypatch.setenv("LNSYNC_PERSISTENCE__SUPERSEDED_RETENTION", str(13 * 86400))
    monkeypatch.setenv("LNSYNC_SNAPSHOTTER__INTERVAL", str(9 * 3600))
    with pytest.raises(ConfigError, match="largest snapshot scope 24 days"):
        load_settings()
    monkeypatch.setenv("LNSYNC_PERSISTENCE__SUPERSEDED_RETENTION", str(24 * 86400 + 660))
    assert load_settings().persistence.superseded_retention == 24 * 86400 + 660


def test_chain_source_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().chain.source == "none"  # the default: funding outputs are not checked
    monkeypatch.setenv("LNSYNC_CHAIN__SOURCE", "bitcoind")
    with pytest.raises(ConfigError, match=r"chain\.url is required with chain\.source = bitcoind"):
        load_settings()
    monkeypatch.setenv("LNSYNC_CHAIN__URL", "http://127.0.0.1:8332")
    monkeypatch.setenv("LNSYNC_CHAIN__COOKIE_FILE", "/var/lib/bitcoind/.cookie")
    s = load_settings()
    assert (s.chain.source, s.chain.url, s.chain.max_concurrent) == ("bitcoind", "http://127.0.0.1:8332", 8)
    monkeypatch.setenv("LNSYNC_CHAIN__SOURCE", "electrum")
    with pytest.raises(ConfigError, match=r"chain\.source"):
        load_settings()


def test_readme_configuration_table_is_generated_from_config() -> None:
    """README.md's table lists every setting with its default and meaning, as config.py says."""
    import runpy

    from tests.conftest import ROOT

    generator = runpy.run_path(str(ROOT / "scripts" / "config_table.py"))
    readme = (ROOT / "README.md").read_text()
    assert generator["updated_readme"](readme) == readme, "run: python scripts/config_table.py"
    for key in ("lookup.max_concurrent", "snapshotter.keep_generations", "<service>.metrics_listen"):
        assert f"| `{key}` |" in readme
