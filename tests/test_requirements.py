"""requirements.txt and environment.yml pin the same stack, and the stack is the one COURSE.md measured."""
import re

from course_utils.paths import REPO_ROOT


def pins(text: str) -> dict[str, str]:
    found = re.findall(r"^\s*(?:-\s*)?([A-Za-z0-9_.\-]+)==([^\s#]+)", text, flags=re.MULTILINE)
    return {name.lower().replace("_", "-"): version for name, version in found}


def test_requirements_and_environment_agree():
    requirements = pins((REPO_ROOT / "requirements.txt").read_text())
    environment = pins((REPO_ROOT / "environment.yml").read_text())
    assert requirements == environment
    assert "python=3.11" in (REPO_ROOT / "environment.yml").read_text()


def test_every_requirement_is_pinned():
    lines = [l.strip() for l in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
    unpinned = [l for l in lines if l and not l.startswith("#") and "==" not in l]
    assert unpinned == []


def test_the_known_good_stack_is_pinned():
    requirements = pins((REPO_ROOT / "requirements.txt").read_text())
    assert requirements["torch"] == "2.13.0"
    assert requirements["transformers"] == "5.17.0"
    assert requirements["trl"] == "1.14.0"  # 1.15.0's SFTTrainer crashes on a CPU-only torch
    assert requirements["peft"] == "0.21.2"
