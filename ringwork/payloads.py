"""Typed payloads: a task whose jobs carry a dataclass or a pydantic model instead of bare JSON.

The job row keeps JSON (the store, the CLI, other languages and old workers read it as such); the
type sits at the two doors. At enqueue, :meth:`PayloadType.dump` checks the payload -- an
instance of the type, or a mapping that fits it -- and turns it into JSON values, so a payload
that does not fit is a one-line :class:`~ringwork.errors.PayloadError` before anything is
written. In the worker, :meth:`PayloadType.load` rebuilds the typed value the handler receives;
a stored payload that no longer fits (written by hand, or by an older version of the type) ends
the job ``dead`` at once, since another attempt would read the same row.

With pydantic installed, both a pydantic model and a dataclass are checked by pydantic (its
``TypeAdapter``, with pydantic's usual coercions; a plain dataclass refuses unknown fields, a
pydantic class follows its own ``extra`` setting). Without it, a dataclass is checked by the
small structural checker below: field names, required fields, and the JSON shape of fields
annotated with builtin types, nested dataclasses, ``list``/``dict``/``tuple``, ``Optional``
and ``Literal`` -- anything else is passed through as stored.

Threads: any; a :class:`PayloadType` is immutable once built at registration.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from ringwork.errors import ConfigurationError, PayloadError, StoredPayloadError

#: Nested dataclasses deeper than this are refused rather than walked (a payload is data).
MAX_DEPTH = 64


def pydantic_available() -> bool:
    return importlib.util.find_spec("pydantic") is not None


def is_payload_class(cls: object) -> bool:
    """A dataclass type or a pydantic model class (without importing pydantic to find out)."""
    if not isinstance(cls, type):
        return False
    if dataclasses.is_dataclass(cls):
        return True
    return any(base.__module__.startswith("pydantic") and base.__name__ == "BaseModel"
               for base in cls.__mro__)


class PayloadType:
    """How one task's payload type is checked, dumped to JSON values and loaded back."""

    def __init__(self, task: str, cls: type, *, use_pydantic: bool | None = None) -> None:
        if not is_payload_class(cls):
            raise ConfigurationError(
                f"task {task!r}: payload_type must be a dataclass or a pydantic model, "
                f"not {cls!r}"
            )
        self.task = task
        self.cls = cls
        self.name = cls.__qualname__
        if use_pydantic is None:
            use_pydantic = pydantic_available()
        self._adapter: Any = None
        if use_pydantic:
            from pydantic import TypeAdapter
            from pydantic.dataclasses import is_pydantic_dataclass

            # A plain dataclass refuses unknown fields (a misspelt field is a bug, not data to
            # drop), as the checker does; a pydantic class keeps the config its author chose.
            self._strict_names = (dataclasses.is_dataclass(cls)
                                  and not is_pydantic_dataclass(cls))
            try:
                self._adapter = TypeAdapter(cls)
            except Exception as exc:  # pydantic cannot build a schema for it: say so now
                raise ConfigurationError(
                    f"task {task!r}: pydantic cannot check {self.name}: {_one_line(exc)}"
                ) from None
        elif not dataclasses.is_dataclass(cls):
            raise ConfigurationError(
                f"task {task!r}: {self.name} is a pydantic model, but pydantic is not installed"
            )
        else:
            try:
                self._hints = _hints(cls)
            except Exception as exc:
                raise ConfigurationError(
                    f"task {task!r}: cannot read the field types of {self.name}: "
                    f"{_one_line(exc)}"
                ) from None

    def dump(self, value: Any) -> Any:
        """The JSON values to store for ``value`` (an instance, or a mapping that fits)."""
        if self._adapter is not None:
            try:
                if self._strict_names:
                    _known_names(self.cls, value, "", 0)
                checked = self._adapter.validate_python(value)
                return self._adapter.dump_python(checked, mode="json")
            except Exception as exc:
                raise PayloadError(self._misfit(exc)) from None
        if not isinstance(value, (self.cls, Mapping)):
            raise PayloadError(self._misfit(
                TypeError(f"(payload): expected {self.name} or a mapping, "
                          f"got {type(value).__name__}")))
        data = _to_json(value, 0)
        try:
            _check_dataclass(self.cls, self._hints, data, "", 0)
        except (TypeError, ValueError) as exc:
            raise PayloadError(self._misfit(exc)) from None
        return data

    def load(self, data: Any) -> Any:
        """The typed value a handler receives for the stored JSON ``data``."""
        if self._adapter is not None:
            try:
                if self._strict_names:
                    _known_names(self.cls, data, "", 0)
                return self._adapter.validate_python(data)
            except Exception as exc:
                raise StoredPayloadError(self._misfit(exc)) from None
        try:
            _check_dataclass(self.cls, self._hints, data, "", 0)
            return _build(self.cls, self._hints, data)
        except (TypeError, ValueError) as exc:
            raise StoredPayloadError(self._misfit(exc)) from None

    def _misfit(self, exc: BaseException) -> str:
        return f"payload of task {self.task!r} does not fit {self.name}: {_one_line(exc)}"


