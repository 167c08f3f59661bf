"""Atomic writes, safe (pickle-free) tensor files, and the one reader of id-list files.

Every output kgzsl writes goes to a temporary sibling first and is renamed into place, so an
interrupted run never leaves a half-written file or folder behind. Temporaries are named
``.{name}.kgzsl-{pid}-{host}-XXXXXXXX.tmp`` (``.old`` for a folder being replaced): removed on any
exit the process survives (SIGTERM included, see :func:`raise_on_sigterm`), and those of a killed
writer (SIGKILL) are removed by the next writer of the same path once their pid is gone.

Output checks (run before any long work): :func:`check_output_dir` lets ``--force`` replace only a
kgzsl output of the same kind and never the current folder, a parent of it, the home folder, ``/``
or the project; :func:`check_output_file` and :func:`check_folder_for_files` make sure a file or a
folder of files can be written there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from kgzsl.errors import KgzslError


# ------------------------------------------------------------------------------------- signals
class Terminated(KeyboardInterrupt):
    """SIGTERM raised as an exception (see :func:`raise_on_sigterm`), so every cleanup block runs.

    A KeyboardInterrupt, so code that already stops quietly on Ctrl-C (DataLoader workers, tqdm)
    stops quietly on SIGTERM too.
    """


class _Deferral:
    """Signals caught by :func:`raise_on_sigterm` while a rename pair or a cleanup must not be cut."""

    depth = 0
    pending: type[BaseException] | None = None


def _in_finalizer(frame: Any) -> bool:
    """Whether ``frame`` runs inside a ``__del__``, where Python prints and drops a raised exception."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _on_signal(signum: int, frame: Any) -> None:
    exc = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
    if _Deferral.depth:
        _Deferral.pending = _Deferral.pending or exc
        return
    if _in_finalizer(frame):  # raised here it would be lost (the run would go on): deliver it again just after
        retry = threading.Timer(0.05, os.kill, (os.getpid(), signum))
        retry.daemon = True
        retry.start()
        return
    if signum == signal.SIGTERM:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
    raise exc()


