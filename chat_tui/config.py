"""Settings: defaults < config.toml < environment < command-line flags.

Settings are a frozen dataclass so every part of the program (the TUI, `sync`,
the tests) reads one typed object instead of poking at dicts. An invalid config
file raises `ConfigError` with the file's line and column; the CLI turns that
into a clear message and exit status 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

APP_NAME = "chat-tui"
DEFAULT_BASE_URL = "http://127.0.0.1:11434/v1"
DEFAULT_MODEL = "llama3.2"
DEFAULT_ENDPOINT = "default"  # the endpoint the flat base_url/model/api_key keys describe


NOTIFY_CHOICES = ("bell", "osc", "off")


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Settings:
    """Everything the program can be told. Field docs are shown by `chat-tui paths`."""

    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = field(default=None, repr=False)  # never printed, never stored
    model: str = DEFAULT_MODEL
    system_prompt: str = ""
    stream: bool = True  # false for servers without SSE streaming
    connect_timeout: float = 5.0  # a dead link fails in seconds…
    read_timeout: float = 120.0  # …a slow model may think for a minute between tokens
    stall_timeout: float = 30.0  # a stream that was flowing and then went silent this long is cut
    max_reply_chars: int = 1_000_000  # replies beyond this are cut and labelled
    max_reply_seconds: float = 900.0  # a stream that never ends is cut after this
    verify_tls: bool = True
    max_attempts: int = 6
    max_age: float = 24 * 3600.0  # seconds; 0 = never expire
    dedup_window: float = 300.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    probe_cap: float = 15.0
    lease_seconds: float = 30.0
    concurrency: int = 4  # conversations sent in parallel by one process
    offline_answers: bool = True
    answer_threshold: float = 85.0
    handoff_on_exit: bool = True
    context_tokens: int = 0  # the model's context window; 0 = ask the server, learn from errors
    reply_tokens: int = 0  # room kept for the reply; 0 = 25 % of the window, at least 256
    max_reply_tokens: int = 0  # sent as max_tokens when > 0 (the server's default otherwise)
    # Per-model settings: [models."NAME"] context_tokens = N, reply_tokens = N
    models: dict[str, dict[str, int]] = field(default_factory=dict)
    # Named endpoints: [endpoints.NAME] base_url, model, api_key_env. The flat
    # base_url/model/api_key above are the endpoint called "default".
    endpoints: dict[str, EndpointConfig] = field(default_factory=dict)
    fallback: str = ""  # an endpoint that answers while a conversation's own is offline
    theme: str = ""  # the TUI's theme; empty: Textual's default. Saved when changed in the app
    notify: str = "bell"  # a reply landed while the window was unfocused: bell | osc | off
    data_dir: Path = field(default_factory=lambda: default_data_dir())
    config_path: Path = field(default_factory=lambda: default_config_path())

    @property
    def db_path(self) -> Path:
        return self.data_dir / "chat.db"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "chat-tui.log"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def endpoint_names(self) -> list[str]:
        """Every endpoint a conversation may use: "default" (the flat keys) first."""
        return [DEFAULT_ENDPOINT, *sorted(n for n in self.endpoints if n != DEFAULT_ENDPOINT)]

    def for_endpoint(self, name: str | None) -> Settings:
        """These settings as seen by one named endpoint (its URL, key and model).

        Everything else (timeouts, backoff, context settings) is shared, so each
        endpoint's client, watcher and sender run on the same code and numbers.
        Raises KeyError for a name that is not configured.
        """
        if not name or name == DEFAULT_ENDPOINT:
            return self
        own = self.endpoints[name]
        return dataclasses.replace(
            self, base_url=own.base_url, api_key=own.api_key(), model=own.model or self.model
        )


@dataclass(frozen=True)
class EndpointConfig:
    """One ``[endpoints.NAME]`` table. The API key stays in the environment:
    only the variable's name is configured, so no key is ever written to a file."""

    base_url: str
    model: str = ""
    api_key_env: str = ""

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None if self.api_key_env else None


def default_config_path() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


def default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False))


