r"""SMA on particle physics (HIGGS): self-guided masked pretraining, then
fine-tuning with 100 / 1,000 labels, pretrained vs from scratch.

Data (shipped): 9,000 real HIGGS rows + 14,988 unlabelled H2O rows, 21,488
pretraining rows of 28 z-scored scalar tokens. Full data:
--config.data.source=tfds or --config.data.path=HIGGS.csv.

  python -m maskssl.main --config=configs/sma_particle.py:quick   # ~3 min
  python -m maskssl.main --config=configs/sma_particle.py         # default
  python benchmarks/reproduce_sma.py --domain=particle  # :cpu x 3 seeds
Variants (comma-joined): quick, cpu (6,000 pretraining steps), short_ft (the
earlier 300-step lr 5e-4 cosine fine-tune instead of the reference recipe).

:cpu test ROC-AUC, 3 fine-tune seeds (benchmarks/results/
reproduce_sma_higgs_n{100,1000}.json; history: config_history.md there):
  labels   SMA              random mask      scratch
  100      0.660 +- 0.003   0.689 +- 0.005   0.643 +- 0.030
  1,000    0.754 +- 0.004   0.737 +- 0.003   0.741 +- 0.006
"""
import ml_collections

from maskssl.config_utils import load_sibling

common = load_sibling(__file__, "common")


def get_config(arg=None):
  opts = common.variants(arg, ("quick", "cpu", "short_ft"))
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

  # + the 14,988 shipped H2O HIGGS rows, unlabelled
  c.data = common.data("higgs", pretrain_extra="embedded")

  # HIGGS model of the released config (the schema's defaults): 128-d,
  # layer 1 + 4 self-attention layers, 8 heads, widening 1, decoder 128-d
  # with 1 head; the reference HIGGS fine-tuning dropout (spec 5.2).
  c.model = common.sma_model(
      128, finetune_hidden_dropout=0.1, finetune_attn_dropout=0.1,
      finetune_drop_path=0.1)

  c.mask = dict(
      mask_mode="sma",  # "sma" (attention-guided) | "random" (baseline)
      ratio=0.2, num_per_query=3, head_aggregation="random_mix",
      mask_self=True, mask_self_value="num_heads",
      rho=1.0, curriculum_fraction=0.25)

  c.optim = common.optim(
      lr=1e-4 if not quick else 3e-4,
      warmup_steps=20 if quick else (600 if cpu else 150),
      weight_decay=0.01, clip_norm=1.0)
  c.parallel = dict(fsdp=False, fsdp_min_size=2 ** 14)

  c.evals = ml_collections.ConfigDict()
  c.evals.finetune = common.sma_finetune(
      quick, num_labels=(1000,) if quick else (100, 1000), batch_size=128,
      total_steps=(100 if quick else 300) if short_ft else 0,
      num_epochs=0.0 if short_ft else 200.0,
      eval_every=50, log_every=50 if quick else 200,
      eval_batch_size=500, verbose=True,
      optim=common.optim(
          lr=5e-4 if short_ft else 3e-5,
          schedule="cosine" if short_ft else "constant",
          warmup_fraction=0.1 if short_ft else 0.0, weight_decay=1e-5,
          clip_norm=1.0))
  return c
