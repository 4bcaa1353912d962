"""Learning curves of every recipes/ptbxl_cpu objective: the online k-NN monitor against the optimiser step, and
the step where each crosses its random-init reference (BENCHMARKS.md "Learning curves on PTB-XL").

    python benchmarks/learning_curves.py run [RECIPE ...]   # one run after another (OMP_NUM_THREADS=1)
    python benchmarks/learning_curves.py table              # the Markdown table and docs/images/curves_*.png

Each run is the recipe as shipped (design, batch, optimiser, augmentations) with ``[[eval]]`` left out (the
curve is the measurement), ``max_steps`` / ``time_budget_s`` from `PLAN` and the monitor `MONITOR`: k-NN
(k = 20) on 400 labelled superdiagnostic records of strat_fold 2 (patient-grouped), scored on half of them by
patient, trained on the other half (about 200 records) and on 20 % of it (about 40), the random-init reference
at step 0. Runs go to runs/curves/<recipe>.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ecgforge.app.report import crossing_step, monitor_curves, plot_training  # noqa: E402
from ecgforge.rundir import read_jsonl  # noqa: E402

OUT = ROOT / "runs" / "curves"
#: About the check-to-check spread of one monitor score (200 test records); a crossing whose last score is above
#: random init by less is marked with * (not resolved).
NOISE = 0.03
IMAGES = ROOT / "docs" / "images"
MONITOR = ('{every_steps = %d, task = "superdiagnostic", split = "train", n_records = 400, test_frac = 0.5, '
           'probes = ["knn", "linear"], k = 20, label_fractions = [0.2, 1.0]}')
#: recipe -> (max_steps, monitor every_steps, time budget in s). The recipes that beat random init at 300 steps
#: (BENCHMARKS.md) get a short curve to find their crossing; those that did not, up to 1000 steps within a time
#: budget (2 CPU cores shared by 8 engineers: about 70 minutes for the whole queue).
PLAN: dict[str, tuple[int, int, int]] = {
    "cmsc": (150, 15, 400), "three_kg_owncrop_norot": (150, 15, 400),
    "cpc": (150, 15, 400), "w2v_cmsc_rlm": (150, 15, 500), "adv_mask": (150, 15, 450),
    "swav": (1000, 25, 480), "moco": (1000, 25, 480), "wav2vec2": (1000, 25, 480), "byol": (1000, 25, 480),
    "three_kg": (1000, 25, 480), "simclr": (150, 15, 400),
}


def run(recipes: list[str]) -> None:
    for name in recipes or list(PLAN):
        steps, every, budget = PLAN[name]
        cmd = [sys.executable, "-m", "ecgforge", "run", f"recipes/ptbxl_cpu/{name}.toml", "--out", str(OUT / name),
               "--overwrite", "--set", "eval=[]", "--set", f"train.max_steps={steps}",
               "--set", f"train.time_budget_s={budget}", "--set", f"train.monitor={MONITOR % every}"]
        print(" ".join(cmd), flush=True)
        with open(OUT / f"{name}.log", "w") as log:
            subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)


def table() -> None:
    print("| recipe | steps run | s / step | monitor share | probe | random init (200 / 40 labelled) | "
          "last step (200 / 40) | above random from step (200 / 40) | batch embed std / erank, first → last | "
          "subset erank, random init → last |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in PLAN:
        rows = read_jsonl(OUT / name / "metrics" / "train.jsonl")
        train = [r for r in rows if "samples_per_s" in r]
        if not train:
            print(f"| {name} | not run | | | | | | | | |")
            continue
        curves = monitor_curves(rows)
        last = train[-1]
        steps = int(last["step"])
        mon_s = sum(r.get("monitor/seconds", 0.0) for r in rows)
        elapsed = float(last["elapsed_s"])
        per_step = (elapsed - mon_s) / steps
        stats = [r for r in rows if "embed/std" in r]
        embed = (f"{stats[0]['embed/std']:.2f} / {stats[0]['embed/erank']:.0f} → {stats[-1]['embed/std']:.2f} / "
                 f"{stats[-1]['embed/erank']:.0f}" if stats else "n/a")

        def cross(c: tuple[list[tuple[int, float]], float | None]) -> str:
            pts, ref = c
            if ref is None or not pts:
                return "n/a"
            s = crossing_step(pts, ref)
            if s is None:
                return f"not within {pts[-1][0]}"
            return f"{s}*" if pts[-1][1] - ref < NOISE else f"{s}"

        sub = [r["monitor/embed/erank"] for r in rows if "monitor/embed/erank" in r]
        ref = next((r["monitor/embed/erank/random"] for r in rows if "monitor/embed/erank/random" in r), None)
        subset = f"{ref:.0f} → {sub[-1]:.0f}" if sub and ref is not None else "n/a"
        for i, probe in enumerate(("knn", "linear")):
            full, part = (curves.get(f"monitor/{p}/superdiagnostic/macro_auroc", ([], None))
                          for p in (probe, f"{probe}_0.2"))
            refs = " / ".join(f"{c[1]:.3f}" if c[1] is not None else "n/a" for c in (full, part))
            ends = " / ".join(f"{c[0][-1][1]:.3f}" if c[0] else "n/a" for c in (full, part))
            head = f"| {name} | {steps} | {per_step:.2f} | {mon_s / elapsed:.0%} |" if i == 0 else "| | | | |"
            print(f"{head} {probe} | {refs} | {ends} | {cross(full)} / {cross(part)} | {embed if i == 0 else ''} | "
                  f"{subset if i == 0 else ''} |")
        plot_training(rows, IMAGES / f"curves_{name}.png", f"ptbxl_cpu/{name}.toml: online probes (superdiagnostic)")
    overview()


def overview() -> None:
    """docs/images/curves_overview.png: per probe, every objective's score minus its random-init reference
    against the step (above 0: better than random init)."""
    import matplotlib.pyplot as plt

    probes = ["knn", "knn_0.2", "linear", "linear_0.2"]
    fig, axes = plt.subplots(1, len(probes), figsize=(18.0, 4.2), sharey=True)
    for ax, probe in zip(axes, probes, strict=True):
        for name in PLAN:
            rows = read_jsonl(OUT / name / "metrics" / "train.jsonl")
            pts, ref = monitor_curves(rows).get(f"monitor/{probe}/superdiagnostic/macro_auroc", ([], None))
            if pts and ref is not None:
                i = list(PLAN).index(name)  # 11 recipes, more than 10 default colours: tab20's dark hues, then light
                colour = plt.cm.tab20((2 * i % 20 + 2 * i // 20) / 20)
                ax.plot([s for s, _ in pts], [v - ref for _, v in pts], marker="o", ms=2, lw=1.2, label=name,
                        color=colour)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_title(f"{probe}: macro AUROC − random init")
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
    axes[-1].legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(IMAGES / "curves_overview.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    if sys.argv[1:2] == ["run"]:
        OUT.mkdir(parents=True, exist_ok=True)
        run(sys.argv[2:])
    elif sys.argv[1:2] == ["table"]:
        table()
    else:
        sys.exit(__doc__)
