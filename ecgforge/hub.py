"""``hf://ORG/NAME[@REVISION]``: an exported encoder on the Hugging Face Hub, downloaded with ``huggingface_hub``.

``huggingface_hub`` is an optional extra (``pip install 'ecgforge[hub]'``) and is imported only when an
``hf://`` path is met. The download is ``snapshot_download``'s: files land in its cache (``HF_HOME`` /
``HF_HUB_CACHE``), a branch, tag or commit hash after ``@`` pins the revision (default ``main``), and with
``HF_HUB_OFFLINE=1`` the cached snapshot is used without any request. The endpoint is ``HF_ENDPOINT`` and the
token ``HF_TOKEN`` (or ``hf auth login``), as for every Hub library. What is downloaded is then an export
folder like any other: ``encoder_files`` loads it with the same strict checks (weights hash, keys, shapes,
contract).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecgforge.errors import UserError

PREFIX = "hf://"
#: The files of an export that loading reads or shows (the model card and results travel for provenance).
EXPORT_FILES = ("encoder.json", "encoder.safetensors", "README.md", "results.json")
INSTALL_HINT = "pip install 'ecgforge[hub]'"
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


class HubError(UserError):
    """An ``hf://`` path that cannot be resolved (malformed, missing extra, unknown repo or revision); one line."""


@dataclass(frozen=True)
class HubPath:
    """A parsed ``hf://ORG/NAME[@REVISION]``; ``revision`` None means the default branch."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return PREFIX + self.repo_id + (f"@{self.revision}" if self.revision else "")


def is_hub_path(path: object) -> bool:
    """True for a string starting with ``hf://`` (a Path never is one: ``Path("hf://a")`` loses a slash)."""
    return isinstance(path, str) and path.startswith(PREFIX)


def parse(uri: str) -> HubPath:
    """``"hf://org/name@v1"`` -> ``HubPath("org/name", "v1")``; HubError naming the expected form otherwise."""
    rest = uri[len(PREFIX):] if uri.startswith(PREFIX) else uri
    repo_id, sep, revision = rest.partition("@")
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id or (sep and not revision):
        raise HubError(f"{uri}: expected hf://ORG/NAME or hf://ORG/NAME@REVISION (a branch, tag or commit hash)")
    return HubPath(repo_id, revision or None)


def import_hub(what: str) -> Any:
    """The ``huggingface_hub`` module, or HubError saying in one line what to install."""
    try:
        import huggingface_hub
        import huggingface_hub.errors  # noqa: F401 - submodules the error mapping reads
        import huggingface_hub.utils  # noqa: F401
    except ImportError:
        raise HubError(f"{what} needs huggingface_hub, which is not installed: {INSTALL_HINT}") from None
    return huggingface_hub


def hub_error_line(hub: Any, exc: Exception, target: str) -> str | None:
    """One line for a ``huggingface_hub`` error a user can fix (unknown repo, revision, offline, no token),
    or None for anything else (a bug keeps its traceback)."""
    errors, constants = hub.errors, hub.constants
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"{target}: no such revision on {constants.ENDPOINT} (a branch, tag or commit hash)"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return (f"{target}: no such repository on {constants.ENDPOINT}, or it is private and no token allows "
                "it (set HF_TOKEN or run `hf auth login`)")
    if isinstance(exc, errors.LocalEntryNotFoundError):  # (a subclass of EntryNotFoundError)
        why = ("HF_HUB_OFFLINE is set and it is not in the local cache" if constants.HF_HUB_OFFLINE
               else f"{constants.ENDPOINT} cannot be reached and it is not in the local cache")
        return f"{target}: {why} ({constants.HF_HUB_CACHE})"
    if isinstance(exc, errors.EntryNotFoundError):
        return f"{target}: the repository lacks a file of an ecgforge export ({', '.join(EXPORT_FILES[:2])})"
    if isinstance(exc, hub.utils.OfflineModeIsEnabled):
        return f"{target}: HF_HUB_OFFLINE is set; unset it to reach {constants.ENDPOINT}"
    if isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = " (set HF_TOKEN or run `hf auth login`)" if status in (401, 403) else ""
        return f"{target}: the Hub answered {status}: {first}{hint}"
    if type(exc).__module__.split(".")[0].startswith("httpx"):  # no route, refused, timed out, TLS
        return f"{target}: cannot reach {constants.ENDPOINT} ({type(exc).__name__}: {exc})"
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


__all__ = ["EXPORT_FILES", "HubError", "HubPath", "INSTALL_HINT", "download", "import_hub", "is_hub_path", "parse"]
