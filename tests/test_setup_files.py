"""environment.yml is the one dependency list; the set-up reads it through tools/env_requirements.py."""
import runpy
from pathlib import Path

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
