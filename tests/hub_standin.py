"""A loopback stand-in for the Hugging Face Hub's HTTP API, enough for ``huggingface_hub`` to create a model
repository, create a branch, upload a folder and ``snapshot_download`` it, so tests exercise the real client
without the network (``HF_ENDPOINT`` / ``huggingface_hub.constants.ENDPOINT`` pointed at it).

Endpoints (as ``huggingface_hub`` 2.x calls them; every file is answered ``uploadMode: regular``, so the
content travels base64 in the commit and no LFS or Xet storage is involved):

    POST /api/validate-yaml                           README.md front matter: YAML mapping, model-index fields
    POST /api/repos/create                            {name, organization, visibility} -> {url}; 409 if exists
    POST /api/models/{repo}/branch/{branch}           from the default branch; 409 if it exists
    POST /api/models/{repo}/preupload/{rev}           {files: [{path, sample, size}]} -> regular, not ignored
    POST /api/models/{repo}/commit/{rev}              NDJSON: header, file (base64), deletedFile -> {commitOid}
    GET  /api/models/{repo}[/revision/{rev}]          {id, sha, private, siblings}
    GET  /api/models/{repo}/tree/{rev}                [{type: file, path, size, oid}]
    HEAD/GET /{repo}/resolve/{rev}/{path}             X-Repo-Commit, ETag (the git blob id), the bytes

Writes need an ``Authorization`` header; a private repository is invisible (404) without one, as on the Hub.
Unknown repositories, revisions and files answer 404 with the ``X-Error-Code`` the client maps to its errors.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

COMMIT = re.compile(r"[0-9a-f]{40}")


def blob_id(data: bytes) -> str:
    """The git blob id of ``data`` (what the Hub reports as a regular file's ``oid``)."""
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def card_problems(readme: str) -> list[str]:
    """What the Hub's metadata check would refuse in a README.md: front matter that is not a YAML mapping, or a
    ``model-index`` result without ``task.type``, ``dataset.type`` / ``dataset.name`` or a metric's ``type`` /
    numeric ``value`` (the fields https://huggingface.co/docs/hub/model-cards#evaluation-results requires)."""
    import yaml

    if not readme.startswith("---\n"):
        return []  # no metadata: the Hub accepts it (with a warning)
    head, sep, _ = readme[4:].partition("\n---")
    if not sep:
        return ["the front matter is not closed by ---"]
    try:
        meta = yaml.safe_load(head)
    except yaml.YAMLError as exc:
        return [f"YAML: {exc}"]
    if not isinstance(meta, dict):
        return ["the front matter is not a mapping"]
    problems = []
    for model in meta.get("model-index", []) or []:
        if not isinstance(model, dict) or not model.get("name"):
            problems.append("model-index: each entry needs a name")
            continue
        for i, res in enumerate(model.get("results", [])):
            if not (res.get("task") or {}).get("type"):
                problems.append(f"model-index results[{i}]: task.type is required")
            ds = res.get("dataset") or {}
            if not (ds.get("type") and ds.get("name")):
                problems.append(f"model-index results[{i}]: dataset.type and dataset.name are required")
            for m in res.get("metrics") or [None]:
                if not (isinstance(m, dict) and m.get("type") and isinstance(m.get("value"), (int, float))):
                    problems.append(f"model-index results[{i}]: each metric needs a type and a numeric value")
    return problems


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> {path: bytes}
    messages: dict[str, str] = field(default_factory=dict)  # commit -> summary


class HubStandIn:
    """``with HubStandIn() as hub: ...``: serves on ``hub.url`` (127.0.0.1, a free port) in a thread.

    Attributes:
        repos: repo id -> Repo (what was uploaded, per commit).
        log: ``(method, path, authorised)`` of every request, in order.
    """

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.log: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self._n = 0
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                standin._handle(self, "GET")

            def do_HEAD(self) -> None:
                standin._handle(self, "HEAD")

            def do_POST(self) -> None:
                standin._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------------------------------- helpers

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The tree of ``repo_id`` at a branch or commit."""
        repo = self.repos[repo_id]
        return repo.commits[repo.branches.get(revision, revision)]

    def _new_commit(self, repo: Repo, parent: str | None, tree: dict[str, bytes], summary: str) -> str:
        self._n += 1
        oid = hashlib.sha1(f"{self._n}:{parent}:{sorted(tree)}".encode()).hexdigest()
        repo.commits[oid], repo.messages[oid] = tree, summary
        return oid

    # -------------------------------------------------------------------------------------------- routes

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        authed = bool(h.headers.get("authorization"))
        body = h.rfile.read(int(h.headers.get("content-length") or 0)) if method == "POST" else b""
        with self._lock:
            self.log.append((method, url.path, authed))
            try:
                status, headers, payload = self._route(method, parts, authed, body)
            except KeyError as exc:
                status, headers, payload = 404, {"X-Error-Code": str(exc.args[0])}, {"error": str(exc.args[0])}
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h.send_response(status)
        if not isinstance(payload, bytes):
            h.send_header("Content-Type", "application/json")
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(data)

    def _repo(self, repo_id: str, authed: bool) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authed):
            raise KeyError("RepoNotFound")
        return repo

    def _commit_of(self, repo: Repo, revision: str) -> str:
        if revision in repo.branches:
            return repo.branches[revision]
        if COMMIT.fullmatch(revision) and revision in repo.commits:
            return revision
        raise KeyError("RevisionNotFound")

    def _route(self, method: str, p: list[str], authed: bool, body: bytes) -> tuple[int, dict[str, str], Any]:
        if method == "POST" and not authed:
            return 401, {}, {"error": "Invalid credentials in Authorization header"}
        if method == "POST" and p == ["api", "validate-yaml"]:
            problems = card_problems(json.loads(body)["content"])
            return (400 if problems else 200), {}, {"errors": [{"message": m} for m in problems], "warnings": []}
        if method == "POST" and p == ["api", "repos", "create"]:
            req = json.loads(body)
            repo_id = f"{req['organization']}/{req['name']}"
            if repo_id in self.repos:
                return 409, {}, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
            repo = self.repos[repo_id] = Repo(private=bool(req.get("private")) or req.get("visibility") == "private")
            repo.branches["main"] = self._new_commit(repo, None, {}, "initial commit")
            return 200, {}, {"url": f"{self.url}/{repo_id}"}
        if p[:2] == ["api", "models"] and len(p) >= 4:
            repo_id, rest = f"{p[2]}/{p[3]}", p[4:]
            repo = self._repo(repo_id, authed)
            if method == "POST" and len(rest) == 2 and rest[0] == "branch":
                if rest[1] in repo.branches:
                    return 409, {}, {"error": f"Reference already exists: refs/heads/{rest[1]}"}
                start = (json.loads(body) if body else {}).get("startingPoint") or "main"
                repo.branches[rest[1]] = self._commit_of(repo, start)
                return 200, {}, {}
            if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
                self._commit_of(repo, rest[1])
                files = json.loads(body)["files"]
                tree = self.files(repo_id, self._commit_of(repo, rest[1]))
                return 200, {}, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                            "oid": blob_id(tree[f["path"]]) if f["path"] in tree else None}
                                           for f in files]}
            if method == "POST" and len(rest) == 2 and rest[0] == "commit":
                branch = rest[1]
                parent = self._commit_of(repo, branch)
                if branch not in repo.branches:
                    return 400, {}, {"error": "commits go to a branch"}
                tree, summary = dict(repo.commits[parent]), ""
                for line in body.splitlines():
                    item = json.loads(line)
                    if item["key"] == "header":
                        summary = item["value"]["summary"]
                    elif item["key"] == "file":
                        tree[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    elif item["key"] == "deletedFile":
                        tree.pop(item["value"]["path"], None)
                    else:
                        return 400, {}, {"error": f"the stand-in does not take {item['key']!r}"}
                oid = repo.branches[branch] = self._new_commit(repo, parent, tree, summary)
                return 200, {}, {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid,
                                 "pullRequestUrl": None}
            if method == "GET" and (not rest or (len(rest) == 2 and rest[0] == "revision")):
                sha = self._commit_of(repo, rest[1] if rest else "main")
                return 200, {}, {"id": repo_id, "sha": sha, "private": repo.private,
                                 "siblings": [{"rfilename": f} for f in sorted(repo.commits[sha])]}
            if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
                tree = repo.commits[self._commit_of(repo, rest[1])]
                return 200, {}, [{"type": "file", "path": f, "size": len(b), "oid": blob_id(b)}
                                 for f, b in sorted(tree.items())]
        if method in ("GET", "HEAD") and len(p) >= 5 and p[2] == "resolve":
            repo = self._repo(f"{p[0]}/{p[1]}", authed)
            sha = self._commit_of(repo, p[3])
            path = "/".join(p[4:])
            data = repo.commits[sha].get(path)
            if data is None:
                raise KeyError("EntryNotFound")
            return 200, {"X-Repo-Commit": sha, "ETag": f'"{blob_id(data)}"'}, data
        return 404, {}, {"error": f"the stand-in has no route {method} /{'/'.join(p)}"}


__all__ = ["HubStandIn", "blob_id"]
