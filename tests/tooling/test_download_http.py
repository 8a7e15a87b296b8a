#!/usr/bin/env python3
"""data/download.py's real download path: the real curl against a local HTTP server (127.0.0.1
only, never the network) that answers as the Hugging Face Hub does. An LFS file's HEAD is a 302 to
a CDN with its SHA-256 in X-Linked-Etag; a small file's is a 200 with its git blob SHA-1 as ETag
(also the weak W/ form). Checked: downloads verified by those hashes and renamed from .part, a
second run downloads nothing, wrong bytes fail and remove the .part, `curl -C -` resumes a .part
with a Range request (and accepts one that is already whole), a failed GET says whether a .part
was kept, a URL with no known checksum keeps its .part unless --no-verify, a pinned hash wins over
the Hub's, and a missing curl is said plainly. Exit 77 (skipped) without curl. Run by ctest."""
import contextlib
import hashlib
import http.server
import importlib.util
import io
import os
import re
import shutil
import sys
import tempfile
import threading
import traceback
import urllib.parse

SOURCE = os.environ.get("GPT2CC_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(SOURCE, "data", "download.py")
REPO = "org/model"
failures = []


def expect(cond, what, output=""):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)
        print(output)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def git_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Hub:
    """What the server serves, and the requests it saw: (method, path, Range header or None)."""

    def __init__(self):
        self.files = {}  # path -> dict(body, served, kind, weak, fail, cut)
        self.log = []
        self.base = None

    def add(self, path, body, kind, served=None, weak=False, fail=(), cut=0):
        """kind: "lfs" (302 to /cdn/), "small" (200 with a git SHA-1 ETag), "plain" (not the Hub).
        served: the bytes sent, if not body's; fail: statuses for the first GETs of the bytes;
        cut: how many first GETs of the bytes stop half-way (a dropped connection)."""
        self.files[path] = dict(body=body, served=body if served is None else served, kind=kind, weak=weak,
                                fail=list(fail), cut=cut)
        return self.base + path

    def requests(self, method, path):
        return [r for r in self.log if r[0] == method and r[1] == path]


