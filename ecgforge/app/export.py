"""``ecgforge export``: a run's encoder as a folder to share as is, loadable by ``ecgforge.load_encoder(DIR)``.

The folder holds ``encoder.safetensors`` and ``encoder.json`` (copied byte for byte, so the weights' hash in
``encoder.json`` still holds), ``results.json`` when the run has one, and a ``README.md`` model card: what the
encoder is, the input contract it refuses to break, the recipe it was trained with, the data, and the run's
evaluation table. A fairseq-signals ``.pt`` checkpoint can be exported too (converted to safetensors, with
the assumed fairseq-signals contract), after which it loads without fairseq or pickles.

An encoder that starts from a released foundation model (``encoder.json`` ``derived_from``, its encoder kind,
or a released checkpoint's name: ``data.pretraining_sets``) carries that model's licence: the card's front
matter ``license`` is the model's (``cc-by-nc-4.0`` for HuBERT-ECG and ST-MEM) and a Licence section says what
it allows and what the weights were trained on.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ecgforge.app.leakage import derived_from
from ecgforge.data.pretraining_sets import Checkpoint, licence_line, pretraining_table
from ecgforge.errors import UserError
from ecgforge.evaluation.rows import ResultRow
from ecgforge.fsio import atomic_dir, atomic_write_text
from ecgforge.rundir import Results, RunDir


class ExportError(UserError):
    """An export that cannot be made (no encoder, destination occupied); one line."""


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def eval_table(rows: list[ResultRow]) -> str:
    """Markdown table of results rows: mean ± sd of each row's primary metric over seeds, per setting."""
    groups: dict[tuple[Any, ...], list[ResultRow]] = defaultdict(list)
    for row in rows:
        groups[(row.kind, row.task, row.init, row.label_fraction, tuple(row.conditions.items()), row.split)].append(row)
    lines = ["| protocol | task | init | label fraction | condition | split | metric | value | seeds | test records |",
             "|---|---|---|---:|---|---|---|---:|---:|---:|"]
    for (kind, task, init, frac, cond, split), rs in groups.items():
        metric = rs[0].primary
        vals = [v for r in rs if (v := r.value()) is not None]
        if not vals:
            value = "n/a"
        elif len(vals) == 1:
            ci = rs[0].ci95.get(metric)
            value = f"{vals[0]:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci and None not in ci else "")
        else:
            value = f"{np.mean(vals):.4f} ± {np.std(vals, ddof=1):.4f}"
        condition = ", ".join(f"{k} {v}" for k, v in cond) or "-"
        n_test = rs[0].n_test_records if rs[0].n_test_records is not None else ""
        lines.append(f"| {kind} | {task} | {init} | {frac:g} | {condition} | {split} | {metric} | {value} | "
                     f"{len(rs)} | {n_test} |")
    return "\n".join(lines)


#: Model card tags every export carries (the Hub's search facets); the encoder kind and objective are added.
BASE_TAGS = ("ecgforge", "ecg", "electrocardiogram", "biosignals", "self-supervised-learning")


def origin(meta: dict[str, Any]) -> Checkpoint | None:
    """The released foundation model an encoder (its ``encoder.json``) derives from, or None."""
    derived = meta.get("derived_from") if isinstance(meta.get("derived_from"), dict) else {}
    return pretraining_table().identify(derived.get("init"), None, meta)


def licence_section(model: Checkpoint) -> list[str]:
    """The model card's Licence section for an encoder derived from ``model``."""
    table = pretraining_table()
    lines = ["## Licence", "", licence_line(model) + " This export's weights are a derivative of them, so that "
             f"licence applies to it (front matter `license: {model.licence_id}`)."]
    if not model.commercial:
        lines += ["", f"**Non-commercial:** {model.licence} does not permit commercial use of these weights."]
    lines += ["", f"{model.name} was trained on {table.names(model.trained_on)}; an evaluation on records of "
              "these datasets may be optimistic. Sources: " + "; ".join(model.sources) + "."]
    return lines


