"""CLI conventions: -m anywhere, bare ids, aliases, keys, models, --version, runs show latest / list filters,
--system, and help text on every flag. Through the real ``rlm`` entry point."""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_cli import rlm, script

import contextbox
from contextbox.cli import build_parser, main
from contextbox.errors import UsageError
from contextbox.model_ids import BARE_ID_PREFIXES, expand_spec


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An empty config dir (aliases, keys) and no provider keys in the environment."""
    cfg = tmp_path / "xdg"
    cfg.mkdir()
    env = {"XDG_CONFIG_HOME": str(cfg), "OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": "", "DEEPSEEK_API_KEY": ""}
    return env


@pytest.fixture
def cli(monkeypatch, capsys):
    """``rlm ARGS`` run in this process (cli.main), for the quick sub-commands; same result shape as ``rlm``."""
    def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None):
        with monkeypatch.context() as m:
            for k, v in {"CONTEXTBOX_RUNS_DIR": "", **(env or {})}.items():
                m.setenv(k, v)
            m.delenv("CONTEXTBOX_MODEL", raising=False)
            if stdin is not None:
                m.setattr(sys, "stdin", io.StringIO(stdin))
            capsys.readouterr()
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse errors
                code = e.code
            out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)
    return run


def fake_openai(tmp_path: Path, fake_llm, name: str = "openai") -> Path:
    """A config whose ``openai`` provider is the loopback fake server (same api_key_env as the built-in)."""
    f = tmp_path / "contextbox.toml"
    f.write_text(f'[[providers]]\nname = "{name}"\nkind = "openai"\nbase_url = "{fake_llm.base_url}"\n'
                 'api_key_env = "OPENAI_API_KEY"\n')
    return f


def ctx_file(tmp_path: Path, text: str = "the key is 99\n") -> str:
    f = tmp_path / "c.txt"
    f.write_text(text)
    return str(f)


FIND_THEN_99 = [json.dumps({"op": "find", "text": "key"}), json.dumps({"op": "final", "answer": "99"})]


# ---------------------------------------------------------------------- bare ids, -m before the question
def test_bare_id_resolves_to_openai_with_m_before_the_question(tmp_path, fake_llm, home):
    fake_llm.replies = FIND_THEN_99
    cfg = fake_openai(tmp_path, fake_llm)
    p = rlm("ask", "-m", "gpt-4o-mini", "key?", "-c", ctx_file(tmp_path), "--config", str(cfg), "--json",
            "--runs-dir", str(tmp_path / "r"), env={**home, "OPENAI_API_KEY": "sk-test"})
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["answer"] == "99"
    assert [r["model"] for r in fake_llm.requests] == ["gpt-4o-mini", "gpt-4o-mini"]
    log = [json.loads(x) for x in (tmp_path / "r" / f"{out['run_id']}.jsonl").read_text().splitlines()]
    assert log[0]["type"] == "run_start" and log[0]["data"]["model"] == "openai/gpt-4o-mini"


@pytest.mark.parametrize("bare,full", [
    ("gpt-4o-mini", "openai/gpt-4o-mini"), ("gpt-4.1-nano", "openai/gpt-4.1-nano"), ("o3-mini", "openai/o3-mini"),
    ("claude-3-5-haiku-latest", "anthropic/claude-3-5-haiku-latest"), ("deepseek-chat", "deepseek/deepseek-chat"),
    ("openrouter/x/y", "openrouter/x/y"), ("local", "local"), ("scripted:/a:b", "scripted:/a:b"),
    ("ollama/llama3:8b", "ollama/llama3:8b"), ("mystery-model", "mystery-model"),
])
def test_bare_id_table(bare, full):
    assert expand_spec(bare, {}) == full


def test_every_table_prefix_maps_to_a_builtin_provider():
    from contextbox.providers import BUILTIN_PROVIDERS

    for prefix, provider in BARE_ID_PREFIXES:
        assert provider in BUILTIN_PROVIDERS
        assert expand_spec(prefix + "x", {}) == f"{provider}/{prefix}x"


def test_unknown_bare_id_is_one_line_usage_error(tmp_path, home):
    p = rlm("ask", "q", "-m", "mystery-model", "-c", ctx_file(tmp_path), env=home)
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "unknown model 'mystery-model'" in p.stderr and "alias" in p.stderr


# ---------------------------------------------------------------------- aliases
def test_alias_set_list_use_remove(tmp_path, fake_llm, home, cli):
    fake_llm.replies = FIND_THEN_99
    cfg = fake_openai(tmp_path, fake_llm)
    p = cli("aliases", "set", "fast", "gpt-4.1-nano", env=home)
    assert p.returncode == 0, p.stderr
    assert "fast → openai/gpt-4.1-nano" in p.stdout
    stored = json.loads((Path(home["XDG_CONFIG_HOME"]) / "contextbox" / "aliases.json").read_text())
    assert stored == {"fast": "gpt-4.1-nano"}
    assert cli("aliases", "set", "quick", "fast", env=home).returncode == 0  # an alias of an alias
    listing = cli("aliases", "list", env=home).stdout
    assert "fast → openai/gpt-4.1-nano" in listing and "quick → openai/gpt-4.1-nano (via fast)" in listing

    p = rlm("ask", "key?", "-c", ctx_file(tmp_path), "-m", "quick", "--config", str(cfg), "--json",
            "--runs-dir", str(tmp_path / "r"), env={**home, "OPENAI_API_KEY": "sk-test"})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["answer"] == "99"
    assert {r["model"] for r in fake_llm.requests} == {"gpt-4.1-nano"}

    assert cli("aliases", "remove", "quick", env=home).returncode == 0
    assert "quick" not in cli("aliases", "list", env=home).stdout
    p = cli("aliases", "remove", "quick", env=home)
    assert p.returncode == 2 and "no alias 'quick'" in p.stderr


@pytest.mark.parametrize("name,spec,needle", [
    ("a/b", "openai/x", "bad alias name"),
    ("x:y", "openai/x", "bad alias name"),
    ("local", "openai/x", "is a model spec already"),
])
def test_bad_alias_names(home, name, spec, needle, cli):
    p = cli("aliases", "set", name, spec, env=home)
    assert p.returncode == 2 and needle in p.stderr and p.stderr.count("\n") == 1


def test_alias_loop_is_refused_and_not_saved(home, cli):
    assert cli("aliases", "set", "a", "b", env=home).returncode == 0
    p = cli("aliases", "set", "b", "a", env=home)
    assert p.returncode == 2 and "alias loop" in p.stderr
    assert "b →" not in cli("aliases", "list", env=home).stdout


def test_alias_expansion_follows_chains_and_detects_loops():
    assert expand_spec("a", {"a": "b", "b": "claude-x"}) == "anthropic/claude-x"
    assert expand_spec("a", {"a": "openai/m"}) == "openai/m"
    with pytest.raises(UsageError, match="alias loop"):
        expand_spec("a", {"a": "b", "b": "a"})


# ---------------------------------------------------------------------- keys
def test_keys_set_stores_0600_and_is_used_after_the_environment(tmp_path, fake_llm, home, cli):
    fake_llm.replies = FIND_THEN_99 * 2
    cfg = fake_openai(tmp_path, fake_llm)
    p = cli("keys", "set", "openai", env=home, stdin="sk-stored-1234567890\n")
    assert p.returncode == 0, p.stderr
    kf = Path(home["XDG_CONFIG_HOME"]) / "contextbox" / "keys.json"
    assert stat.S_IMODE(kf.stat().st_mode) == 0o600
    assert json.loads(kf.read_text()) == {"OPENAI_API_KEY": "sk-stored-1234567890"}

    listing = cli("keys", "list", env=home)
    assert "OPENAI_API_KEY" in listing.stdout and "key file" in listing.stdout
    assert "sk-stored" not in listing.stdout and "1234567890" not in listing.stdout

    # the stored key is sent when the environment has none
    p = rlm("ask", "key?", "-c", ctx_file(tmp_path), "-m", "gpt-4o-mini", "--config", str(cfg), "-q",
            "--runs-dir", str(tmp_path / "r"), env=home)
    assert p.returncode == 0, p.stderr
    assert fake_llm.request_headers[-1]["authorization"] == "Bearer sk-stored-1234567890"
    # the environment wins
    p = rlm("ask", "key?", "-c", ctx_file(tmp_path), "-m", "gpt-4o-mini", "--config", str(cfg), "-q",
            "--runs-dir", str(tmp_path / "r"), env={**home, "OPENAI_API_KEY": "sk-from-env"})
    assert p.returncode == 0, p.stderr
    assert fake_llm.request_headers[-1]["authorization"] == "Bearer sk-from-env"
    assert "environment" in cli("keys", "list", env={**home, "OPENAI_API_KEY": "sk-from-env"}).stdout

    assert cli("keys", "remove", "OPENAI_API_KEY", env=home).returncode == 0
    assert json.loads(kf.read_text()) == {}


def test_keys_file_readable_by_others_is_not_used(tmp_path, home, cli):
    assert cli("keys", "set", "MY_API_KEY", env=home, stdin="abc\n").returncode == 0
    kf = Path(home["XDG_CONFIG_HOME"]) / "contextbox" / "keys.json"
    os.chmod(kf, 0o644)
    p = cli("keys", "list", env=home)
    assert p.returncode == 2 and "readable by others" in p.stderr and "chmod 600" in p.stderr


@pytest.mark.parametrize("name,stdin,needle", [
    ("openai", "\n", "no key given"),
    ("ollama", "x\n", "takes no API key"),
    ("not-a-provider", "x\n", "unknown provider"),
])
def test_keys_set_errors(home, name, stdin, needle, cli):
    p = cli("keys", "set", name, env=home, stdin=stdin)
    assert p.returncode == 2 and needle in p.stderr and p.stderr.count("\n") == 1


# ---------------------------------------------------------------------- models
def test_models_lists_specs_and_key_state(tmp_path, home, cli):
    cli("aliases", "set", "fast", "gpt-4.1-nano", env=home)
    p = cli("models", "--json", env={**home, "ANTHROPIC_API_KEY": "sk-ant"})
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    by_spec = {r["spec"]: r for r in out["specs"]}
    assert by_spec["anthropic/MODEL"]["usable"] and "environment" in by_spec["anthropic/MODEL"]["key"]
    assert not by_spec["openai/MODEL"]["usable"] and "rlm keys set openai" in by_spec["openai/MODEL"]["key"]
    assert by_spec["ollama/MODEL"]["usable"] and by_spec["ollama/MODEL"]["key"] == "no key needed"
    assert out["aliases"]["fast"] == {"spec": "gpt-4.1-nano", "resolves_to": "openai/gpt-4.1-nano"}
    assert {"prefix": "claude-*", "provider": "anthropic"} in out["bare_ids"]
    text = cli("models", env=home).stdout
    assert "✗ openai/MODEL" in text and "fast → openai/gpt-4.1-nano" in text


# ---------------------------------------------------------------------- --version, runs
def test_version_prints_the_package_version():
    p = rlm("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"rlm (contextbox) {contextbox.__version__}"


def test_runs_show_latest_and_list_filters(tmp_path, home, cli):
    runs = tmp_path / "runs"
    c = ctx_file(tmp_path, "apples are red\npears are green\n")
    ids = {}
    for q, word, ans in (("What colour are apples?", "apples", "red"), ("And pears?", "pears", "green")):
        p = rlm("ask", q, "-c", c, "-m", script(tmp_path, {"op": "find", "text": word}, {"op": "final", "answer": ans}),
                "--json", "--runs-dir", str(runs), env=home)
        assert p.returncode == 0, p.stderr
        ids[ans] = json.loads(p.stdout)["run_id"]
    p = rlm("ask", "fails", "-c", c, "-m", script(tmp_path, {"op": "find", "text": "x"}), "--json",
            "--runs-dir", str(runs), env=home)
    ids["failed"] = json.loads(p.stdout)["run_id"]

    show = cli("runs", "--runs-dir", str(runs), "show", "latest", env=home)
    assert show.returncode == 0 and f"run {ids['failed']}: 'fails'" in show.stdout

    def listed(*args: str) -> list[str]:
        out = cli("runs", "list", "--runs-dir", str(runs), "--json", *args, env=home)
        assert out.returncode == 0, out.stderr
        return [r["run_id"] for r in json.loads(out.stdout)]

    assert listed("-q", "APPLES") == [ids["red"]]
    assert listed("-q", "green") == [ids["green"]]  # the answer is searched too
    assert listed("--status", "failed") == [ids["failed"]]
    assert set(listed("--status", "answered")) == {ids["red"], ids["green"]}
    assert set(listed("-m", "scripted")) == set(ids.values())
    assert listed("-m", "openai") == []
    assert listed("-q", "pears", "--status", "failed") == []
    assert len(listed("-n", "1")) == 1


def test_runs_show_latest_with_no_runs(tmp_path, home, cli):
    p = cli("runs", "--runs-dir", str(tmp_path / "none"), "show", "latest", env=home)
    assert p.returncode == 2 and "no runs" in p.stderr


# ---------------------------------------------------------------------- --system
def test_system_flag_reaches_the_root_system_prompt(tmp_path, home):
    runs = tmp_path / "runs"
    p = rlm("ask", "q", "-c", ctx_file(tmp_path), "--system", "Answer in French, always.", "-m",
            script(tmp_path, {"op": "find", "text": "key"}, {"op": "final", "answer": "99"}), "--json",
            "--runs-dir", str(runs), env=home)
    assert p.returncode == 0, p.stderr
    rid = json.loads(p.stdout)["run_id"]
    log = [json.loads(x) for x in (runs / f"{rid}.jsonl").read_text().splitlines()]
    req = next(e for e in log if e["type"] == "lm_request")
    assert req["data"]["system"].endswith("## Extra instructions from the user\nAnswer in French, always.")


# ---------------------------------------------------------------------- help
def _all_parsers(p: argparse.ArgumentParser, name: str = "rlm"):
    yield name, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub_name, sp in a.choices.items():
                yield from _all_parsers(sp, f"{name} {sub_name}")


def test_every_flag_has_help_and_a_readable_metavar():
    problems = []
    for name, parser in _all_parsers(build_parser()):
        for a in parser._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            label = f"{name} {'/'.join(a.option_strings) or a.dest}"
            if not a.help or a.help == argparse.SUPPRESS:
                problems.append(f"{label}: no help")
            if a.nargs != 0 and not a.choices and not isinstance(a, argparse._VersionAction):
                metavar = a.metavar or (a.dest.upper() if a.option_strings else a.dest)
                if "_" in str(metavar) or (not a.option_strings and str(metavar).islower()):
                    problems.append(f"{label}: metavar {metavar!r}")
    assert not problems, "\n".join(problems)
