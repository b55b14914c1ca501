"""Settings: discovery, environment overrides, validation errors and the token."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

import ztctl.redact
from ztctl.config import (
    DEFAULT_TOKEN_FILE,
    load_settings,
    parse_duration,
    resolve_token,
)
from ztctl.errors import ConfigError, ExitCode
from ztctl.redact import redact, register_secret

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_discovery(tmp_path, monkeypatch):
    """Run in an empty directory with a private config dir, so no real config file is found."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("ztctl.config.config_search_path", lambda: [tmp_path / "ztctl.yaml"])
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file(no_discovery):
    loaded = load_settings(environ={})
    assert loaded.path is None
    assert loaded.settings.controller.url == "http://127.0.0.1:9993"
    assert loaded.settings.database.url.startswith("sqlite:///")
    assert loaded.settings.policies.unknown.action == "report"


def test_example_file_validates(no_discovery):
    loaded = load_settings(REPO / "ztctl.example.yaml", environ={})
    settings = loaded.settings
    assert settings.controller.concurrency == 4
    assert settings.controller.keepalive is False
    assert settings.policies.purge_after == timedelta(days=30)
    assert settings.policies.unknown.grace == timedelta(hours=1)


def test_explicit_path_wins_over_environment(no_discovery):
    first = write(no_discovery / "a.yaml", "controller:\n  url: http://127.0.0.1:1111\n")
    second = write(no_discovery / "b.yaml", "controller:\n  url: http://127.0.0.1:2222\n")
    loaded = load_settings(first, environ={"ZTCTL_CONFIG": str(second)})
    assert loaded.settings.controller.url == "http://127.0.0.1:1111"
    assert loaded.path == first


def test_ztctl_config_variable_used(no_discovery):
    path = write(no_discovery / "b.yaml", "controller:\n  url: http://127.0.0.1:2222\n")
    loaded = load_settings(environ={"ZTCTL_CONFIG": str(path)})
    assert loaded.settings.controller.url == "http://127.0.0.1:2222"


def test_working_directory_file_found(no_discovery):
    write(no_discovery / "ztctl.yaml", "controller:\n  timeout: 4.5\n")
    loaded = load_settings(environ={})
    assert loaded.settings.controller.timeout == 4.5


def test_missing_explicit_file_is_config_error(no_discovery):
    with pytest.raises(ConfigError) as caught:
        load_settings(no_discovery / "nope.yaml", environ={})
    assert "nope.yaml" in str(caught.value)
    assert caught.value.exit_code == ExitCode.CONFIG


def test_environment_overrides_file(no_discovery):
    path = write(no_discovery / "c.yaml", "database:\n  url: sqlite:///from-file.db\ncontroller:\n  url: http://127.0.0.1:1\n")
    environ = {"ZTCTL_DATABASE_URL": "sqlite:///from-env.db", "ZTCTL_CONTROLLER_CONCURRENCY": "2"}
    settings = load_settings(path, environ=environ).settings
    assert settings.database.url == "sqlite:///from-env.db"
    assert settings.controller.url == "http://127.0.0.1:1"
    assert settings.controller.concurrency == 2


def test_invalid_value_names_key_value_and_expectation(no_discovery):
    path = write(no_discovery / "bad.yaml", "controller:\n  timeout: -3\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    message = str(caught.value)
    assert "controller.timeout" in message
    assert "-3" in message
    assert "greater than 0" in message
    assert str(path) in message


def test_invalid_environment_value_names_variable(no_discovery):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"ZTCTL_CONTROLLER_CONCURRENCY": "many"})
    message = str(caught.value)
    assert "ZTCTL_CONTROLLER_CONCURRENCY" in message
    assert "'many'" in message


