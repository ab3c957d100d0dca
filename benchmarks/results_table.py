"""The README's Results section, rendered from benchmarks/results/reproduce_*.json.

    python benchmarks/results_table.py            # print the Markdown
    python benchmarks/results_table.py --write    # replace it in README.md

One row per task: every arm as mean ± std (n), the paired difference of the
method against its baseline with its 95 % interval, the budget and the
command. Numbers come only from the result files, so the README cannot
drift from what was measured.
"""
from __future__ import annotations

import argparse
import glob
import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN = "<!-- results:begin (benchmarks/results_table.py --write) -->"
END = "<!-- results:end -->"
BASELINES = ("scratch", "random_init")


def _fmt(a: dict) -> str:
  s = f"{a['mean']:.3f}"
  if a.get("n", 1) > 1:
    s += f" ± {a['std']:.3f}"
  return s + f" (n={a['n']})"


def _diffs(res: dict) -> str:
  out = []
  for k, d in res.items():
    if not (k.endswith(tuple(f"_minus_{b}" for b in
                             ("scratch", "random_init", "random_mask")))
            and isinstance(d, dict) and "mean" in d):
      continue
    s = f"{k.replace('_minus_', ' − ')} {d['mean']:+.3f}"
    if "ci95" in d:
      s += f" [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
    out.append(s)
  return "; ".join(out)


def table(paths) -> str:
  rows = [json.load(open(p)) for p in sorted(paths)]
  if not rows:
    return "No reproduction has finished yet.\n"
  lines = ["| task | metric | arms (mean ± std over seeds) | difference "
           "[95 % CI] | budget | command |", "|---|---|---|---|---|---|"]
  for r in rows:
    arms = r["arms"]
    order = [a for a in arms if a not in BASELINES] + [
        a for a in BASELINES if a in arms]
    arm_s = "<br>".join(f"{a}: {_fmt(arms[a])}" for a in order)
    b = r.get("budget", {})
    budget = []
    if "wall_minutes" in b:
      budget.append(f"{b['wall_minutes']} min")
    if "pretrain_steps" in b:
      budget.append(f"{b['pretrain_steps']} steps × {b.get('batch_size')}")
    elif "epochs" in b:
      budget.append(f"{b['epochs']} epochs")
    if "fraction_of_reference" in b:
      budget.append(f"{b['fraction_of_reference']:.2g} of reference")
    metric = r["metric"] + ("" if r.get("higher_is_better", True)
                            else " (lower is better)")
    lines.append(f"| {r['task']} | {metric} | {arm_s} | {_diffs(r)} | "
                 f"{', '.join(budget)} | `{r['command']}` |")
  return "\n".join(lines) + "\n"


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--write", action="store_true")
  p.add_argument("--results", default=os.path.join(REPO, "benchmarks",
                                                   "results"))
  args = p.parse_args()
  md = table(glob.glob(os.path.join(args.results, "reproduce_*.json")))
  if not args.write:
    print(md, end="")
    return
  path = os.path.join(REPO, "README.md")
  text = open(path).read()
  if BEGIN not in text or END not in text:
    raise SystemExit(f"{path}: no {BEGIN} ... {END} block to replace")
  head, rest = text.split(BEGIN, 1)
  tail = rest.split(END, 1)[1]
  with open(path, "w") as f:
    f.write(head + BEGIN + "\n" + md + END + tail)


if __name__ == "__main__":
  main()
