"""The run summary shows fine-tune arms side by side with their difference."""
from maskssl.run import format_table


def test_finetune_arms_side_by_side():
  res = {"n100/pretrained/best_auc": 0.65, "n100/pretrained/best_auc_std": 0.02,
         "n100/scratch/best_auc": 0.625, "n100/scratch/best_auc_std": 0.01,
         "n1000/random_mask/best_auc": 0.71, "n1000/pretrained/best_auc": 0.73,
         "n1000/scratch/best_auc": 0.72, "n100/pretrained/best_step": 7.0,
         "n100/pretrained/last_auc": 0.5}
  out = format_table(None, {"finetune": res}).splitlines()
  rows = [l.split() for l in out if l.strip().startswith(("100 ", "1000 "))]
  header = next(l for l in out if "metric" in l).split()
  # columns: pretrained first, then random_mask, then scratch
  assert header[2:5] == ["pretrained", "random_mask", "scratch"]
  assert rows[0][:4] == ["100", "auc", "0.6500", "±"]
  assert rows[0][-1] == "+0.0250"          # 0.65 - 0.625
  assert rows[1][0] == "1000" and rows[1][-1] == "+0.0100"
  assert "0.7100" in rows[1]
  assert not any("last_auc" in l or "best_step" in l for l in out)


def test_other_results_stay_a_flat_list():
  out = format_table(None, {"knn": {"top1": 0.5, "top1_std": 0.1}})
  assert "top1" in out and "0.5000 ± 0.1000" in out
