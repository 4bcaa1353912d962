"""``hf://`` ids on the Hugging Face Hub, downloaded with ``huggingface_hub``: ``hf://ORG/NAME[@REVISION]``, an
exported encoder (`download`), and ``hf://ORG/NAME/FILE[@REVISION]``, one file of a repository: a foundation
model's released checkpoint, which ``model.init`` names as ``KIND:hf://ORG/NAME/FILE`` (`download_file`). Both
forms are parsed here only (`parse`, `init_hub_path`).

``huggingface_hub`` is an optional extra (``pip install 'ecgforge[hub]'``) and is imported only when an
``hf://`` path is met. The download is ``snapshot_download``'s: files land in its cache (``HF_HOME`` /
``HF_HUB_CACHE``), a branch, tag or commit hash after ``@`` pins the revision (default ``main``), and with
``HF_HUB_OFFLINE=1`` the cached snapshot is used without any request. The endpoint is ``HF_ENDPOINT`` and the
token ``HF_TOKEN`` (or ``hf auth login``), as for every Hub library. What is downloaded is then an export
folder like any other: ``encoder_files`` loads it with the same strict checks (weights hash, keys, shapes,
contract). A single file is ``hf_hub_download``'s, into the same cache (with the same revision and offline
rules), and is then read as the local file it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ecgforge.errors import UserError

PREFIX = "hf://"
#: The files of an export that loading reads or shows (the model card and results travel for provenance).
EXPORT_FILES = ("encoder.json", "encoder.safetensors", "README.md", "results.json")
INSTALL_HINT = "pip install 'ecgforge[hub]'"
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
# A file in a repository: segments without blanks or backslashes ("." and ".." refused apart).
_FILE = re.compile(r"[^\s/\\]+(/[^\s/\\]+)*")
FORMS = ("hf://ORG/NAME[@REVISION] (an export) or KIND:hf://ORG/NAME/FILE[@REVISION] (a foundation model's "
         "released checkpoint file); REVISION: a branch, tag or commit hash")


class HubError(UserError):
    """An ``hf://`` path that cannot be resolved (malformed, missing extra, unknown repo, revision or file, no
    network); one line."""


@dataclass(frozen=True)
class HubPath:
    """A parsed ``hf://ORG/NAME[/FILE][@REVISION]``; ``revision`` None means the default branch, ``filename``
    None the whole repository (an export)."""

    repo_id: str
    revision: str | None = None
    filename: str | None = None

    def __str__(self) -> str:
        file = f"/{self.filename}" if self.filename else ""
        return PREFIX + self.repo_id + file + (f"@{self.revision}" if self.revision else "")


def is_hub_path(path: object) -> bool:
    """True for a string starting with ``hf://`` (a Path never is one: ``Path("hf://a")`` loses a slash)."""
    return isinstance(path, str) and path.startswith(PREFIX)


def parse(uri: str, *, file: bool | None = False, label: str | None = None) -> HubPath:
    """``"hf://org/name@v1"`` -> ``HubPath("org/name", "v1")``, ``"hf://org/name/a/b.pth@v1"`` ->
    ``HubPath("org/name", "v1", "a/b.pth")``: a FILE is required with ``file=True``, refused with ``file=False``,
    either with None. The first ``@`` starts the revision, so a FILE holds none. HubError naming ``label``
    (default ``uri``) and the expected form otherwise."""
    label = label or uri
    rest = uri[len(PREFIX):] if uri.startswith(PREFIX) else uri
    path, sep, revision = rest.partition("@")
    org, _, tail = path.partition("/")
    name, _, filename = tail.partition("/")
    repo_id = f"{org}/{name}"
    bad_file = bool(filename) and (not _FILE.fullmatch(filename) or bool({".", ".."} & set(filename.split("/"))))
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id or (sep and not revision) or bad_file or path.endswith("/"):
        raise HubError(f"{label}: expected {FORMS}")
    if filename and file is False:
        raise HubError(f"{label}: names a file, but an ecgforge export is hf://ORG/NAME[@REVISION]; a foundation "
                       f"model's released checkpoint file is KIND:hf://{repo_id}/{filename} (KIND: its encoder kind, "
                       "e.g. ecgfounder)")
    if file and not filename:
        raise HubError(f"{label}: name the checkpoint file in the repository: hf://{repo_id}/FILE"
                       + (f"@{revision}" if revision else "") + " (an ecgforge export is loaded without KIND:)")
    return HubPath(repo_id, revision or None, filename or None)


def init_hub_path(init: str) -> HubPath | None:
    """The Hub id in a ``model.init`` value, parsed (HubError where malformed): ``hf://ORG/NAME[@REVISION]`` (an
    export) or ``KIND:hf://ORG/NAME/FILE[@REVISION]`` (a released checkpoint file); None for a local path."""
    if is_hub_path(init):
        return parse(init)
    kind, sep, rest = init.partition(":")
    if sep and kind and is_hub_path(rest):
        return parse(rest, file=True, label=init)
    return None


def import_hub(what: str) -> Any:
    """The ``huggingface_hub`` module, or HubError saying in one line what to install."""
    try:
        import huggingface_hub
        import huggingface_hub.errors  # noqa: F401 - submodules the error mapping reads
        import huggingface_hub.utils  # noqa: F401
    except ImportError:
        raise HubError(f"{what} needs huggingface_hub, which is not installed: {INSTALL_HINT}") from None
    return huggingface_hub


