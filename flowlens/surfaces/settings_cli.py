"""Command-line options generated from settings declarations (:mod:`flowlens.model.settings`), and
the settings reference (``docs/settings.md``) generated from the same declarations.

A command's own options (not settings) are declared in its function as usual; the settings'
options are added to its signature, each ``None`` unless the user gives it, so that the
file and the environment below it keep their values.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer
from rich.markup import escape

from flowlens.model.settings import Declared, Settings


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ",".join(map(str, value)) or "none"
    return str(value) if value != "" else "empty"


def option_help(item: Declared) -> str:
    env = item.env + (f" or {item.legacy_env}" if item.legacy_env else "")
    return escape(f"{item.help} [default: {_shown(item.field.default)}; env {env}]")


def _parameter(item: Declared) -> inspect.Parameter:
    kind = item.field.annotation
    names = [f"{item.flag}/{item.off_flag}" if item.off_flag else item.flag]
    if item.short:
        names.append(item.short)
    if getattr(kind, "__origin__", None) in (tuple, list):
        kind = list[str]
    option = typer.Option(*names, help=option_help(item), show_default=False)
    return inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[kind | None, option])  # type: ignore[valid-type]


def with_settings(settings: type[Settings], only: Iterable[str] | None = None
                  ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command ``run(flags: dict, **own_options)``: the settings' options are added to
    its signature and handed to it, as given (None where not given), in ``flags``."""
    chosen = [d for d in settings.declared() if d.cli and (only is None or d.name in set(only))]
    names = {d.name for d in chosen}

    def decorate(run: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(run, eval_str=True).parameters.values() if p.name != "flags"]

        @functools.wraps(run)
        def command(**values: Any) -> Any:
            flags = {name: values.pop(name) for name in list(values) if name in names}
            flags = {name: tuple(value) if isinstance(value, list) else value for name, value in flags.items()}
            return run(flags, **values)

        parameters = [*own, *(_parameter(d) for d in chosen)]
        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        del command.__wrapped__  # typer must read the signature above, not run's
        return command
    return decorate


def settings_markdown(*groups: tuple[str, type[Settings]]) -> str:
    lines = ["# Settings", "",
             "Generated from the settings' declarations (`flowlens settings-doc > docs/settings.md`). Each "
             "setting is a flag, an environment variable and a key of the YAML file given with `--config`; "
             "later layers win: default, file, environment, flag.", ""]
    for title, settings in groups:
        lines += [f"## {title}", "", "| flag | environment | default | what |", "|---|---|---|---|"]
        for item in settings.declared():
            env = f"`{item.env}`" + (f" (or `{item.legacy_env}`)" if item.legacy_env else "")
            flag = f"`{item.flag}`" if item.cli else f"(file: `{item.key}`)"
            default = _shown(item.field.default).replace("|", "\\|")
            lines.append(f"| {flag} | {env} | `{default}` | {item.help.replace('|', chr(92) + '|')} |")
        lines.append("")
    return "\n".join(lines)
