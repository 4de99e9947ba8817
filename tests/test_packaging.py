"""What users and other tools rely on outside the code: compose file, CLI, module sizes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 400  # one job per module (see ../shared/STYLE.md)


def test_compose_file_runs_the_gateway_beside_redis() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    gateway = compose["services"]["gateway"]
    assert gateway["build"] == "." and (REPO / "Dockerfile").is_file()
    assert "4000:4000" in gateway["ports"]
    assert compose["services"]["redis"]["image"].startswith("redis:")
    dockerfile = (REPO / "Dockerfile").read_text()
    assert '"vilmo", "serve"' in dockerfile and "constraints.txt" in dockerfile


def test_no_module_is_too_long() -> None:
    long = {str(p.relative_to(REPO)): n for p in [*REPO.glob("proxy/**/*.py"),
                                                   *REPO.glob("localllm/**/*.py"),
                                                   *REPO.glob("vilmo/**/*.py")]
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_dockerfile_copies_every_package_an_entry_point_imports() -> None:
    """The image installs what it copies: an entry point whose package is not copied (as
    `local-llm` once was) fails when the command runs."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    entry_points = [*project["scripts"].values(),
                    *project["entry-points"]["vilmo.commands"].values()]
    needed = {target.split(":")[0].split(".")[0] for target in entry_points}
    copied = {line.split()[1] for line in (REPO / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ")}
    assert needed <= copied
    for source in copied:
        assert (REPO / source).exists(), source  # a COPY of a missing path fails the build
