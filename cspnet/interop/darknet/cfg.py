"""Darknet `.cfg` files: a list of `[section]`s of `key=value` options, each with its file and line."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from cspnet.errors import ConfigError

# darknet accepts short names for some sections (parser.c string_to_layer_type)
_ALIASES = {
    "network": "net",
    "conv": "convolutional",
    "conn": "connected",
    "max": "maxpool",
    "avg": "avgpool",
    "soft": "softmax",
}


# Keys each section type reads, from AlexeyAB/darknet src/parser.c (parse_net_options, parse_convolutional, ...).
# A key outside its section's list is a typo that darknet would ignore with only a warning ("Unused field").
_COMMON = "clip onlyforward dont_update burnin_update stopbackward train_only_bn dontload dontloadscales learning_rate"
KEYS: dict[str, frozenset[str]] = {
    kind: frozenset((keys + " " + ("" if kind == "net" else _COMMON)).split())
    for kind, keys in {
        "net": "max_batches batch learning_rate learning_rate_min sgdr_cycle sgdr_mult momentum decay subdivisions "
        "time_steps track augment_speed sequential_subdivisions try_fix_nan weights_reject_freq equidistant_point "
        "badlabels_rejection_percentage num_sigmas_reject_badlabels ema_alpha use_cuda_graph loss_scale "
        "dynamic_minibatch optimized_memory workspace_size_limit_MB adam B1 B2 eps height width channels inputs "
        "max_crop min_crop flip blur gaussian_noise mixup cutmix mosaic letter_box mosaic_bound contrastive "
        "contrastive_jit_flip contrastive_color unsupervised label_smooth_eps resize_step attention adversarial_lr "
        "max_chart_loss angle aspect saturation exposure hue power policy burn_in step scale steps scales "
        "seq_scales gamma show_receptive_field",
        "convolutional": "filters groups size stride stride_x stride_y dilation antialiasing pad padding activation "
        "assisted_excitation share_index batch_normalize cbn binary xnor bin_output sway rotate stretch stretch_sway "
        "flipped dot angle grad_centr reverse coordconv stream wait_stream",
        "connected": "output activation batch_normalize",
        "route": "layers groups group_id stream wait_stream",
        "shortcut": "from activation weights_type weights_normalization",
        "maxpool": "stride stride_x stride_y size padding maxpool_depth out_channels antialiasing maxpool_zero_nonmax",
        "avgpool": "",
        "upsample": "stride scale reverse",
        "softmax": "groups temperature tree spatial noloss",
        "dropout": "probability dropblock dropblock_size_rel dropblock_size_abs",
        "cost": "type scale ratio noobj thresh",
        "yolo": "classes num mask max show_details max_delta counters_per_class label_smooth_eps scale_x_y "
        "objectness_smooth new_coords iou_normalizer obj_normalizer cls_normalizer delta_normalizer iou_loss "
        "iou_thresh_kind beta_nms nms_kind jitter resize focal_loss ignore_thresh truth_thresh iou_thresh random "
        "track_history_size sim_thresh dets_for_track dets_for_show track_ciou_norm embedding_layer map anchors",
    }.items()
}


@dataclass
class Section:
    """One `[type]` block: its options as strings, where it starts, and typed getters with located errors."""

    kind: str
    path: str
    line: int
    options: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)  # key -> line number

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}: [{self.kind}]"

    def error(self, problem: str) -> ConfigError:
        return ConfigError(f"{self.where} {problem}")

    def has(self, key: str) -> bool:
        return key in self.options

    def getstr(self, key: str, default: str | None = None) -> str:
        if key in self.options:
            return self.options[key]
        if default is None:
            raise self.error(f"needs `{key}=`; add it to the section")
        return default

    def key_error(self, key: str, problem: str) -> ConfigError:
        """An error located at the key's own line."""
        line = self.lines.get(key)
        return ConfigError(f"{self.path}:{line}: [{self.kind}] {problem}" if line else f"{self.where} {problem}")

    def _check_range(self, key: str, v: float, lo: float | None, hi: float | None, hi_open: bool = False) -> None:
        if (lo is not None and v < lo) or (hi is not None and (v >= hi if hi_open else v > hi)):
            rng = f">= {lo:g}" if hi is None else f"in [{lo:g}, {hi:g}{')' if hi_open else ']'}"
            raise self.key_error(key, f"`{key}={self.options.get(key, v)}` must be {rng}")

    def getint(self, key: str, default: int | None = None, lo: int | None = None, hi: int | None = None) -> int:
        raw = self.getstr(key, None if default is None else str(default))
        try:
            v = int(raw)
        except ValueError:
            raise self.key_error(key, f"`{key}={raw}` is not an integer") from None
        self._check_range(key, v, lo, hi)
        return v

    def getfloat(
        self, key: str, default: float | None = None, lo: float | None = None, hi: float | None = None, hi_open=False
    ) -> float:
        raw = self.getstr(key, None if default is None else str(default))
        try:
            v = float(raw)
        except ValueError:
            raise self.key_error(key, f"`{key}={raw}` is not a number") from None
        if v != v or v in (float("inf"), float("-inf")):
            raise self.key_error(key, f"`{key}={raw}` is not a finite number")
        self._check_range(key, v, lo, hi, hi_open)
        return v

    def getints(self, key: str, default: list[int] | None = None) -> list[int]:
        if key not in self.options and default is not None:
            return list(default)
        raw = self.getstr(key)
        try:
            return [int(v) for v in raw.split(",") if v != ""]
        except ValueError:
            raise self.error(f"`{key}={raw}` is not a comma-separated list of integers") from None

    def getfloats(self, key: str) -> list[float]:
        raw = self.getstr(key)
        try:
            return [float(v) for v in raw.split(",") if v != ""]
        except ValueError:
            raise self.error(f"`{key}={raw}` is not a comma-separated list of numbers") from None


