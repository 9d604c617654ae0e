"""Settings as dataclass fields: each setting's one name, default, help text and check live in its field.

    @dataclass
    class LoraSettings:
        PREFIX: ClassVar[str] = "lora_"
        rank: int = option(8, "LoRA rank", check=at_least(1))

A setting's *name* is its group's PREFIX plus its field name (`lora_rank`), unless the field declares
another (`name="sample_seed"`, where two groups share a field name): the keyword of `mlx_dpo.api.train`,
the key of a --config file and the key of a round's recorded settings. Its CLI flag is `--` + the name
with dashes unless the field declares another (`flag="--lora-rank"`), and the flag's spelling is accepted
as a key too, so `lora_layers`, `loss` or `no_compile` keep working where today's files and calls use
them. A bool that defaults to True is switched off by `--no-<name>`. A flag renamed keeps its old
spelling where it was used as an alias that says it is deprecated (`add_deprecated_flag`).

Everything a surface needs is read from the fields: `add_flags` (argparse; `add_flag_groups` puts each
group's flags under its TITLE in --help), `resolve` (config-file keys and API keywords, any accepted
spelling), `check` (one rule per setting, one message), `shown` (a default as help texts and the app print
it), `build` (the dataclass from flat names), `with_defaults` (a surface's own defaults, e.g. a round's).
No mlx import here.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, NoneType, UnionType
from typing import Any, TypeVar

from mlx_dpo.errors import MlxDpoError

T = TypeVar("T")


# --- checks -------------------------------------------------------------------------------------------------


class Check:
    """A rule on one setting's value.

    `problem(value, values)` returns what is wrong, in words that follow the setting's name ("must be at
    least 1"), or None; `values` holds every setting of the run (defaults filled in), for a rule that
    depends on another setting.
    """

    def __init__(self, problem: Callable[[Any, Mapping[str, Any]], str | None]):
        self.problem = problem

    def message(self, name: str, value: Any, reason: str, *, user: bool) -> str:
        """`user`: `name` is a flag or a field label and the value is shown as written; else Python's view."""
        return f"{name} {reason} (got {value if user else repr(value)})"


class OneOf(Check):
    """The value is one of a few names, e.g. the loss types."""

    def __init__(self, choices: Iterable[str], noun: str):
        self.choices, self.noun = tuple(choices), noun
        super().__init__(lambda value, _values: None if value in self.choices else "unknown")

    def message(self, name: str, value: Any, reason: str, *, user: bool) -> str:
        names = ", ".join(self.choices)
        if user:  # --loss dpo-max: unknown loss (choose from ...)
            return f"{name} {value}: unknown {self.noun} (choose from {names})"
        return f"unknown {name} {value!r}; choose from {names}"


_TYPE = Check(lambda _value, _values: None)  # the "check" of a value of the wrong type


def _must_be(kind: type) -> str:
    return "must be " + {
        int: "a whole number",
        float: "a number",
        bool: "true or false",
        str: "text",
        list: "a list",
    }.get(kind, kind.__name__)


def rule(test: Callable[[Any], bool], reason: str) -> Check:
    return Check(lambda value, _values: None if test(value) else reason)


def at_least(low: float) -> Check:
    return rule(lambda v: v >= low, f"must be at least {low}")


def positive() -> Check:
    return rule(lambda v: v > 0, "must be > 0")


def in_range(low: float, high: float) -> Check:
    """low <= value < high."""
    return rule(lambda v: low <= v < high, f"must be in [{low}, {high})")


class SettingError(MlxDpoError, ValueError):
    """A setting's value breaks its rule. `str()` names it by its API name; `message(flag)` by a flag or label."""

    def __init__(self, name: str, value: Any, reason: str, check: Check):
        self.name, self.value, self.reason, self.check = name, value, reason, check
        super().__init__(check.message(name, value, reason, user=False))

    def message(self, name: str, shown: str | None = None) -> str:
        """The message for a user, naming the setting `name` and its value as `shown` (default: as given)."""
        if shown is None:  # a list as it is typed (a,b), not as Python prints it; an empty one as []
            shown = ",".join(map(str, self.value)) if isinstance(self.value, list) and self.value else self.value
        return self.check.message(name, shown, self.reason, user=True)


# --- fields -------------------------------------------------------------------------------------------------