def test_unknown_key_rejected(no_discovery):
    path = write(no_discovery / "typo.yaml", "controller:\n  tiemout: 5\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "controller.tiemout" in str(caught.value)
    assert "unknown setting" in str(caught.value)


def test_malformed_yaml_rejected(no_discovery):
    path = write(no_discovery / "broken.yaml", "controller: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "not valid YAML" in str(caught.value)


def test_top_level_list_rejected(no_discovery):
    path = write(no_discovery / "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "mapping" in str(caught.value)


def test_controller_url_must_be_http(no_discovery):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"ZTCTL_CONTROLLER_URL": "127.0.0.1:9993"})
    assert "ZTCTL_CONTROLLER_URL" in str(caught.value)
    assert "http://" in str(caught.value)


def test_protected_nodes_lower_cased_and_checked(no_discovery):
    path = write(no_discovery / "p.yaml", "policies:\n  protected_nodes: [ABCDEF0123]\n")
    assert load_settings(path, environ={}).settings.policies.protected_nodes == ("abcdef0123",)
    bad = write(no_discovery / "q.yaml", "policies:\n  protected_nodes: [abc]\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(bad, environ={})
    assert "'abc'" in str(caught.value)


def test_ids_that_yaml_reads_as_numbers_need_quotes(no_discovery):
    path = write(
        no_discovery / "numbers.yaml",
        "policies:\n  protected_nodes: [0000000001, 1234567890]\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    message = str(caught.value)
    assert "policies.protected_nodes" in message
    assert "read by YAML as numbers" in message
    assert "put each ID in quotes" in message
    quoted = write(no_discovery / "quoted.yaml", "policies:\n  protected_nodes: ['0000000001', 1234567890]\n")
    assert load_settings(quoted, environ={}).settings.policies.protected_nodes == ("0000000001", "1234567890")


def test_per_network_unknown_policy(no_discovery):
    path = write(
        no_discovery / "n.yaml",
        "policies:\n  networks:\n    '3233204505122666':\n      unknown:\n        action: delete\n        grace: 15m\n",
    )
    policies = load_settings(path, environ={}).settings.policies
    assert policies.unknown_policy_for("3233204505122666").action == "delete"
    assert policies.unknown_policy_for("3233204505122666").grace == timedelta(minutes=15)
    assert policies.unknown_policy_for("32332045050000aa").action == "report"


@pytest.mark.parametrize(
    ("text", "expected"),
    [(90, timedelta(seconds=90)), ("15m", timedelta(minutes=15)), ("1h30m", timedelta(minutes=90)), ("30d", timedelta(days=30))],
)
def test_parse_duration_accepts(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["soon", "5x", "", True, -1])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_purge_after_null_means_never(no_discovery):
    path = write(no_discovery / "never.yaml", "policies:\n  purge_after: null\n")
    assert load_settings(path, environ={}).settings.policies.purge_after is None


# The controller token -------------------------------------------------------


def test_token_from_environment(no_discovery):
    loaded = load_settings(environ={"ZTCTL_CONTROLLER_TOKEN": "  envtoken123 \n"})
    token = resolve_token(loaded)
    assert token.value.get_secret_value() == "envtoken123"
    assert "ZTCTL_CONTROLLER_TOKEN" in token.source


def test_token_file_stripped(no_discovery):
    token_file = write(no_discovery / "authtoken.secret", "filetoken456\n")
    loaded = load_settings(environ={"ZTCTL_CONTROLLER_TOKEN_FILE": str(token_file)})
    token = resolve_token(loaded)
    assert token.value.get_secret_value() == "filetoken456"
    assert str(token_file) in token.source


def test_environment_token_wins_over_file_token_file(no_discovery):
    token_file = write(no_discovery / "t.secret", "fromfile")
    path = write(no_discovery / "c.yaml", f"controller:\n  token_file: {token_file}\n")
    loaded = load_settings(path, environ={"ZTCTL_CONTROLLER_TOKEN": "fromenv1"})
    assert resolve_token(loaded).value.get_secret_value() == "fromenv1"


def test_token_and_token_file_in_one_layer_rejected(no_discovery):
    path = write(no_discovery / "c.yaml", "controller:\n  token: abcdefgh\n  token_file: /tmp/x\n")
    loaded = load_settings(path, environ={})
    with pytest.raises(ConfigError) as caught:
        resolve_token(loaded)
    assert "both" in str(caught.value)


def test_default_token_file_used(no_discovery, monkeypatch):
    token_file = write(no_discovery / "default.secret", "defaulttoken")
    monkeypatch.setattr("ztctl.config.DEFAULT_TOKEN_FILE", token_file)
    token = resolve_token(load_settings(environ={}))
    assert token.value.get_secret_value() == "defaulttoken"
    assert "default location" in token.source


def test_default_token_path_is_linux_location():
    assert DEFAULT_TOKEN_FILE == Path("/var/lib/zerotier-one/authtoken.secret")


def test_missing_token_file_explains_fix(no_discovery):
    loaded = load_settings(environ={"ZTCTL_CONTROLLER_TOKEN_FILE": str(no_discovery / "absent.secret")})
    with pytest.raises(ConfigError) as caught:
        resolve_token(loaded)
    assert "not found" in str(caught.value)
    assert "ZTCTL_CONTROLLER_TOKEN" in caught.value.hint


def test_unreadable_token_file_explains_permissions(no_discovery, monkeypatch):
    """Simulate EACCES, because root (as in CI) can read even a mode-0 file."""
    token_file = write(no_discovery / "locked.secret", "lockedtoken")

    def deny(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", deny)
    loaded = load_settings(environ={"ZTCTL_CONTROLLER_TOKEN_FILE": str(token_file)})
    with pytest.raises(ConfigError) as caught:
        resolve_token(loaded)
    assert "permission denied" in str(caught.value)
    assert "zerotier-one user" in caught.value.hint
    assert "lockedtoken" not in str(caught.value)


def test_empty_token_file_rejected(no_discovery):
    token_file = write(no_discovery / "empty.secret", "  \n")
    loaded = load_settings(environ={"ZTCTL_CONTROLLER_TOKEN_FILE": str(token_file)})
    with pytest.raises(ConfigError) as caught:
        resolve_token(loaded)
    assert "empty" in str(caught.value)


def test_invalid_token_value_hidden_in_errors(no_discovery):
    path = write(no_discovery / "c.yaml", "controller:\n  token: [not, a, string]\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "controller.token = <hidden>" in str(caught.value)
    assert "'a'" not in str(caught.value)


def test_network_override_keeps_unset_keys(no_discovery):
    path = write(
        no_discovery / "n.yaml",
        "policies:\n  unknown:\n    action: deauthorize\n  networks:\n    '3233204505122666':\n      unknown:\n"
        "        grace: 15m\n",
    )
    policy = load_settings(path, environ={}).settings.policies.unknown_policy_for("3233204505122666")
    assert policy.action == "deauthorize"
    assert policy.grace == timedelta(minutes=15)


def test_token_with_second_line_rejected_without_echo(no_discovery):
    token_file = write(no_discovery / "two.secret", "TOKEN-canary-1\nsecond-line\n")
    loaded = load_settings(environ={"ZTCTL_CONTROLLER_TOKEN_FILE": str(token_file)})
    with pytest.raises(ConfigError) as caught:
        resolve_token(loaded)
    assert "not a single token" in str(caught.value)
    assert "canary" not in str(caught.value)
    assert "second-line" not in str(caught.value)


def test_yaml_error_does_not_quote_the_line(no_discovery):
    path = write(no_discovery / "bad.yaml", "controller:\n  token: TOKEN-canary-2: [\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "not valid YAML" in str(caught.value)
    assert "line 2" in str(caught.value)
    assert "canary" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("controller:\n  retries: true\n", "controller.retries"),
        ("policies:\n  purge_after: .inf\n", "policies.purge_after"),
        ("policies:\n  purge_after: 99999999999999999\n", "policies.purge_after"),
        ("controller:\n  url: http://user:pass-canary@127.0.0.1:9993\n", "controller.url"),
        ("controller:\n  url: http://127.0.0.1:9993/?auth=x\n", "controller.url"),
        ("database:\n  url: mysql://127.0.0.1/portal\n", "database.url"),
        ("database:\n  url: postgresql://127.0.0.1:notaport/portal\n", "database.url"),
    ],
)
def test_odd_values_rejected_with_key(no_discovery, text, key):
    path = write(no_discovery / "odd.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert key in str(caught.value)
    assert "pass-canary" not in str(caught.value)


def test_purge_after_off_means_never(no_discovery):
    path = write(no_discovery / "off.yaml", "policies:\n  purge_after: off\n")
    assert load_settings(path, environ={}).settings.policies.purge_after is None


def test_section_that_is_not_a_mapping_rejected(no_discovery):
    path = write(no_discovery / "list.yaml", "controller: [1, 2]\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={"ZTCTL_CONTROLLER_URL": "http://127.0.0.1:1"})
    assert "section 'controller'" in str(caught.value)


def test_central_needs_url(no_discovery):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"ZTCTL_CONTROLLER_TYPE": "central", "ZTCTL_CONTROLLER_TOKEN": "centraltoken1"})
    assert "controller.url is required" in str(caught.value)
    assert "centraltoken1" not in str(caught.value)


def test_central_needs_token(no_discovery, monkeypatch):
    token_file = write(no_discovery / "authtoken.secret", "localtoken")
    monkeypatch.setattr("ztctl.config.DEFAULT_TOKEN_FILE", token_file)
    loaded = load_settings(
        environ={"ZTCTL_CONTROLLER_TYPE": "central", "ZTCTL_CONTROLLER_URL": "http://127.0.0.1:8/api/v1"}
    )
    with pytest.raises(ConfigError) as caught:
        resolve_token(loaded)
    assert "no API token for ZeroTier Central" in str(caught.value)


def test_central_rate_from_environment(no_discovery):
    settings = load_settings(
        environ={
            "ZTCTL_CONTROLLER_TYPE": "central",
            "ZTCTL_CONTROLLER_URL": "http://127.0.0.1:8/api/v1",
            "ZTCTL_CONTROLLER_RATE": "4.5",
        }
    ).settings
    assert settings.controller.rate == 4.5
    assert settings.controller.url == "http://127.0.0.1:8/api/v1"


# URLs that urlsplit and SQLAlchemy read differently --------------------------


def test_bracket_in_database_password_is_config_error(no_discovery):
    url = "postgresql://postgres:se[cretpw@127.0.0.1/db"
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"ZTCTL_DATABASE_URL": url})
    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.CONFIG
    assert "database.url = 'postgresql://postgres:***@127.0.0.1/db'" in message
    assert "environment variable ZTCTL_DATABASE_URL" in message
    assert "percent-encode special characters in the user name and password ([ as %5B" in message
    assert "cretpw" not in message


def test_bracket_error_names_config_file(no_discovery):
    path = write(no_discovery / "c.yaml", "database:\n  url: postgresql://postgres:se[cretpw@127.0.0.1/db\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    message = str(caught.value)
    assert f"database.url = 'postgresql://postgres:***@127.0.0.1/db' (config file {path})" in message
    assert "cretpw" not in message


def test_unclosed_ipv6_bracket_in_controller_url(no_discovery):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"ZTCTL_CONTROLLER_URL": "http://[::1"})
    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.CONFIG
    assert "controller.url" in message
    assert "environment variable ZTCTL_CONTROLLER_URL" in message
    assert "does not enclose an IPv6 address" in message
    assert "put an IPv6 host in brackets, such as http://[::1]:9993" in message


def test_at_sign_in_database_password_is_config_error(no_discovery):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"ZTCTL_DATABASE_URL": "postgresql://postgres:se@cretpw@127.0.0.1/db"})
    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.CONFIG
    assert "environment variable ZTCTL_DATABASE_URL" in message
    assert "percent-encode each @ in them as %40" in message
    assert "postgres:***@127.0.0.1/db" in message
    assert "cretpw" not in message
    assert ":se@" not in message


