"""Print the pip requirements listed in environment.yml, one per line.

environment.yml is the single source of the dependency list: conda users read it directly, and
`make setup` pipes this script's output into `pip install -r`, so the two cannot drift.
Only the standard library is used, because this runs before any dependency is installed.
"""
import sys
from pathlib import Path


def pip_requirements(text: str) -> list[str]:
    """Return the entries of the `- pip:` list of a conda environment file."""
    requirements, pip_indent = [], None
    for line in text.splitlines():
        stripped = line.split(" #")[0].rstrip()
        if not stripped.strip() or stripped.lstrip().startswith("#"):
            continue
        indent = len(stripped) - len(stripped.lstrip())
        if stripped.strip() == "- pip:":
            pip_indent = indent
        elif pip_indent is not None:
            if indent <= pip_indent:
                pip_indent = None
            elif stripped.lstrip().startswith("- "):
                requirements.append(stripped.lstrip()[2:].strip())
    if not requirements:
        raise SystemExit("environment.yml has no `- pip:` list; nothing to install")
    return requirements


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "environment.yml")
    print("\n".join(pip_requirements(path.read_text())))
