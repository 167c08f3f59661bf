"""Where kgzsl finds the real resources it needs on a machine with no internet.

- WordNet 3.0: Debian's ``wordnet-base`` + ``wordnet-sense-index`` put the database in
  ``/usr/share/wordnet``. nltk (>= 3.10) only reads plain files under its own data path and also wants a
  ``lexnames`` file that Debian lacks, so :func:`wordnet_dir` copies the database into a cache folder
  (``$KGZSL_CACHE``, default ``~/.cache/kgzsl``) and writes ``lexnames`` there, once.
- ImageNet class lists: read as files from the ``timm`` wheel (installed ``--no-deps``; never imported,
  since importing timm needs torchvision).
- The cache folder, the WordNet source and the reference folder can be overridden by environment
  variables: ``KGZSL_CACHE``, ``KGZSL_WORDNET_SOURCE``, ``KGZSL_REFERENCE``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from kgzsl.core.atomic import staged_dir
from kgzsl.errors import KgzslError

WORDNET_INSTALL_HINT = "sudo apt-get install wordnet-base wordnet-sense-index"
WORDNET_FILES = (
    "data.noun", "index.noun", "noun.exc", "data.verb", "index.verb", "verb.exc",
    "data.adj", "index.adj", "adj.exc", "data.adv", "index.adv", "adv.exc", "index.sense",
)
# The 45 lexicographer files of WordNet 3.0, numbered 00-44, with their syntactic category
# (1 noun, 2 verb, 3 adjective, 4 adverb), as listed in WordNet's lexnames(5) man page.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_LEX_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


#: the installed ``kgzsl`` package folder
PACKAGE_DIR = Path(__file__).resolve().parent.parent
#: where a wheel carries the project's ``graphs/`` and ``data/calibration/`` (package data, see pyproject.toml)
SHIPPED_IN_PACKAGE = PACKAGE_DIR / "_shipped"


def project_root() -> Path | None:
    """The source checkout kgzsl runs from (the folder with its ``pyproject.toml``), or None for an installed wheel."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() and (root / "kgzsl").is_dir() else None


def shipped_path(relative: str) -> Path:
    """A folder kgzsl ships (``graphs/imagenet21k``, ``data/calibration``): inside the installed package, else in the
    source checkout. The path is returned even where neither has it, so that the caller's message names it."""
    packaged = SHIPPED_IN_PACKAGE / relative
    root = project_root()
    if packaged.exists() or root is None:
        return packaged
    return root / relative


def default_graph_dir() -> Path:
    """The shipped ImageNet-21k graph (``graphs/imagenet21k``), wherever kgzsl is installed from, never the current folder."""
    return shipped_path("graphs/imagenet21k")


def calibration_dir() -> Path:
    """The hedging calibrations shipped for the default runs (``data/calibration``)."""
    return shipped_path("data/calibration")


def cache_dir() -> Path:
    """The folder kgzsl keeps prepared resources in (``$KGZSL_CACHE`` or ``~/.cache/kgzsl``)."""
    return Path(os.environ.get("KGZSL_CACHE", Path.home() / ".cache" / "kgzsl"))


def lexnames_text() -> str:
    """The content of WordNet's ``lexnames`` file: ``NN<TAB>name<TAB>category`` per line."""
    return "".join(f"{i:02d}\t{name}\t{_LEX_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def wordnet_dir() -> Path:
    """Return ``<cache>/nltk_data/corpora/wordnet``, prepared from the system WordNet if needed."""
    source = Path(os.environ.get("KGZSL_WORDNET_SOURCE", "/usr/share/wordnet"))
    target = cache_dir() / "nltk_data" / "corpora" / "wordnet"
    missing = [name for name in WORDNET_FILES if not (source / name).is_file()]
    if (target / "lexnames").is_file() and all((target / n).is_file() for n in WORDNET_FILES):
        return target
    if missing:
        raise KgzslError(
            f"WordNet 3.0 not found in {source} (missing {', '.join(missing[:3])}): "
            f"install it with `{WORDNET_INSTALL_HINT}` or set KGZSL_WORDNET_SOURCE to a WordNet dict folder"
        )
    with cache_folder(target) as tmp:
        for name in WORDNET_FILES:  # plain copies: nltk refuses links that leave its data path
            shutil.copyfile(source / name, tmp / name)
        (tmp / "lexnames").write_text(lexnames_text())
    return target


@contextlib.contextmanager
def cache_folder(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling of the cache folder ``target`` to fill; it replaces ``target`` only if
    the block succeeds, and is removed otherwise (stale ones of killed runs are removed first)."""
    with staged_dir(target) as tmp:
        yield tmp


def package_file(package: str, relative: str, install_hint: str) -> Path:
    """Path of a data file shipped inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise KgzslError(f"package {package!r} is not installed: {install_hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise KgzslError(f"{path} is missing from package {package!r}: reinstall it ({install_hint})")
    return path


def reference_dir() -> Path | None:
    """The standard ImageNet wnid/split lists (``$KGZSL_REFERENCE`` or ``../shared/reference``), if present."""
    env = os.environ.get("KGZSL_REFERENCE")
    candidates = [Path(env)] if env else []
    root = project_root()
    if root is not None:
        candidates.append(root.parent / "shared" / "reference")
    for path in candidates:
        if (path / "imagenet1k-wnids.txt").is_file():
            return path
    return None