def option(
    default: Any,
    help: str,
    *,
    check: Check | None = None,
    flag: str | None = None,
    default_text: str | None = None,
    name: str | None = None,
) -> Any:
    """A dataclass field for a setting. `default_text` says what an unset (None/-1) default means in help;
    `name` replaces PREFIX + field name where two groups have a field of the same name."""
    metadata = {"help": help, "check": check, "flag": flag, "default_text": default_text, "name": name}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def comma_list(text: str) -> list[str]:
    """ "a, b" -> ["a", "b"]: how a list setting is written on the command line or in a text field."""
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class Setting:
    """One setting as every surface sees it, read from its dataclass field."""

    name: str  # API keyword and config key: the group's PREFIX + the field name
    field: str
    group: type
    kind: type  # int, float, str, bool or list (of str)
    default: Any
    help: str
    check: Check | None
    flag: str
    default_text: str | None

    @property
    def switch_off(self) -> bool:
        """A bool that is on by default: its flag (--no-...) turns it off."""
        return self.kind is bool and self.default is True

    @property
    def parse(self) -> Callable[[str], Any]:
        """Text (a flag's argument, a typed field) to a value; int/float raise ValueError on bad text."""
        return {list: comma_list, bool: truth}.get(self.kind, self.kind)

    def spellings(self) -> dict[str, bool]:
        """Accepted keys -> whether the key means the opposite (no_compile=True is compile=False)."""
        return {self.name: False, self.flag.lstrip("-").replace("-", "_"): self.switch_off}

    def help_text(self) -> str:
        default = None if self.kind is bool else self.default_text or shown(self.default)
        text = self.help if default is None else f"{self.help} (default {default})"
        return text.replace("%", "%%")  # argparse formats help with %


def _kind(hint: Any) -> type:
    """`int | None` -> int, `list[str] | None` -> list: what a flag or a text field parses to."""
    first = next(a for a in typing.get_args(hint) if a is not NoneType) if isinstance(hint, UnionType) else hint
    return typing.get_origin(first) or first


def _setting(group: type, f: dataclasses.Field, hint: Any) -> Setting:
    name = f.metadata.get("name") or getattr(group, "PREFIX", "") + f.name
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    kind = _kind(hint)
    off = "no-" if kind is bool and default is True else ""
    flag = f.metadata.get("flag") or f"--{off}{name.replace('_', '-')}"
    return Setting(
        name,
        f.name,
        group,
        kind,
        default,
        f.metadata["help"],
        f.metadata.get("check"),
        flag,
        f.metadata.get("default_text"),
    )


@functools.cache
def settings_of(*groups: type) -> Mapping[str, Setting]:
    """The settings of one or more option dataclasses, by name, in field order (read-only: it is shared)."""
    table = {}
    for group in groups:
        hints = typing.get_type_hints(group)
        table.update({s.name: s for s in (_setting(group, f, hints[f.name]) for f in dataclasses.fields(group))})
    return MappingProxyType(table)


TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def truth(text: str) -> bool:
    """A yes/no given as text (a quoted config value): true/false, yes/no, on/off, 1/0; anything else is refused.

    bool("false") is True, so text must never reach bool() itself.
    """
    word = text.strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ValueError(text)


def shown(value: Any) -> str | None:
    """A default as help texts and the app's fields show it: 5e-5, 0.1, 16, cosine; None for none."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        text = repr(value)
        if "e" in text:  # 5e-05 -> 5e-5
            mantissa, exponent = text.split("e")
            text = f"{mantissa}e{int(exponent)}"
        return text
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


# --- the surfaces -------------------------------------------------------------------------------------------


def resolve(given: Mapping[str, Any], settings: Mapping[str, Setting]) -> tuple[dict[str, Any], list[str]]:
    """Values given by any accepted spelling (dashes or underscores) -> ({name: value}, unknown keys).

    Text given for a number or a list (a YAML `1e-3` is text) is parsed as on the command line.
    """
    spellings = {key: (s, off) for s in settings.values() for key, off in s.spellings().items()}
    values: dict[str, Any] = {}
    keys: dict[str, str] = {}  # name -> the key that gave it
    unknown = []
    for key, value in given.items():
        if key.replace("-", "_") not in spellings:
            unknown.append(key)
            continue
        setting, off = spellings[key.replace("-", "_")]
        if setting.name in values:
            raise MlxDpoError(f"{setting.name} is given twice (as {keys[setting.name]} and as {key})")
        keys[setting.name] = key
        if isinstance(value, str) and setting.kind is not str:
            try:
                value = setting.parse(value)
            except ValueError:
                raise SettingError(setting.name, value, _must_be(setting.kind), _TYPE) from None
        if setting.kind is bool and not isinstance(value, bool):  # a number or a list for a yes/no
            raise SettingError(setting.name, value, _must_be(bool), _TYPE)
        values[setting.name] = (not value) if off else value
    return values, unknown


def check(given: Mapping[str, Any], settings: Mapping[str, Setting]) -> None:
    """Raise SettingError for the first given value (in field order) that breaks its setting's rule."""
    values = {**{name: s.default for name, s in settings.items()}, **given}
    for name, setting in settings.items():
        value = given.get(name)
        if name not in given or value is None or setting.check is None:
            continue
        try:
            reason = setting.check.problem(value, values)
        except TypeError:  # e.g. a string where a number belongs
            raise SettingError(name, value, _must_be(setting.kind), _TYPE) from None
        if reason:
            raise SettingError(name, value, reason, setting.check)


