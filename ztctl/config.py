"""Settings: file discovery, environment overrides, validation and the controller token.

Settings come from three layers, later ones winning: built-in defaults, one
YAML file, and ``ZTCTL_*`` environment variables (so cron and CI can run
ztctl with no file at all). The merged result is validated once by pydantic;
an invalid value raises ``ConfigError`` naming the key, where it came from,
the value and what is expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, unquote, urlsplit

import platformdirs
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ztctl.controller.base import is_network_id, is_node_id
from ztctl.errors import ConfigError
from ztctl.redact import redact, register_secret

CONFIG_FILE_NAME = "ztctl.yaml"
DEFAULT_TOKEN_FILE = Path("/var/lib/zerotier-one/authtoken.secret")

# Environment variable -> dotted settings key. The names are part of the
# command-line contract: cron lines and CI jobs depend on them.
ENVIRONMENT_KEYS: dict[str, str] = {
    "ZTCTL_DATABASE_URL": "database.url",
    "ZTCTL_CONTROLLER_URL": "controller.url",
    "ZTCTL_CONTROLLER_TOKEN": "controller.token",
    "ZTCTL_CONTROLLER_TOKEN_FILE": "controller.token_file",
    "ZTCTL_CONTROLLER_TIMEOUT": "controller.timeout",
    "ZTCTL_CONTROLLER_CONCURRENCY": "controller.concurrency",
    "ZTCTL_CONTROLLER_TYPE": "controller.type",
    "ZTCTL_CONTROLLER_RATE": "controller.rate",
    "ZTCTL_UNKNOWN_ACTION": "policies.unknown.action",
}
SECRET_KEYS = {"controller.token"}
URL_KEYS = {"database.url", "controller.url"}

_DURATION_PART = re.compile(r"(\d+)([smhd])")
_TOKEN_CHARACTERS = re.compile(r"[\x21-\x7e]+")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_DURATION_SECONDS = 100 * 365 * 86400


def default_database_url() -> str:
    return f"sqlite:///{Path(platformdirs.user_data_dir('ztctl')) / 'portal.db'}"


def config_search_path() -> list[Path]:
    """Return the places searched for a config file when none is named, first match wins."""
    return [
        Path.cwd() / CONFIG_FILE_NAME,
        Path(platformdirs.user_config_dir("ztctl")) / CONFIG_FILE_NAME,
        Path("/etc/ztctl") / CONFIG_FILE_NAME,
    ]


def parse_duration(value: object) -> timedelta:
    """Parse ``90``, ``"90s"``, ``"15m"``, ``"1h30m"`` or ``"30d"``; a bare number is seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 15m, 1h or 30d")
    if isinstance(value, int | float):
        seconds = float(value)
        if seconds != seconds or seconds in (float("inf"), float("-inf")):
            raise ValueError("expected a finite duration such as 90s, 15m, 1h or 30d")
    elif isinstance(value, str) and re.fullmatch(r"(\d+[smhd])+", value.strip()):
        seconds = sum(
            int(amount) * _DURATION_UNITS[unit]
            for amount, unit in _DURATION_PART.findall(value.strip())
        )
    else:
        raise ValueError("expected a duration such as 90s, 15m, 1h or 30d")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > _MAX_DURATION_SECONDS:
        raise ValueError("a duration cannot be longer than 100 years")
    return timedelta(seconds=seconds)


def _parse_optional_duration(value: object) -> timedelta | None:
    # YAML reads a bare "off" or "no" as false.
    if value is None or value is False or value in ("never", "off"):
        return None
    return parse_duration(value)


def _reject_bool(value: object) -> object:
    # pydantic's lax mode reads true as 1; "retries: true" is a mistake, not a count.
    if isinstance(value, bool):
        raise ValueError("expected a number, not true or false")
    return value


