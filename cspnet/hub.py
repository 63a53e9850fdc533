"""Published darknet weights: names -> the authors' release URLs, sha256 and matching cfg; a download cache.

`download("yolov4-tiny")` fetches into `$CSPNET_HOME/weights` (default ~/.cache/cspnet) with a progress bar,
resumes a cut download from its `.part` file (HTTP Range), refuses and deletes a file whose sha256 differs from the
expected one, and says in one line when the network cannot be reached. urllib only.

Checksums: the authors publish none. A `sha256` of None in the table means unverified: the file is used as
downloaded, and `download` prints its sha256 so that it can be pinned (pass `sha256=`). The table was written
without network access, so no entry carries a sha256 yet; fill one in only from a file checked against its source.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cspnet.errors import InputError

_RELEASES = "https://github.com/AlexeyAB/darknet/releases/download"
_CFGS = "https://raw.githubusercontent.com/AlexeyAB/darknet/master/cfg"


@dataclass(frozen=True)
class Weights:
    """One published file. layers: how many cfg layers a partial file holds (None: the whole network)."""

    name: str
    url: str | None
    sha256: str | None  # None: unverified (see the module docstring)
    cfg: str  # the darknet cfg the file belongs to
    model: str  # the native model that loads it (cspnet.interop.darknet.load_darknet_weights)
    classes: int | None = None  # None: a partial file without the class-dependent layers
    layers: int | None = None
    size_mb: float | None = None  # as the darknet README gives it
    note: str = ""

    @property
    def verified(self) -> str:
        return "sha256" if self.sha256 else "unverified"

    @property
    def cfg_url(self) -> str:
        return f"{_CFGS}/{self.cfg}"


# AlexeyAB/darknet README: "Pre-trained models" and "How to train (to detect your custom objects)"
# fmt: off
WEIGHTS = {
    w.name: w
    for w in (
        Weights(
            "yolov4-tiny.weights", f"{_RELEASES}/darknet_yolo_v4_pre/yolov4-tiny.weights", None,
            "yolov4-tiny.cfg", "yolov4-tiny", classes=80, size_mb=23.1, note="COCO, 40.2% mAP@0.5",
        ),
        Weights(
            "yolov4.weights", f"{_RELEASES}/darknet_yolo_v3_optimal/yolov4.weights", None,
            "yolov4.cfg", "yolov4", classes=80, size_mb=245, note="COCO, 43.5% AP (65.7% AP50) at 608",
        ),
        Weights(
            "yolov4-csp.weights", f"{_RELEASES}/darknet_yolo_v4_pre/yolov4-csp.weights", None,
            "yolov4-csp.cfg", "yolov4-csp", classes=80, size_mb=202, note="COCO, 47.5% AP at 640",
        ),
        Weights(
            "yolov4-tiny.conv.29", f"{_RELEASES}/darknet_yolo_v4_pre/yolov4-tiny.conv.29", None,
            "yolov4-tiny.cfg", "yolov4-tiny", layers=29, size_mb=19, note="first 29 layers, to train yolov4-tiny",
        ),
        Weights(
            "yolov4.conv.137", f"{_RELEASES}/darknet_yolo_v3_optimal/yolov4.conv.137", None,
            "yolov4.cfg", "yolov4", layers=137, size_mb=162, note="first 137 layers, to train yolov4",
        ),
        Weights(
            "yolov4-csp.conv.142", f"{_RELEASES}/darknet_yolo_v4_pre/yolov4-csp.conv.142", None,
            "yolov4-csp.cfg", "yolov4-csp", layers=142, note="first 142 layers, to train yolov4-csp",
        ),
        Weights(
            "csdarknet53-omega.conv.105", None, None, "csdarknet53-omega.cfg", "yolov4", layers=105,
            note="ImageNet CSPDarknet53 (mish) backbone for yolov4; no release asset: the authors' Google Drive "
            "copy of csdarknet53-omega_final.weights is gone (AlexeyAB/darknet#8698). Make it with `darknet "
            "partial cfg/csdarknet53-omega.cfg csdarknet53-omega_final.weights csdarknet53-omega.conv.105 105`",
        ),
    )
}
# fmt: on
ALIASES = {"yolov4-tiny": "yolov4-tiny.weights", "yolov4": "yolov4.weights", "yolov4-csp": "yolov4-csp.weights"}


def home() -> Path:
    """The cache folder: $CSPNET_HOME, default ~/.cache/cspnet."""
    return Path(os.environ.get("CSPNET_HOME") or "~/.cache/cspnet").expanduser()


def lookup(name: str) -> Weights | None:
    """The table entry for a file name or alias, None if there is none."""
    return WEIGHTS.get(ALIASES.get(name, name))


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve(spec: str | Path, sha256: str | None = None, progress: bool = True) -> Path:
    """A local file as it is; a table name (`yolov4-tiny`, `yolov4-tiny.conv.29`) or a URL from the cache,
    downloaded on first use."""
    if Path(spec).is_file():
        return Path(spec)
    if lookup(str(spec)) is None and not str(spec).startswith(("http://", "https://")):
        known = ", ".join([*ALIASES, *WEIGHTS])
        raise InputError(f"weights {str(spec)!r}: no such file, and not a published name ({known}) or a URL")
    return download(str(spec), sha256, progress)


def download(name_or_url: str, sha256: str | None = None, progress: bool = True, timeout: float = 30.0) -> Path:
    """Fetch a table name or URL into the cache (once) and return its path; see the module docstring."""
    entry = lookup(name_or_url)
    if entry is not None:
        if entry.url is None:
            raise InputError(f"{entry.name} has no download: {entry.note}; then pass --weights PATH to it")
        url, filename, sha256 = entry.url, entry.name, sha256 or entry.sha256
    elif name_or_url.startswith(("http://", "https://")):
        url = name_or_url
        filename = urllib.parse.unquote(Path(urllib.parse.urlparse(url).path).name)
        if not filename:
            raise InputError(f"{url} names no file; pass the URL of the file itself")
    else:
        raise InputError(f"unknown weights {name_or_url!r}; published names: {', '.join([*ALIASES, *WEIGHTS])}")
    dest = home() / "weights" / filename
    if dest.is_file():
        if sha256 is None or sha256_of(dest) == sha256.lower():
            return dest
        print(f"{dest} does not match its sha256; downloading it again", flush=True)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    _fetch(url, part, filename, progress, timeout)
    digest = sha256_of(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink()
        raise InputError(
            f"{filename}: sha256 {digest} differs from the expected {sha256.lower()}; the download was deleted "
            "(damaged in transit, or the release changed): run again, or check the source"
        )
    if sha256 is None:
        print(f"{filename}: no published sha256, unverified; its sha256 is {digest}", flush=True)
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: Path, filename: str, progress: bool, timeout: float, retry: bool = True) -> None:
    """Download `url` into `part`, continuing from the bytes already there (HTTP Range)."""
    from tqdm import tqdm

    start = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "cspnet", **({"Range": f"bytes={start}-"} if start else {})}
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start and retry:  # the .part is no prefix of the file: start over
            part.unlink()
            return _fetch(url, part, filename, progress, timeout, retry=False)
        raise InputError(f"cannot download {filename} from {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError):
        host = urllib.parse.urlparse(url).hostname
        raise InputError(
            f"cannot reach {host} to download {filename}: check the network or pass --weights PATH to a local copy"
        ) from None
    with resp:
        if start and resp.status != 206:  # the server ignored the Range: the whole file comes again
            start = 0
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        with (
            open(part, "ab" if start else "wb") as f,
            tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=filename, disable=not progress) as bar,
        ):
            while True:
                try:
                    chunk = resp.read(1 << 20)
                except (OSError, http.client.HTTPException):
                    chunk = None
                if not chunk:
                    break
                f.write(chunk)
                bar.update(len(chunk))
    got = part.stat().st_size
    if chunk is None or (total is not None and got < total):
        raise InputError(
            f"the download of {filename} stopped after {got} of {total or '?'} bytes; run again to resume it "
            f"from {part}"
        )
