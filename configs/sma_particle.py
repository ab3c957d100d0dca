r"""SMA on particle physics (HIGGS): self-guided masked pretraining, then
fine-tuning with a small labelled budget (spec: shared/specs/sma.md).

Data: the embedded real HIGGS sample (9,000 rows, shipped in the package;
6,500 pretraining rows, a 1,500-row labelled pool, 1,000 val, 1,500 test),
one token per scalar feature (28 tokens, z-scored). Full data:
``--config.data.source=tfds`` (TFDS ``higgs``, prepared locally) or
``--config.data.path=HIGGS.csv`` (``--config.data.label_column=first`` for
the UCI layout).

Commands:
  python -m maskssl.main --config=configs/sma_particle.py:quick   # < 3 min
  python -m maskssl.main --config=configs/sma_particle.py         # < 30 min
  # random-mask baseline (same counts), and the from-scratch baseline is
  # part of every fine-tune evaluation (inits=pretrained,scratch):
  python -m maskssl.main --config=configs/sma_particle.py \
      --config.mask.mask_mode=random --workdir=runs/sma_particle_random

Measured (2-core CPU shared with other jobs, load 4-17; pretraining 600
steps x 256 = ~24 epochs of the 6,500 pretraining rows, lr 1e-4, warm-up 60;
fine-tuning 1,000 labels, 300 steps x 128, lr 5e-4 cosine; test split at the
best-validation step; mean +- std over seeds 0/1/2):

  python -m maskssl.main --config=configs/sma_particle.py \
      --config.mask.mask_mode={sma,random} --config.total_steps=600 \
      --config.optim.warmup_steps=60 "--config.evals.finetune.num_labels=(1000,)"

  init                       test accuracy     test ROC-AUC
  SMA-pretrained             0.6653 +- 0.0040  0.7306 +- 0.0074
  random-mask pretrained     0.6669 +- 0.0080  0.7327 +- 0.0049
  from scratch               0.6647 +- 0.0145  0.7296 +- 0.0185

At this budget pretraining neither helps nor hurts (differences are inside
one std); the paper's 69.5 % at 1k labels pretrains on 10.5 M rows.
Pretraining throughput (benchmarks/sma_throughput.py, batch 256, idle 2-core
AMD EPYC, 2026-12-01): 1,020 examples/s best (251 ms/step, 2 CPU devices via
cpu_devices=auto; 935 ex/s with one device), 21.5 GFLOP/step, compile 5.5 s.
The :quick variant takes 116 s wall (idle machine). The default variant
(1,500 pretraining steps, then 2 label budgets x 2 inits x 3 seeds of 300
fine-tuning steps) took 24 min wall end to end (idle machine, 2026-12-01):
test accuracy / ROC-AUC at the best-validation step, mean +- std over seeds:
  100 labels:   SMA-pretrained 0.630 +- 0.024 / 0.652 +- 0.022,
                scratch        0.615 +- 0.012 / 0.653 +- 0.016;
  1,000 labels: SMA-pretrained 0.673 +- 0.012 / 0.735 +- 0.007,
                scratch        0.665 +- 0.015 / 0.730 +- 0.019,
                random-mask    0.667 +- 0.009 / 0.726 +- 0.007
  (random-mask arm: the random-mask command above with
  "--config.evals.finetune.num_labels=(1000,)"
  "--config.evals.finetune.inits=('pretrained',)", 10 min 55 s wall).
  SMA is the best of the three on both metrics at this budget, by less
  than one std.
"""
import ml_collections


def get_config(arg=None):
  quick = arg == "quick"
  if arg not in (None, "", "quick"):
    raise ValueError(f"unknown variant {arg!r}; use ':quick' or nothing")
  c = ml_collections.ConfigDict()
  c.method = "sma"
  c.seed = 0
  c.batch_size = 128 if quick else 256
  c.total_steps = 200 if quick else 1500
  c.num_epochs = 0.0
  c.log_every = 50 if quick else 100
  c.checkpoint_every = 100 if quick else 500
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  # CPU: one XLA:CPU device per core, batch split across them (this small
  # model's step is ~15 % faster than with intra-op threads on 2 cores;
  # see benchmarks/sma_throughput.py). No effect on GPU/TPU.
  c.cpu_devices = "auto"

  c.data = dict(name="higgs", source="embedded", path="", tfds_data_dir="",
                max_rows=0, split_seed=0, test_size=1500, val_size=1000,
                train_pool_size=1500, feature_norm="zscore",
                label_column="last", pretrain_split="pretrain")

  # HIGGS model of the released config: 128-d, layer 1 + 4 self-attention
  # layers, 8 heads, widening 1, decoder 128-d with 1 head.
  c.model = dict(
      input="continuous",  # "continuous" (one token per scalar) | "bytes"
      c_in=1, vocab_size=262, n_max=28,
      encoder_mode="transformer",  # "transformer" | "perceiver"
      embed_dim=128, latent_dim=128, num_latents=256,
      num_self_layers=4, self_heads=8, self_qk_dim=128, self_widening=1,
      cross_heads=8, cross_qk_dim=128, cross_widening=1,
      decoder_heads=1, decoder_qk_dim=128,
      head_dim=128, head_qk_dim=128, head_heads=1,
      hidden_dropout=0.0, attn_dropout=0.0, drop_path=0.0,
      # fine-tuning dropout of the reference HIGGS recipe (spec 5.2)
      finetune_hidden_dropout=0.1, finetune_attn_dropout=0.1,
      finetune_drop_path=0.1,
      compute_dtype="float32", compact=True, gather_impl="auto")

  c.mask = dict(
      mask_mode="sma",  # "sma" (attention-guided) | "random" (baseline)
      ratio=0.2, num_per_query=3, head_aggregation="random_mix",
      mask_self=True, mask_self_value="num_heads", mode="transformer",
      rho=1.0, curriculum_fraction=0.25)

  c.optim = dict(name="adamw", lr=1e-4 if not quick else 3e-4,
                 schedule="cosine", warmup_steps=150 if not quick else 20,
                 warmup_fraction=0.0, end_lr=0.0, weight_decay=0.01,
                 no_decay_names=(), clip_norm=1.0, b1=0.9, b2=0.999,
                 eps=1e-8, momentum=0.9, nesterov=False)
  c.parallel = dict(fsdp=False, fsdp_min_size=2 ** 14)

  c.evals = ml_collections.ConfigDict()
  c.evals.finetune = dict(
      type="finetune", enabled=True,
      num_labels=(1000,) if quick else (100, 1000),
      seeds=(0,) if quick else (0, 1, 2),
      inits=("pretrained", "scratch"),
      batch_size=128, total_steps=100 if quick else 300, num_epochs=0.0,
      eval_every=50 if quick else 100, log_every=50 if quick else 200,
      eval_batch_size=500, task="auto", verbose=True,
      optim=dict(name="adamw", lr=5e-4, schedule="cosine", warmup_steps=0,
                 warmup_fraction=0.1, end_lr=0.0, weight_decay=1e-5,
                 no_decay_names=(), clip_norm=1.0, b1=0.9, b2=0.999,
                 eps=1e-8, momentum=0.9, nesterov=False),
      model_overrides={})
  return c