def make_handler(hub):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self.answer(head=True)

        def do_GET(self):
            self.answer(head=False)

        def answer(self, head):
            path = urllib.parse.urlsplit(self.path).path
            hub.log.append((self.command, path, self.headers.get("Range")))
            if path.startswith("/cdn/"):
                return self.content(hub.files.get(path[len("/cdn"):]), head)
            f = hub.files.get(path)
            if f is None:
                return self.status(404)
            if f["kind"] == "lfs":
                # The Hub: the resolve URL redirects to the CDN; X-Linked-Etag is the LFS SHA-256,
                # ETag the git SHA-1 of the small pointer file git keeps in its place.
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256(f['body'])}\n"
                self.send_response(302)
                self.send_header("Location", hub.base + "/cdn" + path)
                self.send_header("X-Linked-Etag", f'"{sha256(f["body"])}"')
                self.send_header("ETag", f'"{git_sha1(pointer.encode())}"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            return self.content(f, head)

        def status(self, code, headers=()):
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def content(self, f, head):
            if f is None:
                return self.status(404)
            if not head and f["fail"]:
                return self.status(f["fail"].pop(0))
            data, start = f["served"], 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if match:
                start = int(match.group(1))
                if start >= len(data):
                    return self.status(416, [("Content-Range", f"bytes */{len(data)}")])
            self.send_response(206 if match else 200)
            if match:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            if f["kind"] == "small":
                etag = git_sha1(f["body"])
                self.send_header("ETag", f'W/"{etag}"' if f["weak"] else f'"{etag}"')
            elif f["kind"] == "plain":
                # Another host's ETag, even one that is a git SHA-1: not the Hub's, no checksum.
                self.send_header("ETag", f'"{git_sha1(f["body"])}"')
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if head:
                return
            chunk = data[start:]
            if f["cut"]:
                f["cut"] -= 1
                self.wfile.write(chunk[:len(chunk) // 2])  # then the connection closes, short
                return
            self.wfile.write(chunk)

    return Handler


def main():
    curl = shutil.which("curl")
    if curl is None:
        print("skip: curl is not installed (apt-get install curl): the download path runs the real one")
        return 77
    spec = importlib.util.spec_from_file_location("download", SCRIPT)
    download = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(download)

    hub = Hub()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(hub))
    hub.base = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # hf_head reads the module's HF_HUB when called: a path under the local server is the "Hub",
    # and the server's other paths are another host (whose ETags are no checksums).
    download.HF_HUB = hub.base + "/hub"
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                "GPT2CC_DATA_MIRROR"):
        os.environ.pop(var, None)
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1"

    tmp = tempfile.mkdtemp(prefix="gpt2cc-download-http-")
    out = os.path.join(tmp, "out")

    def dataset(name, files):
        """files: (output name, url, pinned sha256 or None); every URL is the local server's."""
        for _, url, _ in files:
            assert urllib.parse.urlsplit(url).hostname == "127.0.0.1", url
        download.DATASETS[name] = [(fname, [url], pinned, []) for fname, url, pinned in files]
        return os.path.join(out, name)

    def run(args):
        """download.main in this process; its prints and curl's (a child writing to fds 1 and 2)."""
        hub.log.clear()
        text = io.StringIO()
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        with tempfile.TemporaryFile() as fds:
            os.dup2(fds.fileno(), 1)
            os.dup2(fds.fileno(), 2)
            try:
                with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                    code = download.main(args + ["--out", out])
            except SystemExit as e:
                code = e.code
            except Exception:
                code = "exception"
                text.write(traceback.format_exc())
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
            fds.seek(0)
            curl_text = fds.read().decode(errors="replace")
        return code, text.getvalue() + "\n[curl]\n" + curl_text + "\n[requests] " + repr(hub.log)

    def read(path):
        """The file's bytes, or None where there is no such file (a case failing, not the test)."""
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            return f.read()

    body = bytes((i * 7 + i // 251) % 256 for i in range(65536))  # an LFS file's bytes
    small = b'{"n_layer": 2, "n_embd": 64}\n'
    try:
        # 1. An LFS file: verified by the Hub's X-Linked-Etag (not its ETag, the pointer's).
        url = hub.add(f"/hub/{REPO}/resolve/main/model.safetensors", body, "lfs")
        d = dataset("t-lfs", [("model.safetensors", url, None)])
        dest = os.path.join(d, "model.safetensors")
        code, text = run(["t-lfs"])
        expect(code == 0 and f"{dest}: done, sha256 ok" in text, "an LFS file downloads and verifies", text)
        expect(os.path.isfile(dest) and read(dest) == body and not os.path.exists(dest + ".part"),
               "it lands under --out, whole, with no .part left", text)
        expect(len(hub.requests("HEAD", f"/hub/{REPO}/resolve/main/model.safetensors")) == 1 and
               len(hub.requests("GET", "/cdn/hub/" + REPO + "/resolve/main/model.safetensors")) == 1,
               "one HEAD of the Hub's URL (for its hash), one GET of the bytes after the redirect", text)
        code, text = run(["t-lfs"])
        expect(code == 0 and "present" in text and not hub.log, "a second run finds it present and asks nothing",
               text)

        # 2. Small (non-LFS) files: verified by their git blob SHA-1, the ETag, strong or weak.
        url_a = hub.add(f"/hub/{REPO}/resolve/main/config.json", small, "small")
        url_b = hub.add(f"/hub/{REPO}/resolve/main/vocab.json", small + b"{}\n", "small", weak=True)
        d = dataset("t-small", [("config.json", url_a, None), ("vocab.json", url_b, None)])
        code, text = run(["t-small"])
        expect(code == 0 and text.count(": done, git blob SHA-1 ok") == 2 and
               read(os.path.join(d, "config.json")) == small and
               read(os.path.join(d, "vocab.json")) == small + b"{}\n", "small files verify by ETag and W/ ETag", text)
        url = hub.add(f"/hub/{REPO}/resolve/main/merges.txt", b"#version: 0.2\n", "small", served=b"#version: 0.1\n",
                      weak=True)
        d = dataset("t-small-bad", [("merges.txt", url, None)])
        code, text = run(["t-small-bad"])
        expect(code == 1 and f"expected {git_sha1(b'#version: 0.2' + bytes([10]))}" in text and
               not os.path.exists(os.path.join(d, "merges.txt")),
               "a small file whose bytes are not its ETag's blob: mismatch against the SHA-1", text)

        # 3. Wrong bytes behind a good LFS hash: mismatch, exit 1, the .part removed, no file.
        url = hub.add(f"/hub/{REPO}/resolve/main/bad.bin", body, "lfs", served=body[:-1] + b"\0")
        d = dataset("t-bad", [("bad.bin", url, None)])
        code, text = run(["t-bad"])
        dest = os.path.join(d, "bad.bin")
        expect(code == 1 and "checksum mismatch" in text and f"expected {sha256(body)}" in text and
               "partial file removed" in text, "wrong bytes: checksum mismatch, exit 1", text)
        expect(not os.path.exists(dest) and not os.path.exists(dest + ".part"), "no file and no .part left", text)

        # 4. Resume: a .part holding the first N bytes is continued with a Range request from N.
        url = hub.add(f"/hub/{REPO}/resolve/main/resume.bin", body, "lfs")
        d = dataset("t-resume", [("resume.bin", url, None)])
        dest = os.path.join(d, "resume.bin")
        os.makedirs(d, exist_ok=True)
        with open(dest + ".part", "wb") as f:
            f.write(body[:10000])
        code, text = run(["t-resume"])
        ranges = [r[2] for r in hub.requests("GET", f"/cdn/hub/{REPO}/resolve/main/resume.bin")]
        expect(ranges == ["bytes=10000-"], "a .part of 10000 bytes: curl asks for bytes=10000-", text)
        expect(code == 0 and read(dest) == body and not os.path.exists(dest + ".part"),
               "the resumed file is whole and verified", text)
        # A .part already whole (a run stopped before its rename): curl's 416, the hash decides.
        url = hub.add(f"/hub/{REPO}/resolve/main/whole.bin", body, "lfs")
        d = dataset("t-whole", [("whole.bin", url, None)])
        dest = os.path.join(d, "whole.bin")
        os.makedirs(d, exist_ok=True)
        with open(dest + ".part", "wb") as f:
            f.write(body)
        code, text = run(["t-whole"])
        ranges = [r[2] for r in hub.requests("GET", f"/cdn/hub/{REPO}/resolve/main/whole.bin")]
        expect(code == 0 and ranges == [f"bytes={len(body)}-"] and read(dest) == body and
               not os.path.exists(dest + ".part"), "a whole .part: the server's 416 ends curl, it verifies", text)
        for leftover in (dest, dest + ".part"):
            if os.path.exists(leftover):
                os.remove(leftover)
        with open(dest + ".part", "wb") as f:
            f.write(body + b"more")
        code, text = run(["t-whole"])
        expect(code == 1 and "checksum mismatch" in text and not os.path.exists(dest + ".part") and
               not os.path.exists(dest), "a .part longer than the file: 416 too, then a mismatch removes it", text)
        # A connection dropped half-way: the .part is kept, and the next run resumes it.
        url = hub.add(f"/hub/{REPO}/resolve/main/cut.bin", body, "lfs", cut=1)
        d = dataset("t-cut", [("cut.bin", url, None)])
        dest = os.path.join(d, "cut.bin")
        code, text = run(["t-cut"])
        expect(code == 1 and f"run again to resume from {dest}.part" in text and
               read(dest + ".part") == body[:len(body) // 2], "a dropped connection keeps the .part", text)
        code, text = run(["t-cut"])
        ranges = [r[2] for r in hub.requests("GET", f"/cdn/hub/{REPO}/resolve/main/cut.bin")]
        expect(code == 0 and ranges == [f"bytes={len(body) // 2}-"] and read(dest) == body,
               "run again: it resumes from the .part and verifies", text)
        # A transient 500 is retried by curl (--retry: one second's wait).
        url = hub.add(f"/hub/{REPO}/resolve/main/flaky.bin", body, "lfs", fail=[500])
        d = dataset("t-flaky", [("flaky.bin", url, None)])
        code, text = run(["t-flaky"])
        expect(code == 0 and read(os.path.join(d, "flaky.bin")) == body and
               len(hub.requests("GET", f"/cdn/hub/{REPO}/resolve/main/flaky.bin")) == 2,
               "a transient 500 is retried, and the file verifies", text)

        # 5. A failing GET (404): exit 1; the message says whether a .part was kept.
        url = hub.add(f"/hub/{REPO}/resolve/main/gone.bin", body, "lfs", fail=[404, 404])
        d = dataset("t-404", [("gone.bin", url, None)])
        dest = os.path.join(d, "gone.bin")
        code, text = run(["t-404"])
        expect(code == 1 and f"download of {url} failed (nothing was kept)" in text and
               not os.path.exists(dest + ".part") and not os.path.exists(dest), "a 404: exit 1, nothing kept", text)
        with open(dest + ".part", "wb") as f:
            f.write(body[:100])
        code, text = run(["t-404"])
        expect(code == 1 and f"failed (run again to resume from {dest}.part)" in text and
               read(dest + ".part") == body[:100], "a 404 with a .part: it is kept, and said so", text)

        # 6. No checksum known (not the Hub, nothing pinned): exit 1, the .part kept; --no-verify
        # then accepts it (curl -C - finds it whole: the server's 416, which curl takes as done).
        url = hub.add("/plain/data.txt", body, "plain")
        d = dataset("t-plain", [("data.txt", url, None)])
        dest = os.path.join(d, "data.txt")
        code, text = run(["t-plain"])
        expect(code == 1 and f"no checksum known for {url}; kept {dest}.part" in text and
               read(dest + ".part") == body and not os.path.exists(dest), "no checksum known: exit 1, .part kept",
               text)
        expect(not [r for r in hub.log if r[0] == "HEAD"], "another host is not asked for the Hub's headers", text)
        code, text = run(["t-plain", "--no-verify"])
        expect(code == 0 and read(dest) == body and not os.path.exists(dest + ".part") and
               [r[2] for r in hub.requests("GET", "/plain/data.txt")] == [f"bytes={len(body)}-"],
               "--no-verify accepts the kept .part (curl finds it whole)", text)
        url = hub.add("/plain/other.txt", small, "plain")
        d = dataset("t-plain2", [("other.txt", url, None)])
        code, text = run(["t-plain2", "--no-verify"])
        expect(code == 0 and read(os.path.join(d, "other.txt")) == small and "done, not verified (--no-verify)" in text,
               "--no-verify: a fresh download, said to be unverified", text)

        # 7. A pinned SHA-256 wins over the Hub's header, even where the bytes match the header.
        url = hub.add(f"/hub/{REPO}/resolve/main/pinned.bin", body, "lfs")
        wrong = sha256(b"another file")
        d = dataset("t-pinned", [("pinned.bin", url, wrong)])
        dest = os.path.join(d, "pinned.bin")
        code, text = run(["t-pinned"])
        expect(code == 1 and f"checksum mismatch for {url}: expected {wrong}" in text and
               not os.path.exists(dest) and not os.path.exists(dest + ".part"),
               "a pinned hash the bytes do not match: mismatch, though the Hub's header agrees", text)
        dataset("t-pinned", [("pinned.bin", url, sha256(body))])
        code, text = run(["t-pinned"])
        expect(code == 0 and read(dest) == body, "the right pinned hash: done", text)
        code, text = run(["t-pinned"])
        expect(code == 0 and "present, sha256 ok" in text and not hub.log, "then present, checked by the pin", text)

        # 8. No curl in PATH: said plainly, exit 1, nothing asked of the server.
        url = hub.add(f"/hub/{REPO}/resolve/main/nocurl.bin", body, "lfs")
        d = dataset("t-nocurl", [("nocurl.bin", url, None)])
        empty = os.path.join(tmp, "empty-bin")
        os.makedirs(empty)
        path = os.environ["PATH"]
        os.environ["PATH"] = empty
        try:
            code, text = run(["t-nocurl"])
        finally:
            os.environ["PATH"] = path
        expect(code == 1 and "needs curl" in text and "Errno" not in text and not hub.log and
               not os.listdir(d), "no curl: exit 1 saying that curl is needed, nothing downloaded", text)
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
