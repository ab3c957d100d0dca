r"""SMA on molecules (SMILES bytes): self-guided masked pretraining of a
transformer-mode encoder, then MoleculeNet fine-tuning on deterministic
Bemis–Murcko scaffold splits (80/10/10), pretrained vs scratch, 3 seeds.

Data (``maskssl.data.molecules``): byte tokens, pretraining rows pack SMILES
with SEP; corpus: the 7 shipped MoleculeNet tables, or
``--config.data.corpus=FILE`` (``:cpu``: MOSES, 1.58 M SMILES, from
../shared/data); val/test molecules of evaluated tasks are removed from it.
Tasks: BBBP, BACE, ClinTox, Tox21 (ROC-AUC), ESOL, FreeSolv, Lipophilicity
(RMSE). Own assay table: --config.data.task=classification|regression
--config.data.path=my.csv --config.data.label_columns=a,b,c (and
evals.*.data_overrides={}); details in config_history.md.

  python -m maskssl.main --config=configs/sma_molecule.py:quick
  python -m maskssl.main --config=configs/sma_molecule.py:cpu   # MOSES
  # random-mask baseline: --config.mask.mask_mode=random
  python benchmarks/reproduce_sma.py --domain=molecule  # all arms, 3 seeds
Variants: quick, cpu, reference (spec sizes, for accelerators).
"""
import os

import ml_collections

from maskssl.config_utils import load_sibling

common = load_sibling(__file__, "common")

# task -> fine-tune lr of the reference scripts (spec 5.2; ClinTox / Tox21
# are not in them: 1e-4 assumed)
_TASKS = {"bbbp": 1e-4, "bace": 3e-5, "clintox": 1e-4, "tox21": 1e-4,
          "esol": 1e-4, "freesolv": 1e-4, "lipo": 3e-5}
_QUICK_TASKS = ("bbbp", "esol")
MOSES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                     "shared", "data", "moses", "train.csv.gz")
VARIANTS = ("quick", "reference", "cpu")


def get_config(arg=None):
  opts = common.variants(arg, VARIANTS, exclusive=[VARIANTS])
  quick, ref, cpu = "quick" in opts, "reference" in opts, "cpu" in opts
  c = ml_collections.ConfigDict()
  c.method = "sma"
  c.seed = 0
  c.batch_size = 8 if quick else (128 if ref else 32)
  # :cpu: 12,000 x 32 rows ~ 0.85 of one MOSES pass (~40 min on 2 cores)
  c.total_steps = 5 if quick else (100_000 if ref else
                                   (12_000 if cpu else 1000))
  c.num_epochs = 0.0
  c.log_every = 5 if quick else 100
  c.checkpoint_every = 1000 if not ref else 5000
  c.keep_checkpoints = 2
  c.async_checkpoints = True

  max_len = 64 if quick else (512 if ref else 128)
  c.data = common.data(
      "moleculenet", corpus=os.path.normpath(MOSES) if cpu else "",
      exclude_eval_of=tuple(_QUICK_TASKS if quick else _TASKS),
      max_len=max_len, max_pretrain=64 if quick else 0)

  c.model = common.sma_model(
      32 if quick else (768 if ref else 128),
      input="bytes", n_max=max_len, num_latents=0,
      num_self_layers=1 if quick else (12 if ref else 4),
      self_heads=2 if quick else (12 if ref else 8),
      cross_heads=1,  # unused (transformer)
      # chemistry fine-tuning dropout (spec 5.2): attention 0.1 only
      finetune_hidden_dropout=0.0, finetune_attn_dropout=0.1,
      finetune_drop_path=0.0)

  c.mask = dict(
      mask_mode="sma",  # "sma" | "random" (same counts)
      ratio=0.3, num_per_query=3, head_aggregation="random_mix",
      mask_self=True, mask_self_value="num_heads",
      rho=1.0, curriculum_fraction=0.0)  # stored rho, schedule off (spec 3.3)

  c.optim = common.optim(
      lr=1e-4 if ref else 3e-4,
      warmup_steps=10_000 if ref else (1 if quick else 100),
      weight_decay=0.01, clip_norm=1.0)
  c.parallel = dict(fsdp=False, fsdp_min_size=2 ** 14)

  c.evals = ml_collections.ConfigDict()
  for task, lr in _TASKS.items():
    c.evals[f"finetune_{task}"] = common.sma_finetune(
        quick, enabled=not quick or task in _QUICK_TASKS,
        batch_size=8 if quick else 32,
        total_steps=5 if quick else 0,
        num_epochs=0.0 if quick else 40.0,
        eval_every=5 if quick else 100, log_every=5 if quick else 200,
        eval_batch_size=256, verbose=not quick,
        data_overrides=dict(task=task), select_metric="",
        optim=common.optim(lr=lr, warmup_steps=1 if quick else 50,
                           weight_decay=1e-3, clip_norm=1.0))
  return c