def check_fields(obj: Any) -> None:
    """Check every field of an option dataclass (its __post_init__ calls this)."""
    settings = settings_of(type(obj))
    check({name: getattr(obj, s.field) for name, s in settings.items()}, settings)


def build(group: type[T], values: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> T:
    """An instance of `group` from flat names (other groups' names are ignored), over `base` field values."""
    fields = {s.field: values[name] for name, s in settings_of(group).items() if name in values}
    return group(**{**(base or {}), **fields})


def flatten(*objs: Any) -> dict[str, Any]:
    """Option dataclass instances -> {name: value}, e.g. for a round's record."""
    return {name: getattr(obj, s.field) for obj in objs for name, s in settings_of(type(obj)).items()}


def with_defaults(settings: Mapping[str, Setting], defaults: Mapping[str, Any]) -> dict[str, Setting]:
    """`settings` as a surface that starts from other defaults shows them (a round's, `online`'s sampler)."""
    return {
        name: dataclasses.replace(s, default=defaults[name]) if name in defaults else s for name, s in settings.items()
    }


def add_flag_groups(parser: argparse.ArgumentParser, settings: Iterable[Setting]) -> None:
    """`add_flags`, each setting under its group's heading in --help (the dataclass's TITLE), the groups in the
    order their settings come."""
    by_group: dict[type, list[Setting]] = {}
    for s in settings:
        by_group.setdefault(s.group, []).append(s)
    for group, members in by_group.items():
        add_flags(parser.add_argument_group(getattr(group, "TITLE", group.__name__)), members)


class _Deprecated(argparse._StoreAction):
    """An old flag that still works (stored as its new flag would be), saying on stderr which flag replaced it."""

    def __init__(self, option_strings, dest, new_flag: str, **kwargs):
        self.new_flag = new_flag
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"mlx-dpo: note: {option_string} is deprecated; use {self.new_flag}", file=sys.stderr)
        super().__call__(parser, namespace, values, option_string)


def add_deprecated_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, old_flag: str, setting: Setting
) -> None:
    """`old_flag` as an alias of `setting`'s flag that says it is deprecated (in --help and when used)."""
    parser.add_argument(
        old_flag,
        dest=setting.name,
        type=setting.parse,
        default=None,
        action=_Deprecated,
        new_flag=setting.flag,
        metavar=setting.flag.lstrip("-").replace("-", "_").upper(),
        help=f"deprecated: use {setting.flag}",
    )


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, settings: Iterable[Setting]) -> None:
    """One flag per setting, each defaulting to None so that only the flags given override a config file."""
    for s in settings:
        if s.kind is bool:
            parser.add_argument(
                s.flag, dest=s.name, action="store_const", const=not s.default, default=None, help=s.help_text()
            )
        else:
            parser.add_argument(
                s.flag,
                dest=s.name,
                type=s.parse,
                default=None,
                help=s.help_text(),
                metavar=s.flag.lstrip("-").replace("-", "_").upper(),
            )


def given_flags(args: argparse.Namespace, settings: Iterable[Setting]) -> dict[str, Any]:
    """The settings whose flags were given, by name."""
    return {s.name: getattr(args, s.name) for s in settings if getattr(args, s.name, None) is not None}