def hub_error_line(hub: Any, exc: Exception, target: str, *, missing: str | None = None,
                   instead: str = "") -> str | None:
    """One line for a ``huggingface_hub`` error a user can fix (unknown repo, revision or file, offline, no token),
    or None for anything else (a bug keeps its traceback). ``missing``: what a missing file is called (default:
    the files of an export); ``instead``: what else to do where the Hub cannot be reached, appended."""
    errors, constants = hub.errors, hub.constants
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"{target}: no such revision on {constants.ENDPOINT} (a branch, tag or commit hash)"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return (f"{target}: no such repository on {constants.ENDPOINT}, or it is private and no token allows "
                "it (set HF_TOKEN or run `hf auth login`)")
    if isinstance(exc, errors.LocalEntryNotFoundError):  # (a subclass of EntryNotFoundError)
        why = ("HF_HUB_OFFLINE is set and it is not in the local cache" if constants.HF_HUB_OFFLINE
               else f"{constants.ENDPOINT} cannot be reached and it is not in the local cache")
        return f"{target}: {why} ({constants.HF_HUB_CACHE}){instead}"
    if isinstance(exc, errors.EntryNotFoundError):
        what = missing or f"a file of an ecgforge export ({', '.join(EXPORT_FILES[:2])})"
        return f"{target}: the repository lacks {what} on {constants.ENDPOINT}"
    if isinstance(exc, hub.utils.OfflineModeIsEnabled):
        return f"{target}: HF_HUB_OFFLINE is set; unset it to reach {constants.ENDPOINT}{instead}"
    if isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = " (set HF_TOKEN or run `hf auth login`)" if status in (401, 403) else ""
        return f"{target}: the Hub answered {status}: {first}{hint}"
    if type(exc).__module__.split(".")[0].startswith("httpx"):  # no route, refused, timed out, TLS
        return f"{target}: cannot reach {constants.ENDPOINT} ({type(exc).__name__}: {exc}){instead}"
    return None


def download(uri: str) -> tuple[Path, dict[str, str]]:
    """Download (or find in the cache) the export at ``uri``.

    Returns:
        ``(folder, origin)``: the snapshot folder holding the export's files, and ``{"repo_id", "revision",
        "commit"}`` (``commit``: the 40-hex commit the revision resolved to, the snapshot's name).
    """
    where = parse(uri)
    hub = import_hub(f"{uri}: loading from the Hugging Face Hub")
    try:
        folder = Path(hub.snapshot_download(where.repo_id, repo_type="model", revision=where.revision,
                                            allow_patterns=list(EXPORT_FILES)))
    except Exception as exc:  # noqa: BLE001 - Hub errors a user can fix become one line; the rest re-raise
        line = hub_error_line(hub, exc, uri)
        if line is None:
            raise
        raise HubError(line) from None
    return folder, {"repo_id": where.repo_id, "revision": where.revision or "main", "commit": folder.name}


def download_file(uri: str, beside: Callable[[str], Sequence[str]] | None = None,
                  label: str | None = None) -> tuple[Path, dict[str, str]]:
    """Download (or find in the cache) the one file ``hf://ORG/NAME/FILE[@REVISION]`` names, with ``hf_hub_download``.

    Args:
        beside: FILE's name -> the names of files next to it that its reader uses when present (HuBERT-ECG's
            ``config.json`` beside ``model.safetensors``): fetched from the same commit, skipped where the
            repository has none.
        label: how errors name it (default ``uri``; ``model.init``'s ``KIND:hf://...``).
    Returns:
        ``(path, origin)``: the file in the cache (``.../snapshots/COMMIT/FILE``, the ``beside`` files next to it)
        and ``{"repo_id", "revision", "file", "commit"}``.
    """
    label = label or uri
    where = parse(uri, file=True, label=label)
    assert where.filename is not None  # parse(file=True) requires one
    hub = import_hub(f"{label}: loading from the Hugging Face Hub")
    instead = f"; or download {where.filename} yourself and give its local path (KIND:PATH)"

    def fetch(filename: str, revision: str | None, optional: bool = False) -> str | None:
        errors = hub.errors
        try:
            return hub.hf_hub_download(where.repo_id, filename, repo_type="model", revision=revision)
        except Exception as exc:  # noqa: BLE001 - Hub errors a user can fix become one line; the rest re-raise
            if optional and isinstance(exc, errors.EntryNotFoundError) and not isinstance(
                    exc, errors.LocalEntryNotFoundError):
                return None  # the repository has none: the reader goes without
            line = hub_error_line(hub, exc, label, missing=filename, instead=instead)
            if line is None:
                raise
            raise HubError(line) from None

    path = Path(str(fetch(where.filename, where.revision)))
    commit = path.parents[where.filename.count("/")].name  # the snapshot folder is named by the commit
    folder = PurePosixPath(where.filename).parent
    for name in beside(PurePosixPath(where.filename).name) if beside else ():
        other = str(folder / name)  # "config.json" beside "model.safetensors", "sub/config.json" in "sub/"
        # Cached, or known to be absent at this commit (try_to_load_from_cache's _CACHED_NO_EXIST): no request.
        if hub.try_to_load_from_cache(where.repo_id, other, revision=commit) is None:
            fetch(other, commit, optional=True)
    return path, {"repo_id": where.repo_id, "revision": where.revision or "main", "file": where.filename,
                  "commit": commit}


__all__ = ["EXPORT_FILES", "FORMS", "HubError", "HubPath", "INSTALL_HINT", "download", "download_file", "import_hub",
           "init_hub_path", "is_hub_path", "parse"]