@contextlib.contextmanager
def raise_on_sigterm() -> Iterator[None]:
    """While active (main thread only), SIGTERM raises :class:`Terminated` instead of killing the process.

    A plain SIGTERM would skip the ``except BaseException`` blocks that remove temporaries. SIGINT
    keeps raising KeyboardInterrupt; both wait until a rename pair or a cleanup in progress is done.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installed = {}
    for signum, default in ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
        if signal.getsignal(signum) is default:  # leave a handler someone else chose (or SIG_IGN) alone
            installed[signum] = signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        for signum, previous in installed.items():
            signal.signal(signum, previous)


class _signals_deferred:  # noqa: N801 - used like a function: ``with _signals_deferred():``
    """Hold a signal caught by :func:`raise_on_sigterm` until the block ends, then raise it."""

    def __enter__(self) -> None:
        self.counted = threading.current_thread() is threading.main_thread()
        if self.counted:
            _Deferral.depth += 1

    def __exit__(self, *exc_info: Any) -> bool:
        if self.counted:
            _Deferral.depth -= 1
            if not _Deferral.depth and _Deferral.pending is not None:
                pending, _Deferral.pending = _Deferral.pending, None
                raise pending()
        return False


# --------------------------------------------------------------------------------- temporaries
_STALE_REST = re.compile(r"(\d+)-([A-Za-z0-9]*)-[a-z0-9_]+\.(?:tmp|old)")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24]


def _temp_base(path: Path) -> str:
    return f".{path.name[:100]}.kgzsl-"


def _temp_prefix(path: Path) -> str:
    """``.{name}.kgzsl-{pid}-{host}-``: recognisably kgzsl's, and tells whose writer it is."""
    return f"{_temp_base(path)}{os.getpid()}-{_host()}-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OverflowError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def _remove(path: str | os.PathLike) -> None:
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def clean_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove what killed kgzsl writers of ``path`` left beside it; return what was removed.

    Only ``.{name}.kgzsl-{pid}-{host}-*.tmp`` / ``.old`` entries of this host whose process is gone
    are touched: never a live writer's temporary, another machine's, or anything else.
    """
    path = Path(path)
    base, host = _temp_base(path), _host()
    try:
        names = [e.name for e in os.scandir(path.parent or ".") if e.name.startswith(base)]
    except OSError:
        return []
    removed = []
    for name in names:
        match = _STALE_REST.fullmatch(name[len(base):])
        if match and match.group(2) == host and not _pid_alive(int(match.group(1))):
            _remove(path.parent / name)
            removed.append(path.parent / name)
    return removed


def _make_parent(path: Path, what: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _writable_place(path, what)  # names the file in the way or the folder that cannot be written
        raise KgzslError(f"cannot create folder {path.parent} for {what} {path} ({exc.strerror or exc})") from None


def _temporary(path: Path, folder: bool = False, suffix: str = ".tmp", what: str = "output") -> Path:
    """A new temporary sibling of ``path`` (after removing stale ones of dead writers)."""
    _make_parent(path, what)
    clean_stale_temporaries(path)
    try:
        if folder:
            tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=suffix, dir=path.parent))
            tmp.chmod(0o755)
        else:
            fd, name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=suffix, dir=path.parent)
            os.fchmod(fd, 0o644)  # mkstemp makes 0600 files; outputs are meant to be shared
            os.close(fd)
            tmp = Path(name)
    except OSError as exc:
        raise KgzslError(
            f"cannot write {what} {path}: folder {path.parent} is not writable ({exc.strerror or exc}): "
            "choose a writable location"
        ) from None
    return tmp


# -------------------------------------------------------------------------------- output checks
OUTPUT_KINDS = {"graph": "graph folder", "train": "training run folder", "features": "feature folder"}
# Each kind's own format file, as kgzsl.graph, kgzsl.train and kgzsl.features write it.
_FORMAT_FILES = {"graph": ("graph.json", "kgzsl.graph"), "train": ("train.json", "kgzsl.train")}


def _json_dict(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            obj = json.load(handle)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def output_kind(folder: str | os.PathLike) -> str | None:
    """Which kgzsl output ``folder`` is, told by its own format file: a key of OUTPUT_KINDS, or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for kind, (name, format_name) in _FORMAT_FILES.items():
        header = _json_dict(folder / name)
        if header is not None and header.get("format") == format_name:
            return kind
    run, manifest = _json_dict(folder / "run.json"), _json_dict(folder / "manifest.json")
    if run is not None and run.get("format") == 1 and "files_sha256" in run and "shard_size" in run:
        return "features"
    if manifest is not None and manifest.get("format") == 1 and isinstance(manifest.get("shards"), list):
        return "features"
    return None


def _project_root() -> Path | None:
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def _protected(path: Path) -> str | None:
    """Why ``path`` may never be an output folder (the current folder, home, /, the project ...), or None."""
    target = path.resolve()
    places: list[tuple[str, Path]] = []
    with contextlib.suppress(OSError):
        places.append(("the current folder", Path.cwd().resolve()))
    with contextlib.suppress(RuntimeError, KeyError, OSError):
        places.append(("the home folder", Path.home().resolve()))
    root = _project_root()
    if root is not None:
        places.append(("the kgzsl project folder", root))
    if target == Path(target.anchor):
        return "the root folder"
    for name, place in places:
        if target == place:
            return name
        if target in place.parents:
            return f"a parent of {name}"
    return None


def _writable_place(path: Path, what: str) -> None:
    """Check that ``path`` can be created: its nearest existing ancestor is a folder we can write in."""
    folder, child = Path(os.path.abspath(path)).parent, path.name or "out"
    while not (folder.exists() or folder.is_symlink()) and folder != folder.parent:
        folder, child = folder.parent, folder.name
    if not folder.is_dir():
        raise KgzslError(f"cannot write {what} {path}: {folder} is a file, not a folder; choose another location")
    _probe(folder, child, what, path)