def card_metadata(meta: dict[str, Any], *, name: str, results: Results | None,
                  cache_spec: dict[str, Any] | None) -> dict[str, Any]:
    """The model card's YAML front matter (the Hub's metadata): ``library_name: ecgforge``, tags, datasets and a
    ``model-index`` with one result per evaluation setting of the exported (``pretrained``) encoder.

    Each result is the mean over seeds of a protocol x task x label fraction x condition group, with every
    metric the rows report (primary first); the random-initialisation baselines stay in the card's table
    only, since the model-index describes this model.
    """
    cfg = meta.get("config", {})
    tags = list(BASE_TAGS) + [t for t in (cfg.get("kind"), meta.get("pretrained")) if t]
    source = (cache_spec or {}).get("source", {}).get("kind")
    data: dict[str, Any] = {"library_name": "ecgforge", "pipeline_tag": "feature-extraction",
                            "tags": list(dict.fromkeys(tags))}
    if (model := origin(meta)) is not None:  # the weights' licence, where they derive from a released model
        data = {"license": model.licence_id, **data}
        data["tags"] = list(dict.fromkeys([*data["tags"], model.id]))
    if source:
        data["datasets"] = [source]
    groups: dict[tuple[Any, ...], list[ResultRow]] = defaultdict(list)
    for row in results.rows if results is not None else []:
        if row.init == "pretrained":
            groups[(row.kind, row.task, row.label_fraction, tuple(row.conditions.items()), row.split)].append(row)
    entries = []
    for (kind, task, frac, cond, split), rs in groups.items():
        names = [rs[0].primary] + sorted(k for k in rs[0].metrics if k != rs[0].primary)
        metrics = []
        for metric in names:
            vals = [v for r in rs if (v := r.value(metric)) is not None and np.isfinite(v)]
            if vals:
                metrics.append({"type": metric, "value": round(float(np.mean(vals)), 6), "name": metric,
                                "args": {"seeds": len(vals)}})
        if not metrics:
            continue
        condition = "".join(f", {k} {v}" for k, v in cond)
        args = {"protocol": kind, "label_fraction": frac, **dict(cond)}
        entries.append({
            "task": {"type": task, "name": f"{kind} on {task} ({frac * 100:g}% of the labels{condition})"},
            "dataset": {"type": source or "unknown", "name": (cache_spec or {}).get("name", source or "unknown"),
                        "split": split, "args": args},
            "metrics": metrics,
        })
    if entries:
        data["model-index"] = [{"name": name, "results": entries}]
    return data


def front_matter(data: dict[str, Any]) -> str:
    """``data`` as a YAML front matter block (``---`` lines included), block style, keys in their given order."""
    import yaml  # PyYAML: keys YAML 1.1 reads as booleans (on, yes) are quoted by the library

    return "---\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False) + "---\n"


def model_card(meta: dict[str, Any], *, name: str, folder: str, recipe_text: str | None, results: Results | None,
               env: dict[str, Any] | None, cache_spec: dict[str, Any] | None) -> str:
    """The README.md of an export (Markdown, opened by YAML front matter: see ``card_metadata``)."""
    cfg = meta.get("config", {})
    lines = [
        front_matter(card_metadata(meta, name=name, results=results, cache_spec=cache_spec)),
        f"# {name}: {cfg.get('kind', 'encoder')} ECG encoder",
        "",
        f"An ECG encoder exported by ecgforge {meta.get('ecgforge_version', '?')}"
        + (f", pretrained with `{meta['pretrained']}`" if meta.get("pretrained") else "")
        + (f" ({meta['source']})" if meta.get("source") else "") + ".",
        "",
        "```python",
        "import ecgforge",
        f'enc = ecgforge.load_encoder("{folder}")  # '
        + ("from the Hub (pip install \'ecgforge[hub]\')" if folder.startswith("hf://") else "this folder")
        + "; eval mode, weights checked",
        "x = enc.preprocess(signal, fs_hz, lead_names)   # signal (leads, T) in the units below",
        f"z = enc(x)                                     # (1, {meta.get('embed_dim', 'D')})",
        "```",
        "",
        f"or `ecgforge embed {folder} --cache CACHE.h5 --out embeddings.h5` for a whole cache."
        + ("" if folder.startswith("hf://") else " On the Hugging Face Hub (after `ecgforge push "
           f"{folder} --repo ORG/NAME`) the path is `hf://ORG/NAME[@REVISION]`."),
        "",
        "## Input contract",
        "",
        "Loading refuses data that breaks it (no silent resampling or lead reordering).",
        "",
        "| field | value |",
        "|---|---|",
        f"| sampling rate | {meta.get('fs_hz')} Hz |",
        f"| window | {meta.get('window_s')} s |",
        f"| leads (in this order) | {' '.join(meta.get('leads', []))} |",
        f"| units | {meta.get('units', '')} |",
        f"| normalisation | {meta.get('normalisation', '')} |",
        f"| embedding size | {meta.get('embed_dim', '')} |",
    ]
    if meta.get("assumed"):
        lines += ["", "The checkpoint did not store its contract: the values above are fairseq-signals' defaults."]
    if (model := origin(meta)) is not None:
        lines += ["", *licence_section(model)]
    lines += ["", "## Architecture", "", "```json", json.dumps(cfg, indent=2), "```"]
    lines += ["", "## Data", ""]
    if env or cache_spec:
        if env:
            lines.append(f"- cache: `{env.get('cache')}` (spec hash `{env.get('cache_spec_hash')}`)")
            lines.append(f"- trained on: {env.get('device_name', env.get('device', '?'))}, "
                         f"world size {env.get('world_size', 1)}, precision {env.get('precision', '?')}, "
                         f"torch {env.get('torch', '?')}")
        if cache_spec:
            src = {k: v for k, v in cache_spec.get("source", {}).items() if k != "path"}
            lines.append(f"- source: `{json.dumps(src)}`")
            lines.append(f"- signal: `{json.dumps(cache_spec.get('signal', {}))}`")
    else:
        lines.append("Not recorded.")
    lines += ["", "## Evaluation", ""]
    if results is not None and results.rows:
        recipe, seed = results.recipe or "", "" if results.seed is None else results.seed
        lines += [f"From the run's results.json (recipe `{recipe}`, seed {seed}); "
                  "values are test-split scores, 95% bootstrap CI in brackets where one seed ran.", "",
                  eval_table(results.rows)]
    else:
        lines.append("The run has no evaluation results.")
    if recipe_text:
        lines += ["", "## Recipe", "", "As resolved (defaults and overrides applied; rerunnable with `ecgforge run`):",
                  "", "```toml", recipe_text.rstrip(), "```"]
    lines += ["", "## Provenance", "",
              f"- recipe hash: `{meta.get('recipe_hash', 'n/a')}`",
              f"- weights sha256: `{meta.get('weights_sha256', 'n/a')}`", ""]
    return "\n".join(lines)


