"""Settings declared once: each field of a :class:`Settings` class is one setting, and its
declaration gives the flag (``--max-flow-series``), the environment variable
(``FLOWLENS_AGENT_MAX_FLOW_SERIES``), the YAML key (``max-flow-series``), the default and the help.

Layers, later ones winning: defaults, the YAML file, environment variables (the older
``FLOWLENS_<NAME>`` spelling too, for the settings that had it), flags. Loading and typing are
pydantic-settings'; what is added here is the one-line error that names where a bad value came
from, and the table the CLI and ``docs/settings.md`` are generated from.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import yaml
from pydantic import ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from flowlens.model.errors import ConfigError


def within(low: float, high: float, unit: str = "") -> Callable[[Any], Any]:
    """A field check: the value lies in [low, high] (say ``unit`` after the bounds)."""
    def check(value: Any) -> Any:
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}{unit}")
        return value
    return check


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def key_of(name: str) -> str:
    return name.replace("_", "-")


@dataclass(frozen=True, slots=True)
class Declared:
    """What the CLI and the docs need of one setting."""

    name: str
    field: FieldInfo
    env: str
    legacy_env: str | None
    short: str | None
    off_flag: str | None  # a boolean's negative flag, e.g. --host-only for --all-namespaces
    cli: bool  # has a flag; settings without one come from the file or the environment only
    flag_name: str | None = None  # a flag older than the declaration, e.g. --token for tokens

    @property
    def flag(self) -> str:
        return self.flag_name or flag_of(self.name)

    @property
    def key(self) -> str:
        return key_of(self.name)

    @property
    def help(self) -> str:
        return self.field.description or ""


class Settings(BaseSettings):
    """Base of the agent's and the collector's settings."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)
    # Environment names settings had before they had a component prefix: still read.
    legacy_env: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def env_prefix(cls) -> str:
        return str(cls.model_config.get("env_prefix", ""))

    @classmethod
    def declared(cls) -> list[Declared]:
        out = []
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            out.append(Declared(name, info, (cls.env_prefix() + name).upper(), cls.legacy_env.get(name),
                                extra.get("short"), extra.get("off_flag"),  # type: ignore[arg-type]
                                bool(extra.get("cli", True)), extra.get("flag")))  # type: ignore[arg-type]
        return out

    @classmethod
    def load(cls, path: Path | None = None, flags: Mapping[str, Any] | None = None) -> Self:
        """Merge the layers; ``flags`` are those the user actually gave (None: not given)."""
        layers = _Layers(cls, {k: v for k, v in (flags or {}).items() if v is not None}, path,
                         from_environment=True)
        return cls(_layers=layers)  # type: ignore[call-arg]

    def __init__(self, _layers: _Layers | None = None, **values: Any) -> None:
        # Built in code (tests, the lab) with keyword values: those and the defaults only, so a
        # stray variable in the environment never changes what a program asked for.
        layers = _layers or _Layers(type(self), values, None, from_environment=False)
        try:
            super().__init__(**layers.merged())
        except ValidationError as err:
            raise ConfigError(layers.explain(err)) from None

    @field_validator("*", mode="before")
    @classmethod
    def _split_lists(cls, value: Any, info: ValidationInfo) -> Any:
        """A list setting given as text (the environment): comma- or space-separated."""
        kind = cls.model_fields[str(info.field_name)].annotation
        if isinstance(value, str) and getattr(kind, "__origin__", None) in (tuple, list):
            return tuple(part for part in value.replace(",", " ").split() if part)
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   **_: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the layers are merged by _Layers, so that an error can name its layer


class _Layers:
    """The layers of one load, each read by pydantic-settings' own sources where it has one."""

    def __init__(self, cls: type[Settings], flags: dict[str, Any], path: Path | None,
                 from_environment: bool) -> None:
        self.flags, self.path = flags, path
        self.from_file = _read_yaml(path, cls) if path is not None else {}
        self.env: dict[str, Any] = {}
        self.env_names: dict[str, str] = {}
        if from_environment:
            current = EnvSettingsSource(cls, env_prefix=cls.env_prefix())()
            for item in cls.declared():
                if item.name in current:  # the prefixed name wins over the older one
                    self.env[item.name], self.env_names[item.name] = current[item.name], item.env
                elif item.legacy_env and item.legacy_env in os.environ:
                    self.env[item.name], self.env_names[item.name] = os.environ[item.legacy_env], item.legacy_env

    def merged(self) -> dict[str, Any]:
        return {**self.from_file, **self.env, **self.flags}

    def where(self, name: str) -> str:
        if name in self.flags:
            return flag_of(name)
        if name in self.env_names:
            return f"environment {self.env_names[name]}"
        if name in self.from_file:
            return f"config file {self.path}"
        return "default"

    def explain(self, err: ValidationError) -> str:
        """One line: the setting, what is wrong with it, the value and where it came from."""
        first = err.errors()[0]
        error = first.get("ctx", {}).get("error")
        loc = [str(part) for part in first["loc"] if not isinstance(part, int)]
        if not loc:  # a check across settings names its settings itself
            return str(error or first["msg"])
        name = loc[0]
        msg = first["msg"]
        what = f"{key_of(name)} {error}" if error is not None else f"{key_of(name)}: {msg[:1].lower()}{msg[1:]}"
        return f"{what}, got {first['input']!r} ({self.where(name)})"


def _read_yaml(path: Path, cls: type[Settings]) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of settings")
    known = cls.model_fields
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ConfigError(f"config file {path}: unknown setting {key!r} (known: "
                              + ", ".join(key_of(n) for n in known) + ")")
        out[name] = value
    return out
