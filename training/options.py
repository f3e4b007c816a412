"""Dataclass fields that are also command-line flags: declare an option once, get its flag.

A field made with `option(...)` carries its help text, argparse group and checks in its
metadata; `add_flags` turns every such field of a dataclass (and of the dataclasses
nested in it) into an argparse flag, and `collect` reads the parsed values back per
dataclass. Invalid values are argparse errors (one line, exit code 2), raised while
parsing, so nothing is built or written before they are caught.

Example:
    >>> @dataclasses.dataclass(frozen=True)
    ... class Run:
    ...     epochs: int = option(10, "passes over the data", check=positive)
    >>> parser = argparse.ArgumentParser()
    >>> add_flags(parser, Run)
    >>> collect(parser.parse_args(["--epochs", "3"]), Run)
    {'epochs': 3}
"""

import argparse
import dataclasses
import types
import typing


def positive(value):
    """Checks a number > 0 (an argparse `type` wrapper)."""
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def non_negative(value):
    """Checks a number >= 0."""
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def option(default=dataclasses.MISSING, help=None, *, flag=None, group=None, check=None,
           compare=True, **argparse_kwargs):
    """A dataclass field with a CLI flag.

    flag: the flag name (default: `--` + the field name with dashes); False: no flag
        (a value derived by the program, e.g. the number of classes).
    group: the argparse group title (default: the enclosing dataclass' `GROUP`).
    check: `value -> value` raising `argparse.ArgumentTypeError` (e.g. `positive`).
    compare: False for settings that may change when a run is resumed (paths, devices).
    """
    metadata = dict(help=help, flag=flag, group=group, check=check, compare=compare,
                    argparse=argparse_kwargs)
    return dataclasses.field(default=default, metadata=metadata)


def derived(default=None):
    """A field the program fills in (no flag), e.g. the dataset's class names."""
    return option(default, flag=False)


def flag_fields(cls):
    """The fields of `cls` that have a flag (nested dataclasses excluded)."""
    return [f for f in dataclasses.fields(cls)
            if f.metadata.get("flag") is not False and not _nested(f)]


def nested_fields(cls):
    """The fields of `cls` that hold a dataclass (config sections)."""
    return [f for f in dataclasses.fields(cls) if _nested(f)]


def _nested(field):
    return isinstance(field.type, type) and dataclasses.is_dataclass(field.type)


def _value_type(field):
    """int for `int`, `int | None`, ...; None for bool (a switch)."""
    kind = field.type
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    return None if kind is bool else kind


def _argparse_type(field):
    kind, check = _value_type(field), field.metadata.get("check")
    return kind if check is None else checked(kind, check)


def checked(kind, check):
    """An argparse `type`: `kind(text)`, then `check` (e.g. `checked(int, positive)`)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid {kind.__name__} value: {text!r}") from None
        return check(value)
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def add_flags(parser, cls, overrides=False, groups=None):
    """Adds a flag for each option of `cls` and of its nested sections.

    overrides: every flag of `cls` defaults to None (= keep the value from elsewhere,
    e.g. a recipe), and switches become --x/--no-x. Nested sections are overrides when
    their class sets `OVERRIDES = True`.
    """
    groups = {} if groups is None else groups
    for field in flag_fields(cls):
        meta = field.metadata
        title = meta.get("group") or getattr(cls, "GROUP", None)
        if title not in groups:
            groups[title] = parser.add_argument_group(title) if title else parser
        kwargs = dict(dest=field.name, help=meta.get("help"), **meta.get("argparse", {}))
        default = None if overrides else field.default
        if _value_type(field) is None:  # a switch
            action = (argparse.BooleanOptionalAction
                      if overrides or default is not False else "store_true")
            kwargs.update(action=action, default=default)
        else:
            kwargs.update(type=_argparse_type(field), default=default)
        name = meta.get("flag") or "--" + field.name.replace("_", "-")
        groups[title].add_argument(name, **kwargs)
    for field in nested_fields(cls):
        add_flags(parser, field.type, getattr(field.type, "OVERRIDES", False), groups)
    return groups


def collect(namespace, cls):
    """{field: value} of `cls`' flags in the parsed `namespace` (None: not given)."""
    return {f.name: getattr(namespace, f.name) for f in flag_fields(cls)}


def compared_keys(cls, prefix=""):
    """Dotted keys of the fields of `cls` (and sections) that a resumed run must keep."""
    keys = set()
    for field in dataclasses.fields(cls):
        if _nested(field):
            keys |= compared_keys(field.type, f"{prefix}{field.name}.")
        elif field.metadata.get("compare", True):
            keys.add(prefix + field.name)
    return keys
