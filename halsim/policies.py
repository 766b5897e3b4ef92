"""Upload policies: frozen pydantic models with a ``kind`` discriminator.

A policy is written once — in Python, TOML, JSON, or a CLI spec such as
``streaming:chunk=16MiB,slots=4,readers=2`` — and ``policy.plan(request, caps)``
turns it into a :class:`~halsim.plan.Plan` with no I/O and no device.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from halsim.caps import DeviceCaps
from halsim.errors import PolicyError
from halsim.units import format_size, parse_size

MiB = 1 << 20


class _PolicyBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def plan(self, request, caps: DeviceCaps | Sequence[DeviceCaps]):
        """The steps of ``request`` under this policy for devices with ``caps``."""
        from halsim.planning import make_plan

        return make_plan(self, request, caps)

    def spec(self) -> str:
        """The canonical CLI spec; ``parse_policy(p.spec()) == p``."""
        fields = []
        for name, value in self.model_dump().items():
            if name == "kind" or value is None:
                continue
            if name in _NESTED_FIELDS:
                fields.append(f"{name}={getattr(self, name).spec_nested()}")
            elif name in _SIZE_FIELDS:
                fields.append(f"{name}={_exact_size(value)}")
            else:
                fields.append(f"{name}={value}")
        return self.kind + (":" + ",".join(fields) if fields else "")

    def spec_nested(self) -> str:
        spec = self.spec()
        return spec.replace(":", "(", 1) + ")" if ":" in spec else spec

    def __str__(self) -> str:
        return self.spec()


# Fields holding a policy, written nested: fallback=streaming(chunk=4MiB,slots=2).
_NESTED_FIELDS = {"fallback", "imported", "streamed"}
_SIZE_FIELDS = {"chunk", "piece", "budget"}


def _size(value: Any) -> int:
    return parse_size(value)


def _exact_size(value: int) -> str:
    """``64MiB`` where that is exact; plain bytes otherwise (``format_size`` rounds)."""
    text = format_size(value)
    return text if "." not in text else str(value)


class StagedPolicy(_PolicyBase):
    """Before IREE #14665: stage all the data in host memory, then copy it all."""

    kind: Literal["staged"] = "staged"
    chunk: int = Field(64 * MiB, ge=1, description="read request size")
    readers: int = Field(1, ge=1, le=256)

    _chunk = field_validator("chunk", mode="before")(lambda cls, v: _size(v))


class StreamingPolicy(_PolicyBase):
    """A bounded staging ring: ``slots`` buffers of ``chunk`` bytes.

    ``readers`` host reads and ``queues`` copy queues may run at once; with
    ``slots=1, readers=1`` every read waits for the previous copy (IREE's
    default inline loop). The defaults overlap reads with copies.
    """

    kind: Literal["streaming"] = "streaming"
    chunk: int = Field(16 * MiB, ge=1)
    slots: int = Field(8, ge=1, le=4096)
    readers: int = Field(4, ge=1, le=256)
    queues: int = Field(1, ge=1, le=64)

    _chunk = field_validator("chunk", mode="before")(lambda cls, v: _size(v))

    @property
    def staging_bound(self) -> int:
        return self.chunk * self.slots


Fallback = Annotated[Union[StreamingPolicy, StagedPolicy], Field(discriminator="kind")]


class ImportPolicy(_PolicyBase):
    """Zero-copy: import the file's host memory into the device.

    Unified-memory devices use it in place; dedicated devices copy from it with
    no staging, importing ``piece`` bytes at a time so importing the next piece
    overlaps copying this one. ``importers`` pieces are imported at once (page
    pinning is CPU work that can run on several threads); at most
    ``2 * importers`` pieces are held. When the device or the source cannot
    import, the ``fallback`` policy plans instead (and the plan says why).

    ``release="at_end"`` holds every piece until the device's last copy is
    done, then releases them all. It holds the whole share imported at once
    (pages already in memory, locked), but no release runs while copies are in
    flight: CUDA's unregistration waits for every copy of the context, so
    releasing as you go stalls the copies behind it.
    """

    kind: Literal["import"] = "import"
    piece: int = Field(256 * MiB, ge=1)
    queues: int = Field(1, ge=1, le=64)
    importers: int = Field(1, ge=1, le=64)
    release: Literal["rolling", "at_end"] = "rolling"
    fallback: Fallback = StreamingPolicy()

    _piece = field_validator("piece", mode="before")(lambda cls, v: _size(v))


class DirectPolicy(_PolicyBase):
    """Storage straight into device memory (GPUDirect-style), with a fallback."""

    kind: Literal["direct"] = "direct"
    chunk: int = Field(16 * MiB, ge=1)
    readers: int = Field(4, ge=1, le=256)
    fallback: Fallback = StreamingPolicy()

    _chunk = field_validator("chunk", mode="before")(lambda cls, v: _size(v))


