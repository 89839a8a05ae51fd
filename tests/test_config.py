"""Config file, environment and flag precedence."""

import pytest

from contextbox.config import Config
from contextbox.errors import ConfigError

TOML = """
model = "fake/m1"
sub_model = "fake/m2"
levels = ["l1", "l4"]
runs_dir = "~/runs-x"
preview_chars = 100
regex_timeout_s = 2.5

[limits]
max_iterations = 7
max_output_chars = 1234
max_total_tokens = 5000
max_cost_usd = 0.5
timeout_s = 30
max_consecutive_errors = 2

[aids]
grounding = true
too_many_hits = 10

[code]
l2_memory_mb = 256

[local]
context_tokens = 8192

[prices]
"fake/m1" = { input = 1.0, output = 2.0 }

[[providers]]
name = "fake"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "FAKE_KEY"
role = "both"
max_concurrency = 3
"""


def write(tmp_path, text):
    p = tmp_path / "contextbox.toml"
    p.write_text(text)
    return p


def test_every_key_is_read(tmp_path):
    cfg = Config.load(write(tmp_path, TOML), env={})
    assert cfg.model == "fake/m1" and cfg.sub_model == "fake/m2"
    assert cfg.levels == ("l1", "l4")
    assert str(cfg.runs_dir).endswith("runs-x") and "~" not in str(cfg.runs_dir)
    assert cfg.preview_chars == 100 and cfg.regex_timeout_s == 2.5
    lim = cfg.limits
    assert (lim.max_iterations, lim.max_output_chars, lim.max_total_tokens) == (7, 1234, 5000)
    assert (lim.max_cost_usd, lim.timeout_s, lim.max_consecutive_errors) == (0.5, 30.0, 2)
    assert cfg.aids.grounding is True and cfg.aids.too_many_hits == 10
    assert cfg.code.l2_memory_mb == 256 and cfg.local.context_tokens == 8192
    assert cfg.prices["fake/m1"] == (1.0, 2.0)
    (p,) = cfg.providers
    assert (p.name, p.kind, p.base_url, p.api_key_env, p.role, p.max_concurrency) == (
        "fake", "openai", "http://127.0.0.1:9/v1", "FAKE_KEY", "both", 3)


def test_precedence_flag_over_env_over_file(tmp_path):
    f = write(tmp_path, TOML)
    env = {"CONTEXTBOX_MODEL": "fake/env", "CONTEXTBOX_MAX_ITERATIONS": "9"}
    cfg = Config.load(f, env=env)
    assert cfg.model == "fake/env" and cfg.limits.max_iterations == 9
    cfg = Config.load(f, env=env, model="fake/flag", max_iterations=3)
    assert cfg.model == "fake/flag" and cfg.limits.max_iterations == 3


@pytest.mark.parametrize("text,needle", [
    ("modle = 'x'", "unknown key 'modle'"),
    ("[limits]\nmax_iteration = 3", "unknown key 'max_iteration'"),
    ("[limits]\nmax_iterations = 'many'", "bad value for max_iterations"),
    ("levels = ['l9']", "unknown level"),
    ("[[providers]]\nkind = 'openai'", "needs a name"),
    ("[[providers]]\nname = 'x'\nrole = 'boss'", "role must be"),
    ("[[providers]]\nname = 'x'\napikey = 'k'", "unknown key(s) apikey"),
    ("this is not toml", "not valid TOML"),
])
def test_bad_config_is_one_clear_error(tmp_path, text, needle):
    with pytest.raises(ConfigError, match=None) as e:
        Config.load(write(tmp_path, text), env={})
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_discovery_cwd_then_xdg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONTEXTBOX_CONFIG", raising=False)
    xdg = tmp_path / "xdg"
    (xdg / "contextbox").mkdir(parents=True)
    (xdg / "contextbox" / "config.toml").write_text('model = "fake/xdg"')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    assert Config.load().model == "fake/xdg"
    (tmp_path / "contextbox.toml").write_text('model = "fake/cwd"')
    assert Config.load().model == "fake/cwd"


def test_missing_explicit_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        Config.load(tmp_path / "nope.toml")


def test_secrets_masked(tmp_path):
    cfg = Config.load(write(tmp_path, TOML), env={})
    import os

    os.environ["FAKE_KEY"] = "sk-verysecretvalue-1234"
    try:
        d = cfg.to_dict()
        assert d["providers"][0]["api_key"] == "sk-…1234"
        assert "verysecret" not in str(d)
    finally:
        del os.environ["FAKE_KEY"]


@pytest.mark.parametrize("text,needle", [
    ("[limits]\nmax_iterations = 0", "max_iterations must be at least 1"),
    ("[limits]\ntimeout_s = -5", "timeout_s must be greater than 0"),
    ("[limits]\nmax_consecutive_errors = 0", "max_consecutive_errors must be at least 1"),
    ("[server]\nhost = 5", "expected a string"),
    ("[server]\nroots = \"abc\"", "expected a list of strings"),
    ("[local]\nthreads = \"many\"", "bad value for threads"),
])
def test_bad_types_and_ranges_are_refused(tmp_path, text, needle):
    with pytest.raises(ConfigError) as e:
        Config.load(write(tmp_path, text), env={})
    assert needle in str(e.value)


def test_negative_timeout_flag_is_a_usage_error(tmp_path):
    with pytest.raises(ConfigError, match="timeout_s"):
        Config.load(None, env={}, timeout_s=-5)
