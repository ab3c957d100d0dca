r"""SMA on proteins (amino-acid bytes): self-guided masked pretraining of a
Perceiver-mode encoder (latents cross-attend to up to 1,024 residues; the
mask is chosen from the cross-attention of layer 1), then full fine-tuning,
pretrained vs scratch: DeepLoc (10 classes, accuracy), FLIP GB1 (Spearman),
and with ``:cpu`` TAPE remote homology (1,195 folds, top-1 accuracy) and
TAPE stability (Spearman) on TAPE's own splits.

Data (``maskssl.data.proteins``): byte tokens over residue letters (not
packed), ratio 0.15, ``num_per_query`` 4, head aggregation "mean", no
``mask_self``. Default: compact embedded DeepLoc / GB1 subsets;
``--config.data.data_dir=../shared/data`` reads the full shared copies and
TAPE; ``--config.data.path=my.fasta`` pretrains on your FASTA;
``--config.data.test_path=FILE`` evaluates on your labelled file. Longer
sequences are cropped to ``max_len - 1`` residues (counted, reported).
``:cpu`` pretrains on the training sequences of all four tasks.

  python -m maskssl.main --config=configs/sma_protein.py:quick
  python -m maskssl.main --config=configs/sma_protein.py:cpu
  # random-mask baseline: --config.mask.mask_mode=random
  python benchmarks/reproduce_sma.py --domain=protein  # all arms, 3 seeds
Variants: quick, cpu, reference (spec sizes, for accelerators).
"""
import os

import ml_collections

from maskssl.data.base import LOADER_FIELDS

SHARED = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(
    __file__)), "..", "..", "shared", "data"))
# task -> (selection metric, :cpu fine-tune epochs, :cpu labelled cap)
_TASKS = {"deeploc": ("", 10.0, 0), "gb1": ("spearman", 10.0, 0),
          "remote_homology": ("", 3.0, 0),
          "stability": ("spearman", 2.0, 10_000)}
_TAPE = ("remote_homology", "stability")


def get_config(arg=None):
  if arg not in (None, "", "quick", "reference", "cpu"):
    raise ValueError(f"unknown variant {arg!r}; use ':quick', ':cpu', "
                     "':reference' or nothing")
  quick, ref, cpu = arg == "quick", arg == "reference", arg == "cpu"
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
  c.data = dict(name="proteins", task="deeploc",
                data_dir=SHARED if cpu else "", path="", test_path="",
                max_len=max_len, val_fraction=0.1, split_seed=0, unknown="x",
                max_train=64 if quick else 0, max_eval=64 if quick else 0,
                max_pretrain=64 if quick else 0, pretrain_split="pretrain",
                pretrain_tasks=tuple(_TASKS) if cpu else (),
                # input pipeline (threads, workers, bad_records, ...)
                **LOADER_FIELDS)

  e = 32 if quick else (512 if ref else 64)
  d = 32 if quick else (1024 if ref else 128)
  c.model = dict(
      input="bytes", c_in=1, vocab_size=262, n_max=max_len,
      encoder_mode="perceiver",
      embed_dim=e, latent_dim=d, num_latents=16 if quick else (256 if ref
                                                               else 64),
      num_self_layers=1 if quick else (16 if ref else 4),
      self_heads=2 if quick else 8, self_qk_dim=d if not ref else 256,
      self_widening=1,
      cross_heads=2 if quick else 8, cross_qk_dim=d if not ref else 256,
      cross_widening=1,
      decoder_heads=2 if quick else 8, decoder_qk_dim=e,
      head_dim=e, head_qk_dim=e, head_heads=2 if quick else 8,
      hidden_dropout=0.0, attn_dropout=0.0, drop_path=0.0,
      finetune_hidden_dropout=0.0, finetune_attn_dropout=0.0,
      finetune_drop_path=0.0 if quick else 0.1,
      compute_dtype="float32", compact=True, gather_impl="auto")

  c.mask = dict(
      mask_mode="sma", ratio=0.15, num_per_query=4, head_aggregation="mean",
      mask_self=False, mask_self_value="num_heads",
      rho=None, curriculum_fraction=0.0)

  c.optim = dict(name="adamw", lr=3e-4, schedule="cosine",
                 warmup_steps=5000 if ref else (1 if quick else 60),
                 warmup_fraction=0.0, end_lr=0.0, weight_decay=0.01,
                 no_decay_names=(), clip_norm=1.0, b1=0.9, b2=0.999,
                 eps=1e-8, momentum=0.9, nesterov=False)
  c.parallel = dict(fsdp=False, fsdp_min_size=2 ** 14)

  c.evals = ml_collections.ConfigDict()
  for task, (metric, cpu_epochs, cap) in _TASKS.items():
    overrides = dict(task=task)
    if cpu and cap:  # a CPU-sized share of TAPE stability's 53,614 labels
      overrides["max_train"] = cap
    c.evals[f"finetune_{task}"] = dict(
        # TAPE needs data.data_dir (set by :cpu; elsewhere enable by hand)
        type="finetune", every=0, enabled=cpu or task not in _TAPE,
        num_labels=(0,),
        seeds=(0,) if quick else (0, 1, 2),
        inits=("pretrained", "scratch"),
        batch_size=8 if quick else 32,
        total_steps=5 if quick else (0 if ref or cpu else 400),
        num_epochs=30.0 if ref else (cpu_epochs if cpu else 0.0),
        eval_every=5 if quick else (200 if cpu else 100),
        log_every=5 if quick else 200,
        eval_batch_size=128, task="auto", verbose=not quick,
        data_overrides=overrides, select_metric=metric,
        optim=dict(name="adamw", lr=5e-5 if ref else 1e-4, schedule="cosine",
                   warmup_steps=1000 if ref else (1 if quick else 40),
                   warmup_fraction=0.0, end_lr=0.0, weight_decay=0.01,
                   no_decay_names=(), clip_norm=1.0, b1=0.9, b2=0.999,
                   eps=1e-8, momentum=0.9, nesterov=False),
        model_overrides={})
  return c
