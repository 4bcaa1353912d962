"""``ecgforge push``: an export (or a run, exported on the way) to a Hugging Face Hub model repository.

The upload is ``huggingface_hub``'s own (``create_repo`` + ``upload_folder``), so the endpoint (``HF_ENDPOINT``),
the token (``HF_TOKEN`` or ``hf auth login``) and large-file handling are the library's. Only the files of an
export travel (``hub.EXPORT_FILES``); the folder is loaded strictly first, so a repository never receives
weights that ``ecgforge.load_encoder`` would refuse. What was pushed loads back as ``hf://ORG/NAME[@REVISION]``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ecgforge.app.export import export
from ecgforge.errors import UserError
from ecgforge.hub import EXPORT_FILES, HubError, hub_error_line, import_hub, parse


def is_export(path: Path) -> bool:
    """True for an ``ecgforge export`` folder: encoder files plus a model card whose front matter says
    ``library_name: ecgforge`` (a run directory has the encoder files but no card)."""
    card = path / "README.md"
    if not (path.is_dir() and card.is_file() and (path / "encoder.json").is_file()):
        return False
    head = card.read_text(encoding="utf-8", errors="replace").split("\n---", 1)[0]
    return head.startswith("---") and any(ln.split(":", 1)[0].strip() == "library_name" and "ecgforge" in ln
                                          for ln in head.splitlines())


def push(src: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
         message: str | None = None) -> dict[str, Any]:
    """Upload the export at ``src`` (or export the run / fairseq ``.pt`` at ``src`` into a temporary folder first).

    Args:
        repo_id: ``ORG/NAME`` (created if absent; ``private`` applies only then).
        revision: a branch to commit to, created from the default branch if absent; None: ``main``.
    Returns:
        ``{"repo_id", "revision", "commit", "url", "files", "exported"}``: the new commit's hash, its web address,
        the uploaded file names, and whether ``src`` was exported on the way.
    """
    from ecgforge.encoder_files import load_encoder_weights

    where = parse(repo_id)  # ORG/NAME, the same rule as hf:// paths
    if where.revision is not None:
        raise HubError(f"--repo {repo_id}: give the branch with --revision, not @")
    hub = import_hub("ecgforge push")
    src = Path(src)
    if not src.exists():
        raise UserError(f"{src}: no such run directory, export or checkpoint")
    with tempfile.TemporaryDirectory(prefix="ecgforge-push-") as tmp:
        exported = not is_export(src)
        folder = (export(src, Path(tmp) / where.repo_id.split("/")[1], hub_path=str(where)) if exported
                  else src)
        if not exported:
            load_encoder_weights(folder)  # keys, shapes and weights hash, as a download will be checked
        files = sorted(f for f in EXPORT_FILES if (folder / f).is_file())
        api = hub.HfApi()
        target = f"hf://{where.repo_id}" + (f"@{revision}" if revision else "")
        try:
            api.create_repo(where.repo_id, repo_type="model", private=True if private else None, exist_ok=True)
            if revision:
                api.create_branch(where.repo_id, branch=revision, repo_type="model", exist_ok=True)
            info = api.upload_folder(repo_id=where.repo_id, repo_type="model", folder_path=str(folder),
                                     allow_patterns=files, revision=revision,
                                     commit_message=message or f"ecgforge push {src.name}")
        except Exception as exc:  # noqa: BLE001 - Hub errors a user can fix become one line; the rest re-raise
            line = hub_error_line(hub, exc, target)
            if line is None:
                raise
            raise HubError(line) from None
    return {"repo_id": where.repo_id, "revision": revision or "main", "commit": info.oid, "url": info.commit_url,
            "files": files, "exported": exported}


__all__ = ["is_export", "push"]
