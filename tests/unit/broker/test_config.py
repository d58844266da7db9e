from __future__ import annotations

from pathlib import Path

import pytest

from broker import ConfigError, load_settings


class TestLoadSettings:
    def test_defaults_are_safe_when_nothing_is_configured(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("ATLAS_CONFIG", raising=False)
        settings = load_settings()
        assert settings.nats.url is None
        assert settings.nats.host == "127.0.0.1"
        assert settings.nats.sync_always is True

    def test_environment_overrides_file_when_both_set(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "atlas.toml"
        path.write_text("[router]\nworkers = 3\n[nats]\nport = 4999\n")
        monkeypatch.setenv("ATLAS_ROUTER__WORKERS", "5")
        settings = load_settings(path)
        assert settings.router.workers == 5
        assert settings.nats.port == 4999

    def test_error_names_unknown_setting_when_file_has_a_typo(self, tmp_path: Path) -> None:
        path = tmp_path / "atlas.toml"
        path.write_text("[nats]\nprot = 4222\n")
        with pytest.raises(ConfigError, match=r"nats\.prot: unknown setting"):
            load_settings(path)

    def test_error_names_setting_when_value_is_invalid(self, tmp_path: Path) -> None:
        path = tmp_path / "atlas.toml"
        path.write_text("[router]\nworkers = 0\n")
        with pytest.raises(ConfigError, match=r"router\.workers"):
            load_settings(path)

    @pytest.mark.parametrize(
        "url", ["taxii.example.org", "ftp://taxii.example.org", "https://h.example/?x=1"]
    )
    def test_error_names_taxii_public_url_when_not_a_plain_http_url(
        self, tmp_path: Path, url: str
    ) -> None:
        path = tmp_path / "atlas.toml"
        path.write_text(f'[taxii]\npublic_url = "{url}"\n')
        with pytest.raises(ConfigError, match=r"taxii\.public_url"):
            load_settings(path)

    def test_taxii_public_url_loses_its_trailing_slash(self, tmp_path: Path) -> None:
        path = tmp_path / "atlas.toml"
        path.write_text('[taxii]\npublic_url = "https://taxii.example.org/"\n')
        assert load_settings(path).taxii.public_url == "https://taxii.example.org"

    @pytest.mark.parametrize("entry", ["*", "proxy.example.org", "10.0.0.0/33"])
    def test_error_names_taxii_trusted_proxies_when_not_an_address(
        self, tmp_path: Path, entry: str
    ) -> None:
        path = tmp_path / "atlas.toml"
        path.write_text(f'[taxii]\ntrusted_proxies = ["{entry}"]\n')
        with pytest.raises(ConfigError, match=r"taxii\.trusted_proxies"):
            load_settings(path)

    def test_taxii_trusted_proxies_take_addresses_and_networks(self, tmp_path: Path) -> None:
        path = tmp_path / "atlas.toml"
        path.write_text('[taxii]\ntrusted_proxies = ["10.0.0.5", "10.1.0.0/16", "::1"]\n')
        assert load_settings(path).taxii.trusted_proxies == ["10.0.0.5", "10.1.0.0/16", "::1"]

    def test_error_when_file_is_missing(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="does not exist"):
            load_settings(tmp_path / "nope.toml")

    def test_error_when_file_is_not_toml(self, tmp_path: Path) -> None:
        path = tmp_path / "atlas.toml"
        path.write_text("[nats\n")
        with pytest.raises(ConfigError, match="not valid TOML"):
            load_settings(path)

    def test_error_when_two_nats_credentials_are_given(self, tmp_path: Path) -> None:
        path = tmp_path / "atlas.toml"
        path.write_text('[nats]\ntoken = "t"\nuser = "u"\npassword = "p"\n')
        with pytest.raises(ConfigError, match="one NATS credential"):
            load_settings(path)

    def test_error_when_bundle_limit_exceeds_payload(self, tmp_path: Path) -> None:
        path = tmp_path / "atlas.toml"
        path.write_text("[limits]\nmax_bundle_bytes = 2000000\n")
        with pytest.raises(ConfigError, match=r"too large for nats\.max_payload"):
            load_settings(path)

    def test_error_when_packages_of_the_largest_bundle_would_not_fit(self, tmp_path: Path) -> None:
        path = tmp_path / "atlas.toml"
        path.write_text("[limits]\nmax_bundle_bytes = 900000\n")  # < max_payload, > 3/4
        with pytest.raises(ConfigError, match=r"packages would not fit one message; at most"):
            load_settings(path)

    def test_sample_configuration_loads(self) -> None:
        sample = Path(__file__).parents[3] / "deploy" / "atlas.toml"
        settings = load_settings(sample)
        assert settings.router.workers >= 1