def _one_line(exc: BaseException) -> str:
    """One line for any error; pydantic's multi-line report becomes its first error and a count."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            found = errors()
        except Exception:
            found = None
        if found:
            first = found[0]
            where = ".".join(str(part) for part in first.get("loc", ())) or "(payload)"
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            return f"{where}: {first.get('msg', '')}{more}"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def payload_type_of(task: str, handler: Callable[..., Any]) -> type | None:
    """The payload class a handler's first parameter names (``job: Job[Resize]``), if any."""
    from ringwork.job import Job

    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return None
    if not params or params[0].annotation is inspect.Parameter.empty:
        return None
    first = params[0]
    try:
        hint = typing.get_type_hints(handler).get(first.name)
    except Exception:
        if isinstance(first.annotation, str) and "Job[" in first.annotation.replace(" ", ""):
            raise ConfigurationError(
                f"task {task!r}: cannot resolve the annotation {first.annotation!r} of its "
                "handler; define the payload class at module level or pass payload_type="
            ) from None
        return None
    if typing.get_origin(hint) is not Job:
        return None
    args = typing.get_args(hint)
    if len(args) == 1 and is_payload_class(args[0]):
        return typing.cast(type, args[0])
    return None


def _known_names(cls: type, data: Any, where: str, depth: int) -> None:
    """Under pydantic, a plain dataclass's unknown fields, at any depth, are refused as the
    checker refuses them (pydantic would drop them without a word)."""
    if depth > MAX_DEPTH or not isinstance(data, Mapping):
        return  # pydantic reports the wrong shape
    hints = _hints(cls)
    for name, value in data.items():
        if name not in hints:
            raise ValueError(f"{_at(where, str(name))}: unknown field")
        _known_in(hints[name], value, _at(where, str(name)), depth + 1)


def _known_in(hint: Any, value: Any, where: str, depth: int) -> None:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        _known_names(hint, value, where, depth)
        return
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        if isinstance(value, Mapping):  # only when exactly one dataclass could be meant
            options = [a for a in args if isinstance(a, type) and dataclasses.is_dataclass(a)]
            if len(options) == 1:
                _known_names(options[0], value, where, depth)
    elif origin in (list, set, frozenset, tuple) and args and isinstance(value, (list, tuple)):
        if origin is not tuple or args[-1] is Ellipsis:
            for i, item in enumerate(value):
                _known_in(args[0], item, f"{where}[{i}]", depth + 1)
    elif origin is dict and len(args) == 2 and isinstance(value, Mapping):
        for key, item in value.items():
            _known_in(args[1], item, f"{where}.{key}", depth + 1)


# -- the structural checker used without pydantic ------------------------------------------------


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A dataclass's init fields and their resolved types (resolved once per class)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def _check_dataclass(cls: type, hints: dict[str, Any], data: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"{where or '(payload)'}: nested deeper than {MAX_DEPTH} levels")
    if not isinstance(data, Mapping):
        raise TypeError(f"{where or '(payload)'}: expected an object, got "
                        f"{type(data).__name__}")
    for name in data:
        if name not in hints:
            raise ValueError(f"{_at(where, str(name))}: unknown field")
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        required = (field.default is dataclasses.MISSING
                    and field.default_factory is dataclasses.MISSING)
        if field.name not in data:
            if required:
                raise ValueError(f"{_at(where, field.name)}: field required")
            continue
        _check(hints[field.name], data[field.name], _at(where, field.name), depth + 1)


def _at(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


_JSON_TYPES: dict[Any, tuple[type, ...]] = {
    str: (str,), int: (int,), float: (int, float), bool: (bool,), type(None): (type(None),),
}


def _check(hint: Any, value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if hint is Any or hint is object:
        return
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        for option in typing.get_args(hint):
            try:
                _check(option, value, where, depth)
                return
            except (TypeError, ValueError):
                continue
        raise TypeError(f"{where}: {value!r:.60} fits none of {hint}")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ValueError(f"{where}: expected one of {typing.get_args(hint)}")
        return
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return
        _check_dataclass(hint, _hints(hint), value, where, depth)
        return
    if hint in _JSON_TYPES:
        allowed = _JSON_TYPES[hint]
        if not isinstance(value, allowed) or (hint in (int, float) and isinstance(value, bool)):
            raise TypeError(f"{where}: expected {hint.__name__}, got {type(value).__name__}")
        return
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple, set, frozenset):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: expected a list, got {type(value).__name__}")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[A, B]: fixed length
            if len(value) != len(args):
                raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
            items = list(args)
        else:
            items = [args[0] if args else Any] * len(value)
        for i, (item, element) in enumerate(zip(items, value, strict=True)):
            _check(item, element, f"{where}[{i}]", depth + 1)
        return
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}: expected an object, got {type(value).__name__}")
        args = typing.get_args(hint)
        for k, element in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be strings, got {type(k).__name__}")
            _check(args[1] if len(args) == 2 else Any, element, f"{where}.{k}", depth + 1)
        return
    # An annotation the checker does not know (a datetime, a user class): stored as given.


def _build(cls: type, hints: dict[str, Any], data: Mapping[str, Any]) -> Any:
    """An instance of ``cls`` from checked data, nested dataclasses built too."""
    return cls(**{name: _built(hints[name], value) for name, value in data.items()})


def _built(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return _build(hint, _hints(hint), value)
    if origin is typing.Union or origin is types.UnionType:
        for option in typing.get_args(hint):
            if (isinstance(option, type) and dataclasses.is_dataclass(option)
                    and isinstance(value, Mapping)):
                try:
                    _check_dataclass(option, _hints(option), value, "", 0)
                except (TypeError, ValueError):
                    continue
                return _build(option, _hints(option), value)
        return value
    if origin is list and isinstance(value, list):
        args = typing.get_args(hint)
        return [_built(args[0], v) for v in value] if args else value
    if origin in (tuple, set, frozenset) and isinstance(value, (list, tuple)):
        return origin(value)
    if origin is dict and isinstance(value, Mapping):
        args = typing.get_args(hint)
        return {k: _built(args[1], v) for k, v in value.items()} if len(args) == 2 else value
    return value


def _to_json(value: Any, depth: int) -> Any:
    """Dataclass instances as objects, tuples as lists: the values json.dumps stores."""
    if depth > MAX_DEPTH:
        raise PayloadError(f"payload nested deeper than {MAX_DEPTH} levels")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name), depth + 1)
                for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _to_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_to_json(v, depth + 1) for v in value]
    return value
