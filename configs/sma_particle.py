r"""SMA on particle physics (HIGGS): self-guided masked pretraining, then
fine-tuning with 100 / 1,000 labels, pretrained vs from scratch.

Data (shipped): 9,000 real HIGGS rows (1,000 val, 1,500 test, a 1,500-row
labelled pool) + 14,988 unlabelled H2O rows: 21,488 pretraining rows, 28
z-scored scalar tokens. Full data: --config.data.source=tfds or
--config.data.path=HIGGS.csv; own test set: --config.data.test_path=FILE.

  python -m maskssl.main --config=configs/sma_particle.py:quick   # ~3 min
  python -m maskssl.main --config=configs/sma_particle.py         # default
  python benchmarks/reproduce_sma.py --domain=particle  # :cpu, sma /
      # random_mask / scratch x 3 fine-tune seeds -> benchmarks/results/
      # reproduce_sma_higgs_n{100,1000}.json
Variants (comma-joined): quick, cpu (6,000 pretraining steps), short_ft (the
earlier 300-step lr 5e-4 cosine fine-tune instead of the reference recipe).

Measured with short_ft, 1,500 pretraining steps on the 6,500 sample rows,
1,000 labels, 3 seeds (test at best val; 2026-12-01, 2-core CPU):
  init           accuracy         ROC-AUC
  SMA            0.673 +- 0.012   0.735 +- 0.007
  random mask    0.667 +- 0.009   0.726 +- 0.007
  scratch        0.665 +- 0.015   0.730 +- 0.019
"""
import ml_collections

from maskssl.data.base import LOADER_FIELDS


VARIANTS = ("quick", "cpu", "short_ft")


def get_config(arg=None):
  opts = {o for o in (arg or "").split(",") if o}
  if opts - set(VARIANTS):
    raise ValueError(f"unknown variant {arg!r}; use any of {VARIANTS} "
                     "joined by commas (e.g. ':cpu' or ':quick'), or nothing")
  quick, cpu = "quick" in opts, "cpu" in opts
  # Fine-tuning: the reference recipe (run_higgs_classification.sh: lr 3e-5
  # constant, no warm-up, 200 epochs, batch 128, wd 1e-5, dropout 0.1), or
  # the earlier short recipe (300 steps, lr 5e-4 cosine; :quick uses it).
  short_ft = quick or "short_ft" in opts
  c = ml_collections.ConfigDict()
  c.method = "sma"
  c.seed = 0
  c.batch_size = 128 if quick else 256
  # :cpu: ~70 epochs of the 21,488 pretraining rows (~30 min on 2 cores).
  c.total_steps = 200 if quick else (6000 if cpu else 1500)
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
                label_column="last", pretrain_split="pretrain",
                # + the 14,988 shipped H2O HIGGS rows, unlabelled
                pretrain_extra="embedded", test_path="",
                # input pipeline (threads, workers, bad_records, ...)
                **LOADER_FIELDS)

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
      mask_self=True, mask_self_value="num_heads",
      rho=1.0, curriculum_fraction=0.25)

  c.optim = dict(name="adamw", lr=1e-4 if not quick else 3e-4,
                 schedule="cosine",
                 warmup_steps=20 if quick else (600 if cpu else 150),
                 warmup_fraction=0.0, end_lr=0.0, weight_decay=0.01,
                 no_decay_names=(), clip_norm=1.0, b1=0.9, b2=0.999,
                 eps=1e-8, momentum=0.9, nesterov=False)
  c.parallel = dict(fsdp=False, fsdp_min_size=2 ** 14)

  c.evals = ml_collections.ConfigDict()
  c.evals.finetune = dict(
      type="finetune", every=0, enabled=True,
      num_labels=(1000,) if quick else (100, 1000),
      seeds=(0,) if quick else (0, 1, 2),
      inits=("pretrained", "scratch"),
      batch_size=128,
      total_steps=(100 if quick else 300) if short_ft else 0,
      num_epochs=0.0 if short_ft else 200.0,
      eval_every=50, log_every=50 if quick else 200,
      eval_batch_size=500, task="auto", verbose=True,
      optim=dict(name="adamw", lr=5e-4 if short_ft else 3e-5,
                 schedule="cosine" if short_ft else "constant",
                 warmup_steps=0, warmup_fraction=0.1 if short_ft else 0.0,
                 end_lr=0.0, weight_decay=1e-5,
                 no_decay_names=(), clip_norm=1.0, b1=0.9, b2=0.999,
                 eps=1e-8, momentum=0.9, nesterov=False),
      model_overrides={})
  return c
