"""Load cost-model profiles from ``conf/`` into the frozen dataclasses of :mod:`objectives.costs`.

Each YAML is checked field by field against its dataclass (type hints and ``__post_init__`` range checks),
so an unknown key (a typo), a value of the wrong type, a missing field or an out-of-range number fails here
with one line naming the file and the key — before anything trains. (OmegaConf's structured merge cannot
fill nested *frozen* dataclasses, which the cost models take, hence this small builder.)
"""

from __future__ import annotations

import dataclasses
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Union, get_args, get_origin, get_type_hints  # noqa: UP035

from omegaconf import OmegaConf

from objectives.costs import CodecProfile, EdgeProfile, ImageCodecProfile, ProcessorProfile, RadioProfile

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the key or file."""


@dataclass(frozen=True)
class _Kind:
    schema: type
    folder: str
    key: str


KINDS: dict[str, _Kind] = {
    "radio": _Kind(RadioProfile, "radio", "radio"),
    "node": _Kind(ProcessorProfile, "platform/node", "platform.node"),
    "edge": _Kind(EdgeProfile, "platform/edge", "platform.edge"),
    "codec": _Kind(CodecProfile, "codec", "codec"),
    "image_codec": _Kind(ImageCodecProfile, "image_codec", "platform.node.image_encoders"),
}


def available(kind: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """Names of the profiles of ``kind`` shipped in ``conf_dir``."""
    return sorted(p.stem for p in (conf_dir / KINDS[kind].folder).glob("*.yaml"))


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", str(t).replace("typing.", ""))


def _at_key(key: str, msg: str) -> str:
    """A schema's range error at config key ``key``: a message that names its own section (``train.lr=...``)
    gets that section replaced by the key (``train.finetune.lr=...``); any other is prefixed (``key: ...``)."""
    m = re.match(r"([a-z_]+)\.[a-z_0-9]+=", msg)
    if m:
        return re.sub(rf"\b{m.group(1)}\.(?=[a-z_0-9]+=)", f"{key}.", msg)
    return f"{key}: {msg}"


def _build(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against type ``tp`` (dataclass, list, Optional, scalar) and build it."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_build(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is Union or origin is types.UnionType:
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _build(args[0], value, key)
    if origin in (list, List):  # noqa: UP006
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = get_args(tp)
        return [_build(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        hints = get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}: unknown key; {tp.__name__} has {names}")
        missing = [f.name for f in dataclasses.fields(tp) if f.name not in value
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"{key}.{missing[0]}: missing value (required by {tp.__name__})")
        kwargs = {n: _build(hints[n], v, f"{key}.{n}") for n, v in value.items()}
        try:
            return tp(**kwargs)
        except ConfigError:
            raise
        except (ValueError, TypeError) as e:
            raise ConfigError(_at_key(key, _one_line(e))) from None
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def profile_from_dict(kind: str, values: dict[str, Any], origin: str) -> Any:
    """Validate ``values`` against the schema of ``kind`` and build the dataclass."""
    k = KINDS[kind]
    try:
        return _build(k.schema, values, k.key)
    except ConfigError as e:
        raise ConfigError(f"{origin}: {e}") from None


def load_profile(kind: str, name: str, conf_dir: Path = CONF_DIR) -> Any:
    """Load ``conf/<folder>/<name>.yaml`` as the dataclass of ``kind`` (radio, node, edge, codec)."""
    if kind not in KINDS:
        raise ConfigError(f"profile kind={kind!r} not in {sorted(KINDS)}")
    k = KINDS[kind]
    path = conf_dir / k.folder / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"{k.key}={name!r} not in {available(kind, conf_dir)}")
    try:
        values = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as e:  # noqa: BLE001 - any YAML error becomes one line naming the file
        raise ConfigError(f"{path}: not valid YAML: {_one_line(e)}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of {k.schema.__name__} fields")
    return profile_from_dict(kind, values, str(path))
