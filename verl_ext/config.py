"""What every typed job config shares: build once from Hydra / a mapping, validate, read as attributes.

In the style of verl's configs (``verl.base_config.BaseConfig`` + ``verl.utils.config.omega_conf_to_dataclass``):
a config is a nested dataclass whose defaults are its field defaults (the only place they live), merged with what
the user wrote through OmegaConf's structured configs, so

- an unknown key is an error naming it (with the nearest known keys), never a silently ignored setting;
- a value of the wrong type is an error naming the key; a required field (``MISSING``) left unset too;
- each class checks its own values in ``validate()`` (run by ``__post_init__``), naming the field and what is allowed;
- fields are frozen after construction, like verl's ``BaseConfig``.

verl's classes are not subclassed: ``verl_ext`` stays importable without verl (``import verl`` takes seconds and loads
its plugins), and nothing here needs their ``Mapping`` interface, which would invite string lookups again.

Each field's documentation is the string literal right under it (an attribute docstring); ``field_docs`` reads them,
and ``verl_ext.knob_tables`` renders the knob tables in docs/ from fields, defaults and docs.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import json
import textwrap
from collections.abc import Mapping
from functools import cache
from typing import Any, TypeVar

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, ValidationError

__all__ = ["MISSING", "ConfigError", "TypedConfig", "field_docs", "one_of"]

C = TypeVar("C", bound="TypedConfig")


class ConfigError(ValueError):
    """A configuration problem; the message names the key."""


@dataclasses.dataclass
class TypedConfig:
    """Base of the typed configs: frozen after ``__init__``; ``validate()`` checks the values."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__:  # set once by __init__, read-only afterwards (as verl's BaseConfig)
            raise dataclasses.FrozenInstanceError(f"{type(self).__name__}.{name} is read-only; build a new config")
        super().__setattr__(name, value)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check this level's values (nested configs check their own); raise ``ConfigError`` naming the field."""

    def _normalise(self, name: str, value: Any) -> None:
        """Replace a field's value during validation (e.g. one path -> a list of paths)."""
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------------------------------------------ building
    @classmethod
    def from_config(cls: type[C], source: Any = None, *, where: str = "", **overrides: Any) -> C:
        """The typed config from a Hydra ``DictConfig``, a (nested) mapping, or an instance (returned as is), with
        ``overrides`` (nested mappings) merged on top. ``where`` prefixes key names in errors (``data.curriculum``)."""
        if isinstance(source, cls) and not overrides:
            return source
        prefix = f"{where}." if where else ""
        layers = [OmegaConf.structured(cls)]
        if source is not None:
            layers.append(OmegaConf.structured(source) if isinstance(source, TypedConfig) else _as_omegaconf(source))
        if overrides:
            layers.append(OmegaConf.create(overrides))
        for layer in layers[1:]:
            _check_sections(cls, layer, prefix)
        try:
            return OmegaConf.to_object(OmegaConf.merge(*layers))
        except ConfigError as err:  # from validate(), which names keys from this config's root
            if not prefix:
                raise
            raise ConfigError(f"{prefix}{err}") from None
        except (ConfigKeyError, ConfigAttributeError) as err:
            raise ConfigError(_unknown_key_message(cls, prefix, err)) from None
        except MissingMandatoryValue as err:
            raise ConfigError(f"{prefix}{err.full_key} is required (no default); set it, e.g. {prefix}{err.full_key}=...") from None
        except ValidationError as err:
            raise ConfigError(f"{prefix}{err.full_key}: {str(err).splitlines()[0]}") from None

    def to_json(self) -> str:
        """Serialised form (what the data-parallel launchers hand their children); ``from_json`` reads it back."""
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        return cls.from_config(json.loads(text))


def one_of(key: str, value: Any, allowed: tuple) -> None:
    """Raise ``ConfigError`` unless ``value`` is in ``allowed``; the message names the key and the choices."""
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _as_omegaconf(source: Any) -> DictConfig:
    if isinstance(source, DictConfig):
        return source
    if isinstance(source, Mapping):
        return OmegaConf.create(dict(source))
    raise ConfigError(f"a config must be a mapping or a DictConfig, got {type(source).__name__}")


def _check_sections(cls: type, node: Any, prefix: str) -> None:
    """An unknown key, or a nested config given as a plain value (``model=x``), is an error naming the key.

    OmegaConf's merge rejects an unknown key only where the user's node is untyped: Hydra's ``+key=value`` adds one
    to a node typed by the schema, and merging that node keeps the key (``to_object`` even sets it as an attribute)."""
    names = {f.name for f in dataclasses.fields(cls)}
    for key in node:
        if key not in names:
            raise ConfigError(_unknown_message(cls, prefix, str(key)))
    for f in dataclasses.fields(cls):
        nested = _nested_type(cls, f)
        if nested is None or f.name not in node:
            continue
        value = node[f.name]
        if value is None or isinstance(value, TypedConfig):
            continue
        if not isinstance(value, Mapping | DictConfig):
            raise ConfigError(f"{prefix}{f.name} is a section ({', '.join(x.name for x in dataclasses.fields(nested))}); "
                              f"got {value!r}")
        _check_sections(nested, value, f"{prefix}{f.name}.")


def _unknown_key_message(cls: type, prefix: str, err: Exception) -> str:
    full_key = str(getattr(err, "full_key", "") or "")
    parent, _, name = full_key.rpartition(".")
    node = cls
    for part in parent.split(".") if parent else []:
        hints = {f.name: f for f in dataclasses.fields(node)}
        node = _nested_type(node, hints[part]) if part in hints else None
        if node is None:
            break
    if node is None:
        return f"unknown config key {prefix}{full_key}"
    return _unknown_message(node, f"{prefix}{parent}." if parent else prefix, name)


def _unknown_message(owner: type, path: str, name: str) -> str:
    """``unknown config key <path><name> (<where> has: <fields>); did you mean ...?``; ``path`` ends with a dot."""
    known = [f.name for f in dataclasses.fields(owner)]
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(path + c for c in close)}?" if close else ""
    where = path[:-1] or owner.__name__
    return f"unknown config key {path}{name} ({where} has: {', '.join(known)}){hint}"


def _nested_type(owner: type, f: dataclasses.Field) -> type | None:
    hint = _type_hints(owner).get(f.name)
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


@cache
def _type_hints(owner: type) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(owner)


def nested_config_type(owner: type, name: str) -> type | None:
    """The dataclass type of field ``name`` of ``owner`` when it is a nested config, else None."""
    f = {f.name: f for f in dataclasses.fields(owner)}[name]
    return _nested_type(owner, f)


@cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` from the string literal written right under each field (base classes included)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is TypedConfig:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for stmt, nxt in zip(body, body[1:]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs
