"""Darknet `.cfg` files: a list of `[section]`s of `key=value` options, each with its file and line."""

from __future__ import annotations

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


@dataclass
class Section:
    """One `[type]` block: its options as strings, where it starts, and typed getters with located errors."""

    kind: str
    path: str
    line: int
    options: dict[str, str] = field(default_factory=dict)

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

    def getint(self, key: str, default: int | None = None) -> int:
        raw = self.getstr(key, None if default is None else str(default))
        try:
            return int(raw)
        except ValueError:
            raise self.error(f"`{key}={raw}` is not an integer") from None

    def getfloat(self, key: str, default: float | None = None) -> float:
        raw = self.getstr(key, None if default is None else str(default))
        try:
            return float(raw)
        except ValueError:
            raise self.error(f"`{key}={raw}` is not a number") from None

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
        sections[-1].options.setdefault(key, value)  # darknet's option_find returns the first one
    if not sections or sections[0].kind != "net":
        first = f"starts with [{sections[0].kind}] at line {sections[0].line}" if sections else "has no sections"
        raise ConfigError(f"{path}: missing [net] section (the file {first}); a darknet cfg must begin with [net]")
    extra = [s for s in sections[1:] if s.kind == "net"]
    if extra:
        raise ConfigError(f"{extra[0].where} a second [net] section; a cfg has exactly one, at the top")
    return sections


def parse_cfg(path: str | Path) -> list[Section]:
    """Read and parse a `.cfg` file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"darknet cfg {str(path)!r} not found; pass the path of a .cfg file")
    return parse_cfg_text(path.read_text(encoding="utf-8", errors="replace"), str(path))