def _probe(folder: Path, name: str, what: str, path: Path) -> None:
    """Create and remove a temporary file in ``folder``: the one honest test of "can write here"."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(folder / name), suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise KgzslError(
            f"cannot write {what} {path}: folder {folder} is not writable ({exc.strerror or exc}): choose a writable location"
        ) from None


def check_output_dir(path: str | os.PathLike, kind: str, force: bool = False) -> Path:
    """Refuse, before any work, an output folder of ``kind`` kgzsl may not write; return it as a Path.

    Graph and run folders are written whole: an existing one is refused unless ``force``, and
    ``force`` replaces only a kgzsl output of the same kind (told by its format file) or an empty
    folder, never an unrelated folder or a file. A feature folder is resumed in place, so it must be
    one already, or hold no visible file. Never the current folder, a parent of it, the home folder,
    ``/`` or the project; and the place must be writable.
    """
    path = Path(path)
    label = OUTPUT_KINDS[kind]
    reason = _protected(path)
    if reason:
        raise KgzslError(f"output folder {path} is {reason}: kgzsl never writes a {label} there; choose a new folder inside it")
    if not (path.exists() or path.is_symlink()):
        _writable_place(path, label)
        return path
    if not path.is_dir():
        raise KgzslError(f"output {path} exists and is not a folder: kgzsl never replaces a file with a {label}; choose another --out")
    try:
        entries = sorted(p.name for p in path.iterdir())
    except OSError as exc:
        raise KgzslError(f"output folder {path} cannot be read ({exc.strerror or exc}): choose another --out") from None
    found = output_kind(path)
    if found is not None and found != kind:
        raise KgzslError(f"output folder {path} is a kgzsl {OUTPUT_KINDS[found]}, not a {label}: "
                         f"{'--force only replaces a ' + label + '; ' if force else ''}choose another --out")
    if kind == "features":
        visible = [name for name in entries if not name.startswith(".")]
        if found is None and visible:
            raise KgzslError(f"output folder {path} is not empty and holds no kgzsl feature run (e.g. {visible[0]}): "
                             f"{'--force only starts over in a feature folder; ' if force else ''}choose an empty or new folder")
        _probe(path, "run.json", label, path)
        return path
    if not force:
        if found == kind or not entries:
            raise KgzslError(f"output folder {path} already exists: pass --force to replace it")
        raise KgzslError(f"output folder {path} already exists and is not a kgzsl {label} (it holds {entries[0]}): choose another --out")
    if found != kind and entries:
        marker = _FORMAT_FILES[kind][0]
        raise KgzslError(f"output folder {path} is not a kgzsl {label} (no kgzsl {marker}; it holds {entries[0]}): "
                         "--force only replaces kgzsl's own output; choose another --out")
    _writable_place(path, label)
    return path


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Refuse, before any work, a file output that cannot be written (a folder, an unwritable place)."""
    path = Path(path)
    if path.is_dir():
        raise KgzslError(f"{what} {path} is a folder: give a file name, e.g. {path / 'plot.png'}")
    _writable_place(path, what)
    return path


