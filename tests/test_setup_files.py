"""environment.yml is the one dependency list; the set-up reads it through tools/env_requirements.py."""
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pip_requirements = runpy.run_path(str(ROOT / "tools" / "env_requirements.py"))["pip_requirements"]


def test_environment_yml_lists_torch_pair_and_the_project():
    requirements = pip_requirements((ROOT / "environment.yml").read_text())
    assert "torch==2.14.1" in requirements and "torchvision==0.29.1" in requirements
    assert "-e ." in requirements
    assert all(not r.startswith("- ") for r in requirements)


def test_parser_stops_at_the_end_of_the_pip_list():
    text = "dependencies:\n  - python=3.11\n  - pip:\n      - numpy  # a comment\n      - tqdm\nother:\n  - x\n"
    assert pip_requirements(text) == ["numpy", "tqdm"]


def test_ci_calls_the_readme_test_command():
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make test" in ci


@pytest.mark.slow
def test_jupyter_lab_and_its_widget_extension_run_from_the_venv():
    requirements = pip_requirements((ROOT / "environment.yml").read_text())
    assert any(r.startswith("jupyterlab") for r in requirements) and any(r.startswith("ipywidgets") for r in requirements)
    jupyter = Path(sys.executable).parent / "jupyter"
    version = subprocess.run([str(jupyter), "lab", "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and int(version.stdout.split(".")[0]) >= 4
    extensions = subprocess.run([str(jupyter), "labextension", "list"], capture_output=True, text=True, timeout=60)
    assert "@jupyter-widgets/jupyterlab-manager" in extensions.stdout + extensions.stderr
    assert ".venv/bin/jupyter lab" in (ROOT / "README.md").read_text()


def test_ci_installs_chromium_for_the_report_test():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "apt-get install" in ci and "chromium-driver" in ci
