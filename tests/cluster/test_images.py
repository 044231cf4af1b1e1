"""tests/cluster/images.py without building anything: names, stamps, the warm path, the archive
format, and the dox-asdlc stand-in server. The builds themselves run in the real-node stage."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.cluster import images
from tests.support.processes import free_port

REPO = Path(__file__).resolve().parents[2]


def test_all_images_are_the_names_manifests_and_the_kubelet_ask_for():
    assert images.ALL_IMAGES == (
        "registry.k8s.io/pause:3.10.1",
        f"docker.io/mcp/sidecar-injector:{images.VERSION}",
        "docker.io/mcp/redis:latest",
        "docker.io/mcp/elasticsearch:latest",
        "docker.io/library/redis:7.4",
        "docker.elastic.co/elasticsearch/elasticsearch:8.15.3",
        "docker.io/dox/asdlc-orchestrator:latest",
        "docker.io/dox/asdlc-workers:latest",
    )
    workloads = (REPO / "deploy/examples/dox-asdlc/workloads.yaml").read_text()
    for ref in ("redis:7.4", "docker.elastic.co/elasticsearch/elasticsearch:8.15.3", "dox/asdlc-orchestrator:latest",
                "dox/asdlc-workers:latest"):
        assert f"image: {ref}\n" in workloads
        assert images.normalize_ref(ref) in images.ALL_IMAGES


@pytest.mark.parametrize("ref, full", [
    ("redis:7.4", "docker.io/library/redis:7.4"),
    ("redis", "docker.io/library/redis:latest"),
    ("mcp/redis", "docker.io/mcp/redis:latest"),
    ("docker.io/mcp/redis:latest", "docker.io/mcp/redis:latest"),
    ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
    ("localhost:5000/x/y", "localhost:5000/x/y:latest"),
    ("localhost/x", "localhost/x:latest"),
    ("busybox@sha256:" + "a" * 64, "docker.io/library/busybox@sha256:" + "a" * 64),
])
def test_normalize_ref(ref, full):
    assert images.normalize_ref(ref) == full


def test_aliases_map_to_the_archive_that_carries_them():
    assert images.spec_for("registry.k8s.io/pause:3.10").key == "pause"
    assert images.spec_for("mcp/sidecar-injector:latest").key == "injector"
    assert images.spec_for("redis:7.4").key == "redis"
    with pytest.raises(KeyError, match="no image"):
        images.spec_for("nginx:1.27")


def test_every_containerfile_and_support_file_exists():
    for spec in images.SPECS.values():
        assert spec.containerfile.is_file(), spec.containerfile
        for path in spec.inputs():
            assert path.is_file(), path
        for dep in spec.deps:
            assert dep in images.SPECS
    assert (images.FILES / "es-entrypoint.sh").read_text().startswith("#!/bin/bash")  # dash drops a.b=c vars


def test_stamps_follow_their_inputs(monkeypatch):
    before = {key: images.stamp(key) for key in images.SPECS}
    assert before == {key: images.stamp(key) for key in images.SPECS}  # stable
    assert before["orchestrator"] != before["workers"]                  # targets count
    # The build stand-in carries the host's pip settings: it and the project images change, nothing else.
    monkeypatch.setenv("PIP_INDEX_URL", "https://pypi.example/simple")
    after = {key: images.stamp(key) for key in images.SPECS}
    changed = {key for key in images.SPECS if before[key] != after[key]}
    assert changed == {"python", "injector", "mcp-redis", "mcp-elasticsearch"}


def _fake_dir_push(tmp_path: Path) -> Path:
    """What `buildah push -D --format oci IMG dir:D` writes: manifest.json, config and layer blobs."""
    pushed = tmp_path / "pushed"
    pushed.mkdir()
    layer_path = tmp_path / "layer.tar"
    with tarfile.open(layer_path, "w") as t:
        (tmp_path / "app").write_bytes(b"x" * 1000)
        t.add(tmp_path / "app", arcname="app")
        link = tarfile.TarInfo("bin/app")
        link.type, link.linkname = tarfile.SYMTYPE, "/app"
        t.addfile(link)
    layer = layer_path.read_bytes()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"User": "1000:1000"},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    digests = {}
    for data in (layer, config):
        digests[data] = hashlib.sha256(data).hexdigest()
        (pushed / digests[data]).write_bytes(data)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": f"sha256:{digests[config]}", "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": f"sha256:{digests[layer]}", "size": len(layer)}]}
    (pushed / "manifest.json").write_text(json.dumps(manifest))
    return pushed


def test_oci_archive_names_every_tag_and_measures_its_layers(tmp_path):
    archive = tmp_path / "x.oci.tar"
    images._write_oci_archive(_fake_dir_push(tmp_path), ["registry.k8s.io/pause:3.10.1", "registry.k8s.io/pause:3.10"],
                              archive)
    with tarfile.open(archive) as t:
        names = set(t.getnames())
        index = json.load(t.extractfile("index.json"))
        assert json.load(t.extractfile("oci-layout")) == {"imageLayoutVersion": "1.0.0"}
        for entry in index["manifests"]:
            blob = t.extractfile(f"blobs/sha256/{entry['digest'].split(':')[1]}").read()
            assert hashlib.sha256(blob).hexdigest() == entry["digest"].split(":")[1] and len(blob) == entry["size"]
            assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == [
        "registry.k8s.io/pause:3.10.1", "registry.k8s.io/pause:3.10"]
    assert len([n for n in names if n.startswith("blobs/sha256/")]) == 3  # manifest, config, layer
    layers, content = images.archive_sizes(archive)
    assert layers == (tmp_path / "layer.tar").stat().st_size
    assert content == 1000 + len("/app")  # files, and symlinks by their target's length


def test_a_warm_call_runs_no_build(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "OUT", tmp_path)
    for key in ("pause", "redis"):
        current = images.stamp(key)
        images.archive_path(key).write_bytes(b"archive")
        images._write_record(key, {"stamp": current, "archive_stamp": current, "size": 5, "content_size": 4,
                                   "tags": list(images.SPECS[key].names)})

    def no_build(*args, **kwargs):
        raise AssertionError("a warm call must not build")

    monkeypatch.setattr(images, "_Builder", no_build)
    monkeypatch.setattr(images, "_check_tools", no_build)
    lines: list[str] = []
    t0 = time.monotonic()
    got = images.ensure_images(["registry.k8s.io/pause:3.10.1", "redis:7.4", "registry.k8s.io/pause:3.10"],
                               log=lines.append)
    assert time.monotonic() - t0 < 2
    assert [(a.name, a.built, a.size, a.content_size) for a in got] == [
        ("registry.k8s.io/pause:3.10.1", False, 5, 4), ("docker.io/library/redis:7.4", False, 5, 4)]
    assert got[0].tags == ("registry.k8s.io/pause:3.10.1", "registry.k8s.io/pause:3.10")
    assert all("up to date" in line for line in lines) and len(lines) == 2
    # A changed input makes the image stale: this call would build (and fails here, on purpose).
    monkeypatch.setattr(images, "_rootfs_stamp", lambda: "another mirror")
    with pytest.raises(AssertionError, match="must not build"):
        images.ensure_images(["redis:7.4"], log=lines.append)


def test_asdlc_stand_in_serves_metrics_and_health():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(images.FILES / "asdlc_app.py")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={"PORT": str(port), "ASDLC_SERVICE": "workers"})
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    assert r.status == 200 and r.read() == b"ok\n"
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            metrics = r.read().decode()
        assert 'asdlc_up{service="workers"} 1' in metrics
        assert 'asdlc_requests_total{service="workers",path="/healthz"} 1' in metrics
        assert "# TYPE asdlc_requests_total counter" in metrics
        proc.terminate()  # SIGTERM: exits (as PID 1 in a container it would otherwise be ignored)
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