Number = BeforeValidator(_reject_bool)
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
OptionalDuration = Annotated[timedelta | None, BeforeValidator(_parse_optional_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str = Field(default_factory=default_database_url)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in ("sqlite", "postgresql", "postgresql+psycopg"):
            raise ValueError("expected sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE")
        parts = _split_url(
            value,
            "percent-encode special characters in the user name and password ([ as %5B, ] as %5D), "
            "and put an IPv6 host in brackets, such as postgresql://USER@[::1]:5432/DATABASE",
        )
        if scheme != "sqlite":
            _check_user_info_split(value, parts.netloc)
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        return value


def _split_url(url: str, fix: str) -> SplitResult:
    """Split ``url``, or raise ValueError with ``fix`` and without quoting the URL, which may contain a password."""
    try:
        return urlsplit(url)
    except ValueError:
        raise ValueError(
            f"the URL cannot be parsed, because a [ or ] in it does not enclose an IPv6 address: {fix}"
        ) from None


def _check_user_info_split(url: str, netloc: str) -> None:
    """Reject a database URL whose user name or password contains an unencoded @, /, ? or #.

    SQLAlchemy, which opens the database, ends the password at its first @,
    and urlsplit ends the host part at the first /, ? or #, so with one of
    these characters in the password the two read different hosts. The host
    that SQLAlchemy reads can contain a part of the password, which the driver
    then quotes in its error messages.
    """
    after_scheme = url.partition("://")[2]
    if netloc.count("@") > 1:
        raise ValueError(
            "the user name or password contains an @, so a part of the password would be read as the host: "
            "percent-encode each @ in them as %40"
        )
    if after_scheme.count("@") > netloc.count("@"):
        raise ValueError(
            "the URL is ambiguous, because an @ follows a /, ? or #: "
            "percent-encode /, ?, # and @ in the user name and password as %2F, %3F, %23 and %40, "
            "and @ in the database name or query as %40"
        )


ZEROTIER_ONE_URL = "http://127.0.0.1:9993"
CENTRAL_URL = "https://api.zerotier.com/api/v1"
"""ZeroTier Central's API, per its published specification; never used unless configured."""


class ControllerSettings(_Section):
    type: Literal["zerotier-one", "central"] = "zerotier-one"
    url: str = ""
    """Empty means the local zerotier-one API; Central's URL must be given, so nothing reaches it by default."""
    token: SecretStr | None = None
    token_file: Path | None = None
    timeout: Annotated[float, Number] = Field(10.0, gt=0, le=600)
    """Seconds to wait for one response."""
    connect_timeout: Annotated[float, Number] = Field(3.0, gt=0, le=120)
    retries: Annotated[int, Number] = Field(3, ge=0, le=10)
    """Retries per request on connection errors, 502/503/504 and 429."""
    concurrency: Annotated[int, Number] = Field(4, ge=1, le=64)
    """Requests in flight at once; zerotier-one's HTTP server has a listen backlog of 5."""
    cache_max_age: Duration = timedelta(minutes=15)
    """Without the bulk member list, members whose revision did not change are reused from the cache
    for at most this long, then read again: a member deleted and created anew can repeat a revision."""
    keepalive: bool = False
    """Reuse connections. Off by default, because zerotier-one 1.14.1 took about 26 ms per request on a
    reused connection and 0.45 ms on a new one (measured on loopback). Central always reuses them."""
    rate: Annotated[float, Number] = Field(10.0, gt=0, le=100)
    """Central only: requests per second. Central allows 20 on a free account and 100 on a paid one."""

    @model_validator(mode="after")
    def _default_url(self) -> ControllerSettings:
        if self.url:
            return self
        if self.type == "central":
            raise ValueError(
                f"controller.url is required with type central: set it to {CENTRAL_URL} "
                "(or ZTCTL_CONTROLLER_URL)"
            )
        object.__setattr__(self, "url", ZEROTIER_ONE_URL)
        return self

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value:
            return value
        parts = _split_url(value, "put an IPv6 host in brackets, such as http://[::1]:9993")
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host, such as http://127.0.0.1:9993")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError(
                "expected a base URL without user, password, query or fragment; give the token through "
                "controller.token_file or ZTCTL_CONTROLLER_TOKEN"
            )
        return value.rstrip("/")


def _reject_mangled_numbers(values: list[Any] | tuple[Any, ...], *, digits: int, what: str) -> None:
    """Reject IDs that YAML read as numbers and lost digits of, such as 0000000001 (octal 1)."""
    mangled = [value for value in values if isinstance(value, int | float) and len(str(value)) != digits]
    if mangled:
        raise ValueError(
            f"{what} {', '.join(map(repr, mangled))} were read by YAML as numbers, losing digits; "
            f"put each ID in quotes, such as '{'0' * (digits - 1)}1'"
        )


class UnknownMemberPolicy(_Section):
    action: Literal["report", "deauthorize", "delete"] = "report"
    """The action for a member that has no membership in the portal."""
    grace: Duration = timedelta(hours=1)
    """Time after the member's creation before ``action`` applies."""


class RevocationGuardSettings(_Section):
    max_share: Annotated[float, Number] = Field(0.5, gt=0, le=1)
    """Largest share of a network's members that one run may deauthorize (or delete)."""
    min_count: Annotated[int, Number] = Field(10, ge=0)
    """Revocations up to this count per network and run are never refused by ``max_share``."""


class NetworkPolicy(_Section):
    unknown: UnknownMemberPolicy | None = None
    """Overrides the keys it sets; the others come from ``policies.unknown``."""


class PolicySettings(_Section):
    purge_after: OptionalDuration = timedelta(days=30)
    """Delete a deauthorized member whose membership is inactive or removed after this; null never deletes."""
    unknown: UnknownMemberPolicy = UnknownMemberPolicy()
    protected_nodes: tuple[str, ...] = ()
    """Node IDs that are never deauthorized or deleted, on any network."""
    revocation_guard: RevocationGuardSettings = RevocationGuardSettings()
    overdue_after: Duration = timedelta(minutes=5)
    """A revocation made later than this after its activation expired is logged as a warning."""
    networks: dict[str, NetworkPolicy] = {}
    """Per-network overrides, keyed by network ID."""

    @field_validator("protected_nodes", mode="before")
    @classmethod
    def _normalise_nodes(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        _reject_mangled_numbers(value, digits=10, what="node IDs")
        nodes = [str(node).lower() for node in value]
        bad = [node for node in nodes if not is_node_id(node)]
        if bad:
            raise ValueError(f"node IDs must be 10 hex digits, got {', '.join(map(repr, bad))}")
        return tuple(nodes)

    @field_validator("networks", mode="before")
    @classmethod
    def _normalise_networks(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        _reject_mangled_numbers(list(value), digits=16, what="network IDs")
        keys = {str(key).lower(): policy for key, policy in value.items()}
        bad = [key for key in keys if not is_network_id(key)]
        if bad:
            raise ValueError(f"network IDs must be 16 hex digits, got {', '.join(map(repr, bad))}")
        return keys

    def unknown_policy_for(self, network_id: str) -> UnknownMemberPolicy:
        override = self.networks.get(network_id)
        if override is None or override.unknown is None:
            return self.unknown
        # Only the keys the override sets replace the global ones: a network
        # that sets only a grace period keeps the global action.
        changed = {key: getattr(override.unknown, key) for key in override.unknown.model_fields_set}
        return self.unknown.model_copy(update=changed)


class RunSettings(_Section):
    time_limit: Duration = timedelta(minutes=5)
    """Once a run has taken this long it retries nothing and starts no new action; the rest is left for the next run."""


class Settings(_Section):
    database: DatabaseSettings = DatabaseSettings()
    controller: ControllerSettings = ControllerSettings()
    policies: PolicySettings = PolicySettings()
    run: RunSettings = RunSettings()


@dataclass(frozen=True)
class LoadedSettings:
    """Validated settings and where they came from."""

    settings: Settings
    path: Path | None
    """The config file read, or None when none was found."""
    token_layer: dict[str, Any]
    """The ``token``/``token_file`` keys of the layer that decides the token, with its description."""


@dataclass(frozen=True)
class ControllerToken:
    value: SecretStr
    source: str
    """The token's origin, named in messages in place of the token itself."""


def find_config_file(explicit: Path | None, environ: Mapping[str, str]) -> Path | None:
    """Return the config file to read: ``--config``, then ``ZTCTL_CONFIG``, then the search path."""
    if explicit is not None:
        return _require_file(explicit, "--config")
    if environ.get("ZTCTL_CONFIG"):
        return _require_file(Path(environ["ZTCTL_CONFIG"]), "ZTCTL_CONFIG")
    for candidate in config_search_path():
        if candidate.is_file():
            return candidate
    return None


def _require_file(path: Path, origin: str) -> Path:
    path = path.expanduser()
    if not path.is_file():
        raise ConfigError(
            f"config file {path} (from {origin}) not found",
            hint="check the path, or leave it unset to use the defaults and ZTCTL_* variables",
        )
    return path


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror or exc}",
            hint="check the file's permissions",
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # The error's own text quotes the offending line, which may hold the
        # token, so only the problem and its position are shown.
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must contain a mapping of sections (database, controller, policies), "
            f"got {type(data).__name__}"
        )
    return data


def _yaml_problem(error: yaml.YAMLError) -> str:
    problem = getattr(error, "problem", None) or "cannot be parsed"
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return problem
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def _check_sections(layer: dict[str, Any], path: Path | None) -> None:
    """Reject a section that is not a mapping before the environment layer is merged over it."""
    for name in ("database", "controller", "policies", "run"):
        if name in layer and layer[name] is not None and not isinstance(layer[name], dict):
            raise ConfigError(
                f"config file {path}: section {name!r} must be a mapping of settings, "
                f"got {type(layer[name]).__name__}"
            )


def environment_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """Build a nested settings mapping from the ``ZTCTL_*`` variables that are set and not empty."""
    layer: dict[str, Any] = {}
    for variable, key in ENVIRONMENT_KEYS.items():
        value = environ.get(variable)
        if value:
            _set_dotted(layer, key, value)
    return layer


def load_settings(
    explicit_path: Path | None = None, environ: Mapping[str, str] | None = None
) -> LoadedSettings:
    """Find, read, merge and validate the settings; raise ``ConfigError`` on any problem."""
    environ = os.environ if environ is None else environ
    path = find_config_file(explicit_path, environ)
    file_layer = read_config_file(path) if path else {}
    _check_sections(file_layer, path)
    env_layer = environment_layer(environ)
    merged = _deep_merge(file_layer, env_layer)
    for key in sorted(URL_KEYS):
        raw_url = _get_dotted(merged, key)
        if isinstance(raw_url, str):
            # Before validation, so that an error quoting an invalid URL hides the password too.
            _register_url_password(raw_url)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise _describe_validation_error(exc, path, env_layer) from None
    return LoadedSettings(settings, path, _token_layer(file_layer, env_layer, path))


def _register_url_password(url: str) -> None:
    """Register the URL's password as urlsplit and as SQLAlchemy read it, which differ when it is not encoded."""
    passwords = set()
    with suppress(ValueError):
        passwords.add(urlsplit(url).password)
    rest = url.partition("://")[2]
    if "@" in rest:
        # urlsplit ends the password at the last @ of the host part, SQLAlchemy at the first @.
        passwords.add(rest.rpartition("@")[0].partition(":")[2])
        passwords.add(rest.partition("@")[0].partition(":")[2])
    for password in passwords:
        if password:
            register_secret(password)
            register_secret(unquote(password))


def _hide_url_password(url: str) -> str:
    """Return ``url`` with everything between the user name and the last @ replaced by ***.

    Unlike the password that urlsplit finds, this also hides a password that
    contains an unencoded @, /, ? or #.
    """
    scheme, separator, rest = url.partition("://")
    user_info, at, host_part = rest.rpartition("@")
    user, colon, _password = user_info.partition(":")
    if not separator or not at or not colon:
        return url
    return f"{scheme}://{user}:***@{host_part}"


def resolve_token(loaded: LoadedSettings) -> ControllerToken:
    """Return the controller token from the layer that sets it, or from the default token file.

    The environment wins over the file. Within one layer, setting both
    ``token`` and ``token_file`` is an error, because which one is meant is
    not clear.
    """
    layer = loaded.token_layer
    origin = layer.get("origin", "")
    if layer.get("token") and layer.get("token_file"):
        raise ConfigError(
            f"both a controller token and a token file are set in {origin}",
            hint="keep one of them",
        )
    if layer.get("token"):
        value = str(layer["token"]).strip()
        if not value:
            raise ConfigError(f"the controller token set in {origin} is empty")
        register_secret(value)
        _check_token_characters(value, f"the controller token set in {origin}")
        return ControllerToken(SecretStr(value), f"the token in {origin}")
    if layer.get("token_file"):
        return read_token_file(Path(str(layer["token_file"])).expanduser(), origin)
    if loaded.settings.controller.type == "central":
        raise ConfigError(
            "no API token for ZeroTier Central is set",
            hint="set ZTCTL_CONTROLLER_TOKEN, or ZTCTL_CONTROLLER_TOKEN_FILE or controller.token_file, "
            "to a token created under Account in ZeroTier Central",
        )
    return read_token_file(DEFAULT_TOKEN_FILE, "the default location")


def read_token_file(path: Path, origin: str) -> ControllerToken:
    source = f"token file {path} (from {origin})"
    fix = (
        "set ZTCTL_CONTROLLER_TOKEN, or point ZTCTL_CONTROLLER_TOKEN_FILE or "
        "controller.token_file at a file ztctl can read"
    )
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"controller {source} not found", hint=fix) from None
    except PermissionError:
        raise ConfigError(
            f"permission denied reading controller {source}",
            hint=(
                "zerotier-one resets its token file to mode 0600 at every start, so run ztctl as root "
                f"or as the zerotier-one user, or {fix}"
            ),
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read controller {source}: {exc}", hint=fix) from None
    if not value:
        raise ConfigError(f"controller {source} is empty", hint=fix)
    register_secret(value)
    _check_token_characters(value, f"controller {source}")
    return ControllerToken(SecretStr(value), source)


def _check_token_characters(value: str, described: str) -> None:
    """Reject a token that cannot go into an HTTP header, without ever quoting it."""
    if _TOKEN_CHARACTERS.fullmatch(value):
        return
    for line in value.splitlines():
        register_secret(line.strip())
    raise ConfigError(
        f"{described} is not a single token: it holds whitespace, a line break or characters "
        "outside printable ASCII",
        hint="the file or variable must hold the API token alone, on one line",
    )


def _token_layer(file_layer: dict[str, Any], env_layer: dict[str, Any], path: Path | None) -> dict[str, Any]:
    env_controller = env_layer.get("controller", {})
    if "token" in env_controller or "token_file" in env_controller:
        names = [name for name in ("ZTCTL_CONTROLLER_TOKEN", "ZTCTL_CONTROLLER_TOKEN_FILE")
                 if ENVIRONMENT_KEYS[name].split(".")[1] in env_controller]
        return {**_token_keys(env_controller), "origin": " and ".join(names)}
    file_controller = file_layer.get("controller")
    if isinstance(file_controller, dict) and ("token" in file_controller or "token_file" in file_controller):
        return {**_token_keys(file_controller), "origin": f"config file {path}"}
    return {}


def _token_keys(section: dict[str, Any]) -> dict[str, Any]:
    return {key: section[key] for key in ("token", "token_file") if section.get(key) is not None}


def _describe_validation_error(
    exc: ValidationError, path: Path | None, env_layer: dict[str, Any]
) -> ConfigError:
    env_by_key = {key: variable for variable, key in ENVIRONMENT_KEYS.items()}
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        value = error.get("input")
        if key in env_by_key and _get_dotted(env_layer, key) is not None:
            origin = f"environment variable {env_by_key[key]}"
        else:
            origin = f"config file {path}" if path else "the defaults and ZTCTL_* variables"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting; check its spelling against the README's configuration table"
        if isinstance(value, dict):
            # A whole section failed a rule that spans its keys; its values may include the token.
            problems.append(f"{key} ({origin}): {message}")
            continue
        if key in SECRET_KEYS:
            shown = "<hidden>"
        elif key in URL_KEYS and isinstance(value, str):
            shown = redact(repr(_hide_url_password(value)))
        else:
            shown = redact(repr(value))
        problems.append(f"{key} = {shown} ({origin}): {message}")
    return ConfigError(
        "invalid configuration:\n" + "\n".join(f"  - {problem}" for problem in problems),
        hint="the Configuration section of the README lists every setting and its environment variable",
    )


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[leaf] = value


def _get_dotted(source: dict[str, Any], key: str) -> Any:
    current: Any = source
    for part in key.split("."):
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current
