"""The variants of one base model: its plain form, CSP fusions, partial ratios, or any create_model overrides."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cspnet.errors import ConfigError

PLAIN = "plain"
# the paper's ablation (CSPNet Section 4.2, PeleeNet): fusion first/last/both at gamma 0.5, gamma 0.25/0.5/0.75 (both)
DEFAULT_GRID = (
    "fusion=first",
    "fusion=last",
    "fusion=both,gamma=0.5",
    "gamma=0.25",
    "gamma=0.75",
)
ALIASES = {"gamma": "partial_ratio"}  # the paper's name for partial_ratio


@dataclass(frozen=True)
class GridVariant:
    """One model of the grid: a registered name plus create_model overrides, under a readable label."""

    label: str
    model: str
    overrides: tuple[tuple[str, object], ...] = ()

    @property
    def slug(self) -> str:
        """The label as a folder name."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.label.replace("=", "-").replace(",", "_"))

    def kwargs(self) -> dict:
        return dict(self.overrides)


def _value(text: str) -> object:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str) -> dict[str, object]:
    """'partial_ratio=0.25,fusion=last' -> {'partial_ratio': 0.25, 'fusion': 'last'} (gamma is partial_ratio)."""
    out: dict[str, object] = {}
    for item in (s.strip() for s in spec.split(",")):
        key, eq, val = item.partition("=")
        key = key.strip()
        if not eq or not key or not val.strip():
            raise ConfigError(
                f"bad grid entry {spec!r}; write KEY=VALUE[,KEY=VALUE...], e.g. 'partial_ratio=0.25,fusion=last'"
            )
        out[ALIASES.get(key, key)] = _value(val.strip())
    return out


def forms(base: str) -> tuple[tuple[str, dict], tuple[str, dict]]:
    """(plain model, its overrides) and (CSP model, its overrides) of a base: the registered twin where there is one."""
    from cspnet.models import model_info

    info = model_info(base)
    twin = model_info(info.twin) if info.twin else None
    if info.is_csp:
        plain = (twin.name, {}) if twin is not None and not twin.is_csp else (base, {"partial_ratio": 1.0})
        return plain, (base, {})
    csp = (twin.name, {}) if twin is not None and twin.is_csp else (base, {"partial_ratio": 0.5})
    return (base, {}), csp


def make_variant(base: str, spec: str) -> GridVariant:
    """A grid entry as a GridVariant. 'plain' is the base's plain form; entries with partial_ratio=1.0 apply to the
    plain form; other entries apply to the CSP form (the registered twin of a plain base); model=NAME picks a model."""
    (plain, plain_kw), (csp, csp_kw) = forms(base)
    if spec.strip() == PLAIN:
        return GridVariant(PLAIN, plain, tuple(sorted(plain_kw.items())))
    kw = parse_spec(spec)
    label = ",".join(f"{'gamma' if k == 'partial_ratio' else k}={v}" for k, v in kw.items())
    if "model" in kw:
        model, extra = str(kw.pop("model")), {}
    elif kw.get("partial_ratio") == 1.0:
        model, extra = plain, plain_kw
        if not plain_kw:  # a registered plain model: every stage is plain already
            kw.pop("partial_ratio")
    else:
        model, extra = csp, csp_kw
    overrides = {**extra, **kw}
    _check(model, overrides, spec)
    return GridVariant(label, model, tuple(sorted(overrides.items())))


def _check(model: str, overrides: dict, spec: str) -> None:
    """Build the config now, so a bad entry fails before any training (one clear line)."""
    from cspnet.models import build_cfg
    from cspnet.models.registry import model_info

    model_info(model)
    try:
        build_cfg(model, **dict(overrides))
    except ConfigError as e:
        raise ConfigError(f"grid entry {spec!r}: {e}") from None
    except TypeError as e:
        raise ConfigError(f"grid entry {spec!r}: {e}") from None


def build_grid(base: str, specs: list[str] | None = None) -> list[GridVariant]:
    """The plain base first, then the default grid (no specs, or 'default') and the named entries, without repeats."""
    specs = list(specs or ["default"])
    expanded: list[str] = []
    for s in specs:
        expanded += list(DEFAULT_GRID) if s.strip() == "default" else [s]
    out: list[GridVariant] = [make_variant(base, PLAIN)]
    for s in expanded:
        v = make_variant(base, s)
        same = next((o for o in out if (o.model, o.overrides) == (v.model, v.overrides)), None)
        if same is not None:
            continue  # the same architecture under another name (e.g. gamma=0.5 of a twin whose default is 0.5)
        if any(o.slug == v.slug for o in out):
            raise ConfigError(f"two grid entries share the name {v.label!r}; name them differently")
        out.append(v)
    return out