def export(src: str | Path, out: str | Path, *, overwrite: bool = False, hub_path: str | None = None) -> Path:
    """Export a run directory (or a fairseq-signals ``.pt``) to ``out``; atomic, verified by a strict load.

    ``hub_path`` (``hf://ORG/NAME``): where the export is going (``ecgforge push``), named in the card's
    loading example instead of the folder.

    Returns:
        ``out`` as a Path.
    """
    from ecgforge.encoder_files import is_fairseq_checkpoint, load_encoder_weights, save_encoder

    src, out = Path(src), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ExportError(f"{out}: exists and is not empty; pass --overwrite to replace it")
    if src.resolve() == out.resolve():
        raise ExportError(f"{out}: the export folder must differ from the run directory")
    encoder, meta = load_encoder_weights(src)  # refuses missing/unexpected keys before anything is written
    run_dir = RunDir(src.parent if src.is_file() else src)
    results = run_dir.read_results() if not is_fairseq_checkpoint(src) else None
    env = _read_json(run_dir.env_json) if not is_fairseq_checkpoint(src) else None
    recipe_text = None
    for toml in (run_dir.resolved_toml, run_dir.recipe_toml):
        if not is_fairseq_checkpoint(src) and toml.is_file():
            recipe_text = toml.read_text(encoding="utf-8")
            break
    cache_spec = None
    if env and env.get("cache") and Path(env["cache"]).is_file():
        from ecgforge.data.cache import Cache

        try:
            cache_spec = Cache(env["cache"]).spec
        except UserError:
            cache_spec = None
    name = meta.get("recipe") or (src.stem if src.is_file() else src.name)
    with atomic_dir(out) as tmp:
        if is_fairseq_checkpoint(src):
            from ecgforge.encoders.wav2vec2 import Wav2Vec2Config

            contract = {k: v for k, v in meta.items() if k not in ("format", "format_version", "ecgforge_version",
                                                                    "config", "embed_dim")}
            if (derived := derived_from(str(src))) is not None:  # ECG-FM by its file name, kept for later exports
                contract["derived_from"] = derived
            save_encoder(encoder, Wav2Vec2Config(**meta["config"]), tmp, contract)
            meta = json.loads((tmp / "encoder.json").read_text())
        else:
            for f in ("encoder.safetensors", "encoder.json"):
                shutil.copy2(run_dir.path / f, tmp / f)
        if results is not None:
            shutil.copy2(run_dir.results_json, tmp / "results.json")  # as the run wrote it
        atomic_write_text(tmp / "README.md", model_card(meta, name=str(name), folder=hub_path or out.name,
                                                        recipe_text=recipe_text,
                                                        results=results, env=env, cache_spec=cache_spec))
    return out