# Keys a config file may set, with the type each must have. Paths and the API
# key are handled separately.
_FILE_KEYS: dict[str, tuple[type, ...]] = {
    f.name: (
        (int, float)
        if f.type in ("float",)
        else (bool,)
        if f.type == "bool"
        else (int,)
        if f.type == "int"
        else (str,)
    )
    for f in fields(Settings)
    if f.name not in ("data_dir", "config_path", "api_key", "models", "endpoints")
}
_ENDPOINT_KEYS = ("base_url", "model", "api_key_env")


def _coerce_endpoints(path: Path, value: Any) -> dict[str, EndpointConfig]:
    """``[endpoints.NAME]`` tables: base_url (required), model, api_key_env."""
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: 'endpoints' must be a table of [endpoints.NAME] tables")
    out: dict[str, EndpointConfig] = {}
    for name, table in value.items():
        where = f"[endpoints.{json_quote(name)}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {where} must be a table")
        if name == DEFAULT_ENDPOINT:
            raise ConfigError(
                f"{path}: {where}: the name 'default' is the flat base_url/model keys; "
                "set those instead"
            )
        if "api_key" in table:
            raise ConfigError(
                f"{path}: {where}: put the key in an environment variable and name it "
                "with api_key_env (keys are never written in endpoint tables)"
            )
        for key, item in table.items():
            if key not in _ENDPOINT_KEYS:
                raise ConfigError(
                    f"{path}: unknown setting '{key}' in {where} "
                    f"(known: {', '.join(_ENDPOINT_KEYS)})"
                )
            if not isinstance(item, str):
                raise ConfigError(f"{path}: '{key}' in {where} must be a string, not {item!r}")
        if not table.get("base_url"):
            raise ConfigError(f"{path}: {where} needs a base_url")
        out[str(name)] = EndpointConfig(
            base_url=_check_url(table["base_url"], f"{where} base_url"),
            model=table.get("model", ""),
            api_key_env=table.get("api_key_env", ""),
        )
    return out


_MODEL_KEYS = ("context_tokens", "reply_tokens")


def _coerce_models(path: Path, value: Any) -> dict[str, dict[str, int]]:
    """``[models."NAME"]`` tables: per-model context settings."""
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: 'models' must be a table of [models.\"NAME\"] tables")
    out: dict[str, dict[str, int]] = {}
    for name, table in value.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [models.{json_quote(name)}] must be a table")
        own: dict[str, int] = {}
        for key, number in table.items():
            if key not in _MODEL_KEYS:
                raise ConfigError(
                    f"{path}: unknown setting '{key}' in [models.{json_quote(name)}] "
                    f"(known: {', '.join(_MODEL_KEYS)})"
                )
            if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                raise ConfigError(
                    f"{path}: '{key}' in [models.{json_quote(name)}] must be a whole number "
                    f"of tokens, not {number!r}"
                )
            own[key] = number
        out[str(name)] = own
    return out


def json_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    import tomllib  # only when there is a file to read

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's message ends with "(at line L, column C)"; 3.14 adds
        # lineno/colno attributes. Say both plainly either way.
        line = getattr(exc, "lineno", None)
        col = getattr(exc, "colno", None)
        msg = str(exc)
        if line is not None and col is not None:
            msg = f"{getattr(exc, 'msg', msg)} (line {line}, column {col})"
        raise ConfigError(f"{path}: invalid TOML: {msg}") from None
    return data


