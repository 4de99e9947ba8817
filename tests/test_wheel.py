"""The package as a user installs it: a wheel built from the tracked files, installed in a fresh
virtual environment, serving from there (with two workers) outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from stub_upstream import StubUpstream, free_port

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # the served gateway loads the real models


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build from a copy of the tracked files, so the checkout gets no build/ folder and
    nothing untracked can slip into the wheel."""
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(source)], check=True)
    (built,) = out.glob("vilmo-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel; its dependencies come from this interpreter's
    site-packages through a plain path entry (not processed as a site dir, so the editable
    install of the checkout is not seen)."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([str(python), "-c", purelib], capture_output=True, text=True,
                          check=True)
    Path(site.stdout.strip(), "_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", str(wheel)], check=True)
    return root


def outside_checkout(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, **extra}


def test_wheel_ships_policies_models_and_every_registered_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("vilmo/policies/default.yaml", "vilmo/policies/strict-care-fairness.yaml",
                   "vilmo/models/value_classifier/weights.safetensors",
                   "vilmo/data/principles.yaml", "proxy/app.py", "proxy/dashboard.html",
                   "localllm/cli.py"):
        assert needed in names


def test_installed_package_is_imported_from_the_venv(venv: Path, tmp_path: Path) -> None:
    code = "import vilmo, proxy, localllm.cli; print(vilmo.__file__); print(proxy.__file__)"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path,
                         env=outside_checkout(), capture_output=True, text=True, check=True)
    for line in out.stdout.split():
        assert Path(line).is_relative_to(venv), line


@pytest.fixture(scope="module")
def served_from_wheel(venv: Path, stub: StubUpstream,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    port, log = free_port(), tmp_path_factory.mktemp("log") / "serve.log"
    env = outside_checkout(VILMO_UPSTREAM_BASE=f"{stub.url}/v1")
    env.pop("OPENAI_API_KEY", None)
    with log.open("wb") as sink:
        process = subprocess.Popen([str(venv / "bin" / "vilmo"), "serve", "--port", str(port),
                                    "--workers", "2"], env=env, cwd=log.parent,
                                   stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while log.read_text().count("Application startup complete") < 2:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        yield f"{base}/v1", log
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_wheel_serves_shipped_policies_with_two_workers(
        served_from_wheel: tuple[str, Path], stub: StubUpstream, venv: Path) -> None:
    base, log = served_from_wheel
    health = httpx.get(base.removesuffix("/v1") + "/healthz").json()
    assert {"default", "strict-care-fairness"} <= set(health["policies"])
    client = openai.OpenAI(base_url=base, api_key="anything")
    for _ in range(4):
        raw = client.chat.completions.with_raw_response.create(
            model="any-model", messages=[{"role": "user", "content": "Hello there"}])
        assert raw.headers["x-vilmo-policy"] == "default"
        assert raw.parse().choices[0].message.content == stub.reply
    text = log.read_text()
    assert text.count("Started server process") == 2, text
    assert str(venv) in text  # the policies are the ones inside the installed package
