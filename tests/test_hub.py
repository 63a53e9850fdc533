"""The weights table and download cache, against a local HTTP server started by the test (CI has no network)."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading

import pytest

from cspnet import hub
from cspnet.errors import InputError


class Files(http.server.BaseHTTPRequestHandler):
    """Serves `files` (path -> bytes) with HTTP Range; `cut` (path -> n) closes the connection after n bytes."""

    files: dict[str, bytes] = {}
    cut: dict[str, int] = {}
    log: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        data = self.files.get(self.path)
        self.log.append((self.path, self.headers.get("Range")))
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        n = self.cut.pop(self.path, None)
        self.wfile.write(body if n is None else body[:n])
        if n is not None:
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """(base URL, handler class) of a server in a thread; the cache goes to tmp_path/home."""
    monkeypatch.setenv("CSPNET_HOME", str(tmp_path / "home"))
    handler = type("H", (Files,), {"files": {}, "cut": {}, "log": []})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    srv.shutdown()
    srv.server_close()


DATA = bytes(range(256)) * 4096  # 1 MiB


def test_full_download_into_the_cache_then_reused(server, tmp_path, capsys):
    url, h = server
    h.files["/w/yolov4-tiny.weights"] = DATA
    sha = hashlib.sha256(DATA).hexdigest()
    path = hub.download(f"{url}/w/yolov4-tiny.weights", sha256=sha)
    assert "yolov4-tiny.weights: 100%" in capsys.readouterr().err  # tqdm's progress bar
    assert path == tmp_path / "home" / "weights" / "yolov4-tiny.weights" and path.read_bytes() == DATA
    assert not path.with_name("yolov4-tiny.weights.part").exists()
    assert hub.download(f"{url}/w/yolov4-tiny.weights", sha256=sha, progress=False) == path
    assert len(h.log) == 1  # the second call is served by the cache
    # no checksum: kept, and its sha256 printed so that it can be pinned
    h.files["/w/other.weights"] = DATA[:1000]
    hub.download(f"{url}/w/other.weights", progress=False)
    assert f"unverified; its sha256 is {hashlib.sha256(DATA[:1000]).hexdigest()}" in capsys.readouterr().out


def test_resume_from_a_partial_download(server, tmp_path):
    url, h = server
    h.files["/yolov4.conv.137"] = DATA
    h.cut["/yolov4.conv.137"] = 300_000  # the connection drops after 300 kB
    with pytest.raises(InputError, match=r"stopped after 300000 of 1048576 bytes; run again to resume"):
        hub.download(f"{url}/yolov4.conv.137", progress=False)
    part = tmp_path / "home" / "weights" / "yolov4.conv.137.part"
    assert part.stat().st_size == 300_000
    path = hub.download(f"{url}/yolov4.conv.137", sha256=hashlib.sha256(DATA).hexdigest(), progress=False)
    assert path.read_bytes() == DATA and not part.exists()
    assert h.log == [("/yolov4.conv.137", None), ("/yolov4.conv.137", "bytes=300000-")]  # only the rest again


def test_checksum_mismatch_is_refused_and_deleted(server, tmp_path):
    url, h = server
    h.files["/bad.weights"] = DATA
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(InputError, match=rf"sha256 {hashlib.sha256(DATA).hexdigest()} differs from .*{wrong}.*deleted"):
        hub.download(f"{url}/bad.weights", sha256=wrong, progress=False)
    assert not any((tmp_path / "home" / "weights").iterdir())


def test_offline_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("CSPNET_HOME", str(tmp_path))
    with socket.socket() as s:  # a port that was free and is closed now: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/yolov4-tiny.weights"
    with pytest.raises(InputError) as e:
        hub.download(url, progress=False)
    assert str(e.value) == (
        "cannot reach 127.0.0.1 to download yolov4-tiny.weights: check the network or pass --weights PATH to a local copy"
    )
    # a table name goes to its release URL; the same line names github.com
    monkeypatch.setattr(hub, "WEIGHTS", {**hub.WEIGHTS})
    entry = hub.WEIGHTS["yolov4-tiny.weights"]
    hub.WEIGHTS["yolov4-tiny.weights"] = type(entry)(**{**entry.__dict__, "url": url})
    with pytest.raises(InputError, match="^cannot reach 127.0.0.1 to download yolov4-tiny.weights: check the"):
        hub.download("yolov4-tiny", progress=False)


def test_http_errors_and_unknown_names(server):
    url, _ = server
    with pytest.raises(InputError, match="cannot download nope.weights from .*: HTTP 404"):
        hub.download(f"{url}/nope.weights", progress=False)
    with pytest.raises(InputError, match="unknown weights 'yolov9'; published names: yolov4-tiny, "):
        hub.download("yolov9")
    with pytest.raises(InputError, match="no such file, and not a published name"):
        hub.resolve("missing/yolov4.weights")
    with pytest.raises(InputError, match=r"csdarknet53-omega.conv.105 has no download: .*darknet partial"):
        hub.download("csdarknet53-omega.conv.105")


def test_table(tmp_path, monkeypatch):
    """Names -> the authors' GitHub release URLs and cfgs; every checksum is marked, none invented."""
    for name in ("yolov4-tiny.weights", "yolov4.weights", "yolov4-tiny.conv.29", "yolov4.conv.137"):
        w = hub.lookup(name)
        assert w.url.startswith("https://github.com/AlexeyAB/darknet/releases/download/") and w.url.endswith(name)
    assert hub.lookup("yolov4-csp") is hub.WEIGHTS["yolov4-csp.weights"]
    assert hub.lookup("yolov4-tiny.conv.29").layers == 29 and hub.lookup("yolov4.weights").classes == 80
    assert hub.lookup("yolov4-tiny").cfg_url.endswith("/cfg/yolov4-tiny.cfg")
    for w in hub.WEIGHTS.values():
        assert (w.verified == "sha256") == (w.sha256 is not None and len(w.sha256) == 64)
    monkeypatch.delenv("CSPNET_HOME", raising=False)
    assert str(hub.home()).endswith(".cache/cspnet")
    local = tmp_path / "x.weights"
    local.write_bytes(b"1")
    assert hub.resolve(str(local)) == local