def _coerce_file_values(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "api_key":
            if not isinstance(value, str):
                raise ConfigError(f"{path}: 'api_key' must be a string")
            out[key] = value
            continue
        if key == "models":
            out[key] = _coerce_models(path, value)
            continue
        if key == "endpoints":
            out[key] = _coerce_endpoints(path, value)
            continue
        if key == "data_dir":
            if not isinstance(value, str):
                raise ConfigError(f"{path}: 'data_dir' must be a string")
            out[key] = Path(value).expanduser()
            continue
        if key not in _FILE_KEYS:
            known = ", ".join(sorted([*_FILE_KEYS, "api_key", "data_dir", "models", "endpoints"]))
            raise ConfigError(f"{path}: unknown setting '{key}' (known: {known})")
        expected = _FILE_KEYS[key]
        # bool is an int subclass; don't let `max_attempts = true` through.
        if isinstance(value, bool) and bool not in expected:
            raise ConfigError(f"{path}: '{key}' must be a number, not {value!r}")
        if not isinstance(value, expected):
            kind = {str: "a string", bool: "true or false", int: "a whole number"}.get(
                expected[0], "a number"
            )
            raise ConfigError(f"{path}: '{key}' must be {kind}, not {value!r}")
        out[key] = float(value) if float in expected else value
    return out


def _check_url(value: str, what: str = "base_url") -> str:
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{what} must start with http:// or https://, not {value!r}")
    # A URL the HTTP client would reject (bad port, broken IPv6 literal, no
    # host, spaces or control characters) must fail here, not as a traceback.
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"{what} {value!r} is not a valid URL: {exc}") from None
    if not url.hostname or any(ch <= " " or ch == "\x7f" for ch in value):
        raise ConfigError(f"{what} {value!r} is not a valid URL")
    return value.rstrip("/")


def _validate(settings: Settings) -> Settings:
    _check_url(settings.base_url)
    if settings.fallback and settings.fallback not in settings.endpoint_names:
        raise ConfigError(
            f"fallback = {settings.fallback!r} names no endpoint "
            f"(known: {', '.join(settings.endpoint_names)})"
        )
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if isinstance(value, float) and not math.isfinite(value):  # nan, inf from TOML
            raise ConfigError(f"'{f.name}' must be a finite number, not {value}")
    for name in (
        "connect_timeout",
        "read_timeout",
        "stall_timeout",
        "lease_seconds",
        "backoff_base",
        "probe_cap",
        "max_reply_seconds",
    ):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"'{name}' must be greater than 0")
    for name in (
        "max_age",
        "dedup_window",
        "backoff_cap",
        "context_tokens",
        "reply_tokens",
        "max_reply_tokens",
    ):
        if getattr(settings, name) < 0:
            raise ConfigError(f"'{name}' must not be negative")
    if settings.max_attempts < 1 or settings.concurrency < 1 or settings.max_reply_chars < 1:
        raise ConfigError("'max_attempts', 'concurrency' and 'max_reply_chars' must be at least 1")
    if settings.notify not in NOTIFY_CHOICES:
        raise ConfigError(
            f"'notify' must be one of {', '.join(NOTIFY_CHOICES)}, not {settings.notify!r}"
        )
    if not 0 <= settings.answer_threshold <= 100:
        raise ConfigError("'answer_threshold' must be between 0 and 100")
    return settings.replace(base_url=settings.base_url.rstrip("/"))


def missing_config_notice(environ: dict[str, str] | None = None) -> str | None:
    """CHAT_TUI_CONFIG names a file that does not exist: say so rather than
    silently running on defaults (a typo in the path would go unnoticed)."""
    env = os.environ if environ is None else environ
    named = env.get("CHAT_TUI_CONFIG")
    if not named:
        return None
    path = Path(named).expanduser()
    if path.exists():
        return None
    return f"CHAT_TUI_CONFIG names {path}, which does not exist; using the defaults"


def load_settings(
    *,
    base_url: str | None = None,
    model: str | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build settings from the four layers. Flags are the keyword arguments."""
    env = os.environ if environ is None else environ
    config_path = (
        Path(env["CHAT_TUI_CONFIG"]).expanduser()
        if env.get("CHAT_TUI_CONFIG")
        else (default_config_path())
    )
    values: dict[str, Any] = {"config_path": config_path}
    values.update(_coerce_file_values(config_path, _read_config_file(config_path)))
    if env.get("OPENAI_BASE_URL"):
        values["base_url"] = env["OPENAI_BASE_URL"]
    if env.get("OPENAI_API_KEY"):
        values["api_key"] = env["OPENAI_API_KEY"]
    if env.get("CHAT_TUI_MODEL"):
        values["model"] = env["CHAT_TUI_MODEL"]
    if env.get("CHAT_TUI_DATA_DIR"):
        values["data_dir"] = Path(env["CHAT_TUI_DATA_DIR"]).expanduser()
    if base_url:
        values["base_url"] = base_url
    if model:
        values["model"] = model
    return _validate(Settings(**values))