class HybridPolicy(_PolicyBase):
    """Import one share of the bytes and stream the rest, at the same time.

    Import is bound by pinning pages, streaming by the readers' copies: on a
    dedicated GPU they use different resources, so together they can beat
    either alone. ``share`` is the fraction of tensor bytes imported (the
    first ones in file order). When the device or source cannot import, the
    whole request streams (and the plan says why).
    """

    kind: Literal["hybrid"] = "hybrid"
    share: float = Field(0.5, gt=0.0, lt=1.0)
    imported: ImportPolicy = ImportPolicy(piece=64 * MiB)
    streamed: StreamingPolicy = StreamingPolicy(chunk=16 * MiB, slots=16, readers=8, queues=1)


class AutoPolicy(_PolicyBase):
    """Chooses a concrete policy for the request and device (see :mod:`halsim.choose`)."""

    kind: Literal["auto"] = "auto"
    budget: int = Field(256 * MiB, ge=1, description="most staging bytes the choice may use")
    objective: Literal["time"] = "time"
    # Named here, not found at plan time, so plan() stays a function of its inputs.
    platform: str | None = Field(None, description="choose by simulating this platform (name or .toml)")

    _budget = field_validator("budget", mode="before")(lambda cls, v: _size(v))


Policy = Annotated[
    Union[StagedPolicy, StreamingPolicy, ImportPolicy, DirectPolicy, HybridPolicy, AutoPolicy],
    Field(discriminator="kind"),
]
_POLICY = TypeAdapter(Policy)
KINDS = ("staged", "streaming", "import", "direct", "hybrid", "auto")

# IREE's streaming after #14665: one 64 MiB slot, one reader — fully serial.
IREE_STREAMING = StreamingPolicy(chunk=64 * MiB, slots=1, readers=1, queues=1)


def policy_from_dict(data: dict[str, Any], source: str = "policy") -> Policy:
    try:
        return _POLICY.validate_python(data)
    except ValidationError as err:
        raise PolicyError(f"{source}: {_first_error(err)}") from None


def _first_error(err: ValidationError) -> str:
    problems = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"] if not str(p).endswith("Policy"))
        problems.append(f"{where}: {e['msg']}" if where else e["msg"])
    return "; ".join(problems)


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise PolicyError(f"unbalanced ')' in policy spec {text!r}")
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise PolicyError(f"unbalanced '(' in policy spec {text!r}")
    parts.append("".join(current))
    return parts


def _spec_to_dict(spec: str) -> dict[str, Any]:
    spec = spec.strip()
    if "(" in spec.split(":", 1)[0]:
        # nested form: streaming(chunk=4MiB,slots=2)
        kind, _, rest = spec.partition("(")
        if not rest.endswith(")"):
            raise PolicyError(f"bad nested policy spec {spec!r}")
        spec = f"{kind}:{rest[:-1]}" if rest[:-1] else kind
    kind, _, args = spec.partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise PolicyError(f"unknown policy kind {kind!r} in {spec!r}; choose one of {', '.join(KINDS)}")
    data: dict[str, Any] = {"kind": kind}
    if args.strip():
        for item in _split_top(args, ","):
            key, eq, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not eq or not key or not value:
                raise PolicyError(f"expected key=value in policy spec {spec!r}, got {item!r}")
            if key in data:
                raise PolicyError(f"{key!r} given twice in policy spec {spec!r}")
            data[key] = _spec_to_dict(value) if key in _NESTED_FIELDS else value
    return data


def parse_policy(spec: "str | Policy") -> Policy:
    """``"streaming:chunk=16MiB,slots=4"`` -> StreamingPolicy(...). Policies pass through."""
    if isinstance(spec, _PolicyBase):
        return spec
    return policy_from_dict(_spec_to_dict(str(spec)), source=f"policy spec {spec!r}")


def load_policy(path: str | Path) -> Policy:
    """A policy from a ``.toml`` or ``.json`` file (the same fields as the spec)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise PolicyError(f"{path}: cannot read policy file: {err.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise PolicyError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {err}") from None
    if isinstance(data, dict) and "policy" in data and isinstance(data["policy"], dict):
        data = data["policy"]
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: a policy file must hold a table of fields")
    return policy_from_dict(data, source=str(path))


def policy_to_toml(policy: Policy) -> str:
    """TOML for ``policy``; ``load_policy`` reads it back. Nested policies become
    tables: ``[fallback]``, ``[imported.fallback]``."""
    lines: list[str] = []

    def table(data: dict, prefix: str) -> None:
        nested = {k: v for k, v in data.items() if isinstance(v, dict)}
        if prefix:
            lines.append(f"\n[{prefix}]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in data.items() if not isinstance(v, dict))
        for key, value in nested.items():
            table(value, f"{prefix}.{key}" if prefix else key)

    table(policy.model_dump(exclude_none=True), "")
    return "\n".join(lines) + "\n"


def resolve_policy(spec: "str | Policy | None") -> Policy:
    return AutoPolicy() if spec is None else parse_policy(spec)