def parse_cfg_text(text: str, path: str = "<cfg>") -> list[Section]:
    """Parse cfg text as darknet's read_cfg does (whitespace ignored, `#`/`;` comments); `[net]` must come first."""
    sections: list[Section] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = "".join(raw.split("#", 1)[0].split())  # darknet strips every blank, not only the ends
        if not line or line[0] == ";":
            continue
        if line[0] == "[":
            if not line.endswith("]") or len(line) < 3:
                raise ConfigError(f"{path}:{lineno}: malformed section header {raw.strip()!r}; write it as [type]")
            kind = line[1:-1].lower()
            sections.append(Section(_ALIASES.get(kind, kind), path, lineno))
            continue
        if not sections:
            raise ConfigError(
                f"{path}:{lineno}: option {raw.strip()!r} before any [section]; start the file with [net]"
            )
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise ConfigError(f"{sections[-1].where} line {lineno}: expected key=value, got {raw.strip()!r}")
        if key not in sections[-1].options:  # darknet's option_find returns the first one
            sections[-1].options[key] = value
            sections[-1].lines[key] = lineno
    if not sections or sections[0].kind != "net":
        first = f"starts with [{sections[0].kind}] at line {sections[0].line}" if sections else "has no sections"
        raise ConfigError(f"{path}: missing [net] section (the file {first}); a darknet cfg must begin with [net]")
    extra = [s for s in sections[1:] if s.kind == "net"]
    if extra:
        raise ConfigError(f"{extra[0].where} a second [net] section; a cfg has exactly one, at the top")
    for sec in sections:
        check_keys(sec)
    return sections


def check_keys(sec: Section) -> None:
    """Refuse a key that the section's type does not read (a typo such as `filtres=8`), with a did-you-mean."""
    allowed = KEYS.get(sec.kind)
    if allowed is None:  # a layer type this reader does not build: the model reports it
        return
    for key in sec.options:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
            hint = f"did you mean `{close[0]}`?" if close else f"[{sec.kind}] reads: {', '.join(sorted(allowed))}"
            raise sec.key_error(key, f"unknown key `{key}`; {hint}")


def parse_cfg(path: str | Path) -> list[Section]:
    """Read and parse a `.cfg` file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"darknet cfg {str(path)!r} not found; pass the path of a .cfg file")
    return parse_cfg_text(path.read_text(encoding="utf-8", errors="replace"), str(path))
