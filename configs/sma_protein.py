r"""SMA on proteins (amino-acid bytes): self-guided masked pretraining of a
Perceiver-mode encoder (latents cross-attend to up to 1,024 residues; the
mask is chosen from the cross-attention of layer 1), then full fine-tuning,
pretrained vs scratch: DeepLoc (10 classes, accuracy), FLIP GB1 (Spearman),
and with ``:cpu`` TAPE remote homology (1,195 folds, top-1 accuracy) and
TAPE stability (Spearman) on TAPE's own splits.

Data (``maskssl.data.proteins``): compact embedded DeepLoc / GB1 subsets by
default; ``--config.data.data_dir=../shared/data`` reads the full shared
copies and TAPE (``:cpu`` pretrains on the training sequences of all four
tasks); ``--config.data.path=my.fasta`` pretrains on your FASTA. More in
benchmarks/results/config_history.md.

  python -m maskssl.main --config=configs/sma_protein.py:quick
  python -m maskssl.main --config=configs/sma_protein.py:cpu
  # random-mask baseline: --config.mask.mask_mode=random
  python benchmarks/reproduce_sma.py --domain=protein  # all arms, 3 seeds
Variants: quick, cpu, reference (spec sizes, for accelerators).
"""
import os

import ml_collections

from maskssl.config_utils import load_sibling

common = load_sibling(__file__, "common")

SHARED = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(
    __file__)), "..", "..", "shared", "data"))
# task -> (selection metric, :cpu fine-tune epochs, :cpu labelled cap)
_TASKS = {"deeploc": ("", 10.0, 0), "gb1": ("spearman", 10.0, 0),
          "remote_homology": ("", 3.0, 0),
          "stability": ("spearman", 2.0, 10_000)}
_TAPE = ("remote_homology", "stability")
VARIANTS = ("quick", "reference", "cpu")


def get_config(arg=None):
  opts = common.variants(arg, VARIANTS, exclusive=[VARIANTS])
  quick, ref, cpu = "quick" in opts, "reference" in opts, "cpu" in opts
  c = ml_collections.ConfigDict()
  c.method = "sma"
  c.seed = 0
  c.batch_size = 8 if quick else (256 if ref else (32 if cpu else 16))
  c.total_steps = 5 if quick else (50_000 if ref else
                                   (6_000 if cpu else 600))
  c.num_epochs = 0.0
  c.log_every = 5 if quick else 100
  c.checkpoint_every = 1000 if not ref else 5000
  c.keep_checkpoints = 2
  c.async_checkpoints = True

  max_len = 128 if quick else (1024 if ref else 512)
  c.data = common.data(
      "proteins", data_dir=SHARED if cpu else "", max_len=max_len,
      max_train=64 if quick else 0, max_eval=64 if quick else 0,
      max_pretrain=64 if quick else 0,
      pretrain_tasks=tuple(_TASKS) if cpu else ())

  e = 32 if quick else (512 if ref else 64)
  d = 32 if quick else (1024 if ref else 128)
  heads = 2 if quick else 8
  c.model = common.sma_model(
      d, e, input="bytes", n_max=max_len, encoder_mode="perceiver",
      num_latents=16 if quick else (256 if ref else 64),
      num_self_layers=1 if quick else (16 if ref else 4),
      self_heads=heads, self_qk_dim=d if not ref else 256,
      cross_heads=heads, cross_qk_dim=d if not ref else 256,
      decoder_heads=heads, head_dim=e, head_qk_dim=e, head_heads=heads,
      finetune_hidden_dropout=0.0, finetune_attn_dropout=0.0,
      finetune_drop_path=0.0 if quick else 0.1)

  c.mask = dict(
      mask_mode="sma", ratio=0.15, num_per_query=4, head_aggregation="mean",
      mask_self=False, mask_self_value="num_heads",
      rho=None, curriculum_fraction=0.0)

  c.optim = common.optim(
      lr=3e-4, warmup_steps=5000 if ref else (1 if quick else 60),
      weight_decay=0.01, clip_norm=1.0)
  c.parallel = dict(fsdp=False, fsdp_min_size=2 ** 14)

  c.evals = ml_collections.ConfigDict()
  for task, (metric, cpu_epochs, cap) in _TASKS.items():
    overrides = dict(task=task)
    if cpu and cap:  # a CPU-sized share of TAPE stability's 53,614 labels
      overrides["max_train"] = cap
    c.evals[f"finetune_{task}"] = common.sma_finetune(
        # TAPE needs data.data_dir (set by :cpu; elsewhere enable by hand)
        quick, enabled=cpu or task not in _TAPE,
        batch_size=8 if quick else 32,
        total_steps=5 if quick else (0 if ref or cpu else 400),
        num_epochs=30.0 if ref else (cpu_epochs if cpu else 0.0),
        eval_every=5 if quick else (200 if cpu else 100),
        log_every=5 if quick else 200,
        eval_batch_size=128, verbose=not quick,
        data_overrides=overrides, select_metric=metric,
        optim=common.optim(
            lr=5e-5 if ref else 1e-4,
            warmup_steps=1000 if ref else (1 if quick else 40),
            weight_decay=0.01, clip_norm=1.0))
  return c