def check_folder_for_files(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Refuse, before any work, a folder to write files into that is a file or cannot be written."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise KgzslError(f"{what} {path} is a file, not a folder: give a folder (it is created if missing)")
        _probe(path, ".kgzsl-probe", what, path)
    else:
        _writable_place(path, what)
    return path


# ------------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def staged_file(path: str | os.PathLike, what: str = "output file") -> Iterator[Path]:
    """Yield the path of a new temporary sibling of ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    if path.is_dir():
        raise KgzslError(f"{what} {path} is a folder: give a file name")
    tmp: Path | None = None
    try:
        with _signals_deferred():
            tmp = _temporary(path, what=what)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            with _signals_deferred():
                _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds."""
    with staged_file(path) as tmp, open(tmp, mode) as handle:
        yield handle


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``path``; it replaces ``path`` only if the block succeeds.

    No checks on ``path``: the caller decides whether it may be replaced (see :func:`atomic_dir`).
    The old ``path`` is removed only after the new folder is in place.
    """
    path = Path(path)
    tmp: Path | None = None
    old: Path | None = None
    try:
        with _signals_deferred():
            tmp = _temporary(path, folder=True, what="output folder")
        yield tmp
        with _signals_deferred():  # the two renames are one step: never left half done
            if path.exists() or path.is_symlink():
                old = _temporary(path, folder=True, suffix=".old", what="output folder")
                os.replace(path, old / "x")
                try:
                    os.replace(tmp, path)
                except BaseException:
                    os.replace(old / "x", path)
                    raise
            else:
                os.replace(tmp, path)
            tmp = None
    except BaseException:
        if tmp is not None:
            with _signals_deferred():
                shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            with _signals_deferred():
                shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False, *, kind: str) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; move it to ``path`` only if the block succeeds.

    ``path`` is checked by :func:`check_output_dir` first: an existing one is refused unless
    ``force``, which replaces only a kgzsl output of the same ``kind``, after the new one is complete.
    """
    path = check_output_dir(path, kind, force)
    with staged_dir(path) as tmp:
        yield tmp


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(path) as handle:
        json.dump(obj, handle, indent=1, sort_keys=False)
        handle.write("\n")


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON with an error that names the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise KgzslError(f"{what} {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise KgzslError(f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def check_format(header: Any, name: str | int, version: int | str | None, where: str | os.PathLike, what: str) -> dict:
    """Return ``header`` (a JSON object or safetensors metadata) if it is a kgzsl ``what`` of format ``name``
    and ``version`` (compared as stored: an int in JSON, a str in safetensors metadata; None: the format
    has no separate version); else a KgzslError naming ``where`` and what was found."""
    found = header.get("format") if isinstance(header, dict) else type(header).__name__
    if not isinstance(header, dict) or found != name:
        raise KgzslError(f"{where} is not a kgzsl {what} (format {found!r})")
    if version is not None and header.get("version") != version:
        raise KgzslError(f"{where} is {what} format version {header.get('version')}; this kgzsl reads {version}")
    return header


def save_tensors(path: str | os.PathLike, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    """Save numpy arrays or torch tensors as a safetensors file, atomically."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    as_torch = {}
    for key, value in tensors.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        as_torch[key] = value.detach().contiguous().cpu()
    with staged_file(path, "tensor file") as tmp:
        save_file(as_torch, str(tmp), metadata=metadata)
        _sort_safetensors_metadata(tmp)
        os.chmod(tmp, 0o644)  # safetensors recreates the file, so mkstemp's 0600 would stick


def _sort_safetensors_metadata(path: str | os.PathLike) -> None:
    """Rewrite a safetensors header with its ``__metadata__`` keys sorted, in place.

    safetensors writes the metadata in the order of a Rust hash map, which changes from run to run;
    sorted, equal tensors and metadata always give byte-identical files.
    """
    with open(path, "r+b") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
        meta = header.pop("__metadata__", None)
        if not meta:
            return
        header = {"__metadata__": dict(sorted(meta.items())), **header}
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) <= size:  # the same keys and values: the same length (padding spaces keep the alignment)
            handle.seek(8)
            handle.write(text.ljust(size, b" "))
            return
        data = handle.read()
        text = text.ljust(-(-len(text) // 8) * 8, b" ")
        handle.seek(0)
        handle.write(len(text).to_bytes(8, "little") + text + data)
        handle.truncate()


def load_tensors(path: str | os.PathLike, what: str = "tensor file") -> tuple[dict[str, Any], dict[str, str]]:
    """Load a safetensors file as torch tensors plus its string metadata; never unpickles."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise KgzslError(f"{what} {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises several types for a bad header
        raise KgzslError(f"{what} {path} is not a readable safetensors file ({exc})") from None
    return tensors, metadata


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display is needed or used)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | os.PathLike, dpi: int = 110) -> None:
    """Write a matplotlib figure as a PNG atomically, then free it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_file(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=dpi)
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------- id lists
class IdList(list):
    """The entries of an id-list file in file order, remembering the file and the line of each.

    To its consumers it is a plain ``list[str]``; a caller that resolves the entries (against a graph,
    a taxonomy, a predictions file) calls :meth:`require_known` so an unknown entry is reported with
    its file and line instead of being dropped.
    """

    def __init__(self, entries: Iterable[str] = (), path: str | os.PathLike = "id list", what: str = "id list",
                 lines: Sequence[int] | None = None) -> None:
        super().__init__(entries)
        self.path = Path(path)
        self.what = what
        self.lines = list(lines) if lines is not None else list(range(1, len(self) + 1))

    def where(self, entry: str) -> str:
        """``FILE:LINE`` of ``entry`` (the file alone if it is not listed)."""
        line = dict(zip(self, self.lines)).get(entry)
        return f"{self.path}:{line}" if line else str(self.path)

    def require_known(self, known: Container[str], against: str, hint: Callable[[str], str] | None = None) -> None:
        """Raise a KgzslError naming the file, line and entry of the first entry not in ``known``.

        ``against`` completes "... is not ___" (e.g. "a node of graph G"); ``hint(entry)`` may add advice.
        """
        unknown = [(entry, line) for entry, line in zip(self, self.lines) if entry not in known]
        if not unknown:
            return
        entry, line = unknown[0]
        more = f" ({len(unknown) - 1} more entries of the file are unknown too)" if len(unknown) > 1 else ""
        advice = (hint(entry) if hint else "") or ""
        raise KgzslError(
            f"{self.path}:{line}: {self.what} entry {entry!r} is not {against}{more}{advice}: fix or remove that line"
        )


_COMMENT = re.compile(r"(^|\s)#.*$")
_WNID_THEN_TEXT = re.compile(r"^n\d{8}\s")


def read_id_list(path: str | os.PathLike, what: str = "id list") -> IdList:
    """Read a list of class ids (wnids or class names), one a line: the rule for every list kgzsl reads.

    Each entry is the whole line, stripped, so ``frying pan`` is one entry. Blank lines are skipped;
    ``#`` starts a comment at the start of a line or after whitespace (``n03400231  # frying pan``), so
    only a ``#`` inside a word (``C#``) is kept. An entry listed twice is an error naming both lines, as
    is a wnid followed by more text (``n01440764 tench``, the layout of ImageNet's synset mapping):
    read whole, that line would be an id nothing knows.
    """
    path = Path(path)
    if path.is_dir():
        raise KgzslError(f"{what} file {path} is a folder: give a text file with one id a line")
    if not path.is_file():
        raise KgzslError(f"{what} file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise KgzslError(f"{what} file {path} is not UTF-8 text: give a text file with one id a line") from None
    entries: list[str] = []
    lines: list[int] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        entry = _COMMENT.sub("", raw).strip()
        if not entry:
            continue
        if _WNID_THEN_TEXT.match(entry):
            raise KgzslError(
                f"{path}:{number}: {what} line {entry!r} holds a wnid followed by more text: one id a line "
                f"(put a note after ' # ')"
            )
        if entry in first_line:
            raise KgzslError(
                f"{what} file {path} lists {entry} twice (lines {first_line[entry]} and {number}): remove one"
            )
        first_line[entry] = number
        entries.append(entry)
        lines.append(number)
    if not entries:
        raise KgzslError(f"{what} file {path} is empty: it needs one id a line")
    return IdList(entries, path, what, lines)
