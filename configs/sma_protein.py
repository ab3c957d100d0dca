r"""SMA on proteins (amino-acid bytes): self-guided masked pretraining of a
Perceiver-mode encoder (latents cross-attend to up to 1,024 residues; the
mask is chosen from the cross-attention of layer 1), then full fine-tuning
for sequence classification (DeepLoc, 10 classes, accuracy) and sequence
regression (FLIP GB1 "sampled", Spearman rho), pretrained vs scratch.

Data (``maskssl.data.proteins``, name "proteins"): the byte tokenizer of
the molecule config over residue letters (not packed), ratio 0.15,
``num_per_query`` 4, head aggregation "mean", no ``mask_self`` (spec §2.7).
Default: compact embedded DeepLoc / GB1 subsets (resources/
PROTEINS_SOURCE.md); ``--config.data.data_dir=../shared/data`` reads the
full shared copies; ``--config.data.path=my.fasta`` pretrains on your FASTA
(multi-line records, lower case accepted, unknown letters -> X).

Variants: default (CPU-sized model, 3 fine-tune seeds), ``:quick`` (tiny,
~1 min on 2 CPU cores, seed 0), ``:reference`` (spec §2.7 sizes: E 512,
D 1024, 256 latents, 16+1 layers; for accelerators).

Commands:
  python -m maskssl.main --config=configs/sma_protein.py:quick
  python -m maskssl.main --config=configs/sma_protein.py
  python -m maskssl.main --config=configs/sma_protein.py \
      --config.mask.mask_mode=random --workdir=runs/sma_protein_random

Per-residue labelling (FLIP secondary structure) is not implemented.

Measured (2026-11-23, 2-core CPU shared with other jobs, load avg ~15; the
:quick model -- E 32, D 32, 16 latents, 1+1 layers -- with batch 16,
max_len 256, 300 pretraining steps on the embedded DeepLoc train subset,
then 150 fine-tune steps, batch 32, seeds 0/1/2, best-val step, test split):
  DeepLoc accuracy (lr 1e-4): pretrained 0.298 ± 0.000  scratch 0.298 ± 0.000
      (= the majority class "Nucleus" share of the test subset: no learning
      at this budget)
  GB1 Spearman   (lr 3e-4): pretrained 0.337 ± 0.012  scratch 0.332 ± 0.031
"""
import ml_collections


def get_config(arg=None):
  if arg not in (None, "", "quick", "reference"):
    raise ValueError(f"unknown variant {arg!r}; use ':quick', ':reference' "
                     "or nothing")
  quick, ref = arg == "quick", arg == "reference"
  c = ml_collections.ConfigDict()
  c.method = "sma"
  c.seed = 0
  c.batch_size = 8 if quick else (256 if ref else 16)
  c.total_steps = 5 if quick else (50_000 if ref else 600)
  c.num_epochs = 0.0
  c.log_every = 5 if quick else 100
  c.checkpoint_every = 1000 if not ref else 5000
  c.keep_checkpoints = 2
  c.async_checkpoints = True

  max_len = 128 if quick else (1024 if ref else 512)
  c.data = dict(name="proteins", task="deeploc", data_dir="", path="",
                max_len=max_len, val_fraction=0.1, split_seed=0, unknown="x",
                max_train=64 if quick else 0, max_eval=64 if quick else 0,
                max_pretrain=64 if quick else 0, pretrain_split="pretrain")

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
      mask_self=False, mask_self_value="num_heads", mode="perceiver",
      rho=None, curriculum_fraction=0.0)

  c.optim = dict(name="adamw", lr=3e-4, schedule="cosine",
                 warmup_steps=5000 if ref else (1 if quick else 60),
                 warmup_fraction=0.0, end_lr=0.0, weight_decay=0.01,
                 no_decay_names=(), clip_norm=1.0, b1=0.9, b2=0.999,
                 eps=1e-8, momentum=0.9, nesterov=False)
  c.parallel = dict(fsdp=False, fsdp_min_size=2 ** 14)

  c.evals = ml_collections.ConfigDict()
  for task, metric in (("deeploc", ""), ("gb1", "spearman")):
    c.evals[f"finetune_{task}"] = dict(
        type="finetune", enabled=True, num_labels=(0,),
        seeds=(0,) if quick else (0, 1, 2),
        inits=("pretrained", "scratch"),
        batch_size=8 if quick else 32,
        total_steps=5 if quick else (0 if ref else 400),
        num_epochs=30.0 if ref else 0.0,
        eval_every=5 if quick else 100, log_every=5 if quick else 200,
        eval_batch_size=128, task="auto", verbose=not quick,
        data_overrides=dict(task=task), select_metric=metric,
        optim=dict(name="adamw", lr=5e-5 if ref else 1e-4, schedule="cosine",
                   warmup_steps=1000 if ref else (1 if quick else 40),
                   warmup_fraction=0.0, end_lr=0.0, weight_decay=0.01,
                   no_decay_names=(), clip_norm=1.0, b1=0.9, b2=0.999,
                   eps=1e-8, momentum=0.9, nesterov=False),
        model_overrides={})
  return c
