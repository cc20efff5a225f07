"""Settings declared once: layers in order, both environment spellings, errors that name their
source, and the reference in docs/ generated from the declarations."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowlens.agent.config import AgentConfig
from flowlens.collector.config import CollectorConfig
from flowlens.model.errors import ConfigError
from flowlens.surfaces.settings_cli import settings_markdown

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_flowlens_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os
    for name in [n for n in os.environ if n.startswith("FLOWLENS_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def test_layers_default_file_environment_flag(tmp_path: Path, no_flowlens_env: pytest.MonkeyPatch) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("interval: 2\nmax-flow-series: 40\nidle-grace: 60\nport: 9200\n")
    no_flowlens_env.setenv("FLOWLENS_AGENT_MAX_FLOW_SERIES", "30")
    no_flowlens_env.setenv("FLOWLENS_AGENT_PORT", "9300")
    config = AgentConfig.load(path, {"port": 9400, "interval": None})
    assert (config.interval, config.max_flow_series, config.idle_grace, config.port) == (2.0, 30, 60.0, 9400)
    assert config.spool_max_bytes == 64 << 20  # untouched: the default


def test_the_older_environment_names_still_work_and_the_new_ones_win(no_flowlens_env: pytest.MonkeyPatch) -> None:
    no_flowlens_env.setenv("FLOWLENS_INTERVAL", "3")
    no_flowlens_env.setenv("FLOWLENS_STORE", "/tmp/old.duckdb")
    assert AgentConfig.load().interval == 3.0
    assert CollectorConfig.load().store == "/tmp/old.duckdb"
    no_flowlens_env.setenv("FLOWLENS_AGENT_INTERVAL", "4")
    no_flowlens_env.setenv("FLOWLENS_COLLECTOR_STORE", "/tmp/new.duckdb")
    assert AgentConfig.load().interval == 4.0
    assert CollectorConfig.load().store == "/tmp/new.duckdb"


def test_an_agent_variable_never_reaches_the_collector(no_flowlens_env: pytest.MonkeyPatch) -> None:
    no_flowlens_env.setenv("FLOWLENS_PORT", "9999")
    no_flowlens_env.setenv("FLOWLENS_AGENT_ADDRESS", "0.0.0.0")
    collector = CollectorConfig.load()
    assert (collector.port, collector.address) == (9102, "127.0.0.1")


def test_lists_from_the_environment_are_comma_or_space_separated(no_flowlens_env: pytest.MonkeyPatch) -> None:
    no_flowlens_env.setenv("FLOWLENS_COLLECTOR_TOKEN_FILE", "/a/tokens, /b/tokens")
    no_flowlens_env.setenv("FLOWLENS_COLLECTOR_READ_TOKENS", "r1,r2")
    config = CollectorConfig.load()
    assert config.token_files == ("/a/tokens", "/b/tokens") and config.read_tokens == ("r1", "r2")
    assert CollectorConfig.load(flags={"token_files": ("/c",)}).token_files == ("/c",)


def test_settings_built_in_code_ignore_the_environment(no_flowlens_env: pytest.MonkeyPatch) -> None:
    no_flowlens_env.setenv("FLOWLENS_AGENT_INTERVAL", "7")
    assert AgentConfig(node="n").interval == 5.0


@pytest.mark.parametrize(("layer", "says"), [
    ("flag", "interval must be between 0.1 and 3600 seconds, got 0.0 (--interval)"),
    ("env", "interval: input should be a valid number, unable to parse string as a number, got 'soon' "
            "(environment FLOWLENS_AGENT_INTERVAL)"),
    ("file", "interval must be between 0.1 and 3600 seconds, got 9000 (config file {path})"),
])
def test_a_bad_value_names_its_setting_and_where_it_came_from(tmp_path: Path, no_flowlens_env: pytest.MonkeyPatch,
                                                            layer: str, says: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("interval: 9000\n" if layer == "file" else "{}\n")
    if layer == "env":
        no_flowlens_env.setenv("FLOWLENS_AGENT_INTERVAL", "soon")
    with pytest.raises(ConfigError) as caught:
        AgentConfig.load(path, {"interval": 0.0} if layer == "flag" else {})
    assert str(caught.value) == says.format(path=path)


def test_unknown_keys_in_the_file_are_named(tmp_path: Path, no_flowlens_env: pytest.MonkeyPatch) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text("prot: 9102\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'prot' \(known: address, port, store"):
        CollectorConfig.load(path)


def test_checks_across_settings() -> None:
    with pytest.raises(ConfigError, match=r"^tls-cert and tls-key go together"):
        CollectorConfig(tls_cert="c.pem")
    with pytest.raises(ConfigError, match=r"^idle-grace must be at least one interval"):
        AgentConfig(interval=10.0, idle_grace=5.0)


def test_the_settings_reference_is_up_to_date() -> None:
    generated = settings_markdown(("Agent (`flowlens agent`)", AgentConfig),
                                  ("Collector (`flowlens collector`)", CollectorConfig))
    assert (ROOT / "docs" / "settings.md").read_text() == generated, \
        "regenerate with: .venv/bin/flowlens settings-doc > docs/settings.md"
    for item in AgentConfig.declared() + CollectorConfig.declared():
        assert item.env in generated and item.help