@pytest.mark.parametrize("character", ["/", "?", "#"])
def test_host_delimiter_in_database_password_is_config_error(no_discovery, character):
    url = f"postgresql://postgres:pass{character}canary@127.0.0.1/db"
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"ZTCTL_DATABASE_URL": url})
    message = str(caught.value)
    assert "the URL is ambiguous, because an @ follows a /, ? or #" in message
    assert "%2F, %3F, %23 and %40" in message
    assert "canary" not in message
    assert "pass" not in message.replace("password", "")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:se%40cret%5Bpw%2F@127.0.0.1/db",
        "postgresql://postgres@[::1]:5432/db",
        "postgresql://postgres:pw@127.0.0.1/db?sslmode=require",
        "sqlite:////var/lib/ztctl/with@sign.db",
    ],
)
def test_encoded_database_urls_accepted(no_discovery, url):
    assert load_settings(environ={"ZTCTL_DATABASE_URL": url}).settings.database.url == url


# Redaction -------------------------------------------------------------------


@pytest.fixture
def secrets_registry(monkeypatch):
    """An empty registry of secrets, so that secrets registered by other tests do not interfere."""
    monkeypatch.setattr(ztctl.redact, "_secrets", set())


def test_redact_ignores_letter_case(secrets_registry):
    register_secret("0123456789abcdefghijklmn")
    assert redact("token 0123456789ABCDEFGHIJKLMN rejected") == "token *** rejected"
    assert redact("token 0123456789AbCdEfGhIjKlMn rejected") == "token *** rejected"


def test_redact_masks_short_secret_only_as_whole_word(secrets_registry):
    register_secret("se")
    assert redact("[Errno -2] Name or service not known") == "[Errno -2] Name or service not known"
    assert redact("password SE rejected for postgres:se@127.0.0.1") == "password *** rejected for postgres:***@127.0.0.1"


def test_redact_masks_one_character_secret(secrets_registry):
    register_secret(".")
    register_secret("x")
    assert redact("127.0.0.1 x 4") == "127.0.0.1 *** 4"
    assert redact("password '.' rejected") == "password '***' rejected"


def test_redact_masks_four_characters_inside_words(secrets_registry):
    register_secret("vice")
    assert redact("Name or service not known") == "Name or ser*** not known"


def test_database_password_in_url_is_registered(no_discovery, secrets_registry):
    load_settings(environ={"ZTCTL_DATABASE_URL": "postgresql://postgres:se%5Bcretpw@127.0.0.1/db"})
    assert redact("password se[cretpw or se%5Bcretpw") == "password *** or ***"
