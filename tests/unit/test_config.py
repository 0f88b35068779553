import subprocess
import sys

import pytest

from relay.config import SETTINGS, ConfigError, load_settings, settings_table_markdown


def test_defaults_match_the_stable_names() -> None:
    s = load_settings(env={})
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.topics == ("relay.events",)
    assert s.data_dir == "./.relay"
    assert s.api_listen == "127.0.0.1:8080"
    assert s.resolved_store_url == "sqlite:///.relay/relay.db"
    assert s.retry_schedule[:3] == (0.0, 5.0, 30.0)
    assert s.retry_max_age == 72 * 3600


def test_toml_overrides_defaults_and_environment_overrides_toml(tmp_path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('[relay]\ntopics = ["a", "b"]\nlane_max_in_flight = 4\ndelivery_timeout = "3s"\n')
    s = load_settings(env={"RELAY_LANE_MAX_IN_FLIGHT": "2"}, config_file=path)
    assert s.topics == ("a", "b")
    assert s.delivery_timeout == 3.0
    assert s.lane_max_in_flight == 2
    assert s.sources["topics"] == str(path)
    assert s.sources["lane_max_in_flight"] == "environment"


def test_config_file_from_environment(tmp_path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('api_listen = "0.0.0.0:9999"\n')
    assert load_settings(env={"RELAY_CONFIG": str(path)}).api_listen == "0.0.0.0:9999"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RELAY_LANE_MAX_IN_FLIGHT": "zero"}, "RELAY_LANE_MAX_IN_FLIGHT"),
        ({"RELAY_LANE_MAX_IN_FLIGHT": "0"}, "RELAY_LANE_MAX_IN_FLIGHT"),
        ({"RELAY_API_LISTEN": "8080"}, "RELAY_API_LISTEN"),
        ({"RELAY_DELIVERY_TIMEOUT": "soon"}, "RELAY_DELIVERY_TIMEOUT"),
        ({"RELAY_RETRY_SCHEDULE": "1s,,x"}, "RELAY_RETRY_SCHEDULE"),
        ({"RELAY_URL_ALLOWLIST": "10.0.0.0/99"}, "RELAY_URL_ALLOWLIST"),
        ({"RELAY_STORE_URL": "mysql://x"}, "RELAY_STORE_URL"),
        ({"RELAY_LOG_LEVEL": "loud"}, "RELAY_LOG_LEVEL"),
    ],
)
def test_bad_values_name_the_setting_and_the_expected_form(env, named) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert named in str(info.value)
    assert "expected" in str(info.value)


def test_unknown_toml_key_is_refused(tmp_path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text("kafka_bootstrapp = 'x:1'\n")
    with pytest.raises(ConfigError, match="unknown setting 'kafka_bootstrapp'"):
        load_settings(env={}, config_file=path)


def test_missing_config_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={}, config_file=tmp_path / "nope.toml")


def test_serve_with_a_bad_setting_exits_non_zero_with_one_clear_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "relay.cli", "serve"],
        env={"RELAY_LANE_MAX_IN_FLIGHT": "-3", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "RELAY_LANE_MAX_IN_FLIGHT" in result.stderr
    assert "Traceback" not in result.stderr


def test_markdown_table_lists_every_setting() -> None:
    table = settings_table_markdown()
    for setting in SETTINGS:
        assert f"`{setting.env}`" in table
