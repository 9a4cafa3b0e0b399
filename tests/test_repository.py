"""What the README and the code point at is in the repository: the packages .ci/run
installs are the README's list, and the notes the code cites are files here."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_apt_list_is_what_ci_installs():
    ci = (REPO / ".ci" / "run").read_text()
    packages = re.search(r"apt-get install -y -qq --no-install-recommends \\\n(.*?)>/dev/null",
                         ci, re.S).group(1).replace("\\", " ").split()
    readme = " ".join((REPO / "README.md").read_text().split())
    listed = re.search(r"`apt-get install ([^`]*)`", readme).group(1).split()
    assert "libc6-dev-arm64-cross" in packages
    assert sorted(listed) == sorted(packages)


def test_cited_notes_are_in_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    citing = [f for f in files if f.endswith((".py", ".toml", ".edge", ".md"))
              and not f.startswith("docs/") and f != "tests/test_repository.py"
              and "TVM-NOTES" in (REPO / f).read_text(errors="replace")]
    assert citing == [], f"cite docs/tvm-notes.md instead of TVM-NOTES: {citing}"
    readme = (REPO / "README.md").read_text()
    for doc in ("docs/design.md", "docs/tvm-notes.md"):
        assert (REPO / doc).is_file() and f"]({doc})" in readme
