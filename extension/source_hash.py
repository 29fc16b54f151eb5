"""The SHA-256 of the lab extension's sources, which its committed build records.

``extension/build.sh`` writes it next to the built assets (``nbflow/labextension/source.sha256``)
and skips the build when the sources have not changed since: a webpack build is not
reproducible across checkout folders (module ids depend on absolute paths), so rebuilding
the same sources would only rename the committed files and leave the tree dirty.
``tests/test_labextension_assets.py`` checks the recorded hash against the sources, so a
change to them without a rebuild fails the tests.

Usage: ``python extension/source_hash.py`` prints the hash.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = ("package.json", "package-lock.json", "tsconfig.json")
FOLDERS = ("src", "style")


def source_hash(root: Path = HERE) -> str:
    """The hash of every source file's relative path and content, in path order."""
    paths = [root / f for f in FILES]
    for folder in FOLDERS:
        paths.extend(p for p in (root / folder).rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.relative_to(root).as_posix()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


if __name__ == "__main__":
    print(source_hash())
