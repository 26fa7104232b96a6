"""The README's Python snippets run as written."""
import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks():
    with open(README) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def test_readme_has_python_snippets():
    assert len(python_blocks()) >= 1


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_snippet_runs(index):
    exec(compile(python_blocks()[index], f"README.md python block {index}", "exec"), {})


def test_readme_links_resolve():
    """Every relative link of the README names a file or folder of the repository."""
    with open(README) as f:
        links = re.findall(r"\]\(([^)#]+)\)", f.read())
    local = [link for link in links if "://" not in link]
    assert local, "the README links to its docs"
    root = os.path.dirname(README)
    missing = [link for link in local if not os.path.exists(os.path.join(root, link))]
    assert not missing, f"README links to missing files: {missing}"
