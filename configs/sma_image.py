r"""SMA on images (one token per pixel): self-guided masked pretraining of a
Perceiver-mode encoder on raw RGB pixels (linear embedding + learned
position, no patches), RandomResizedCrop (scale 0.2-1), then kNN and
linear-probe accuracy on frozen features (clearly labelled extras: the
reference protocol is full fine-tuning, spec §6).

Data (``maskssl.data.pixels``, name "cifar10_pixels"): an adapter over the
``cifar10`` module -- the embedded real CIFAR-10 sample by default (2,000
train / 500 test), ``--config.data.source=tfds`` (TFDS cifar10 prepared
locally), ``--config.data.source=npz --config.data.path=x.npz`` or
``--config.data.source=folder --config.data.path=DIR``. Images are resized
to ``data.image_size`` (CPU default 32 = 1,024 tokens), ImageNet-normalised
and flattened row-major; the crop is drawn offline (``data.num_crops``
views per image). Mask: ratio 0.5, ``num_per_query`` = N/64 (the spec's
576 for 36,864 tokens), mean head aggregation, MSE on masked pixels.

Variants: default (CPU-sized), ``:quick`` (8x8 pixels, tiny model, ~1 min
on 2 CPU cores), ``:reference`` (spec sizes: 192x192, E 256, D 1024, 512
latents, 6+1 layers, k 576; for accelerators with ImageNet-100 via folder).

Commands:
  python -m maskssl.main --config=configs/sma_image.py:quick
  python -m maskssl.main --config=configs/sma_image.py
  python -m maskssl.main --config=configs/sma_image.py \
      --config.mask.mask_mode=random --workdir=runs/sma_image_random

Measured (2026-11-23, 2-core CPU shared with other jobs, load avg ~15; the
:quick model -- E 16, D 32, 16 latents, 1+1 layers -- on 16x16 pixels (256
tokens, k 4), all 2,000 embedded train images x 1 offline crop, batch 32,
300 steps; kNN bank / probe train = 1,800 images (200 held out as val),
test = the 500 embedded test images; one seed):
  kNN top-1 (k 20, T 0.07):   pretrained 0.222   random-init encoder 0.242
  linear probe (30 epochs):   pretrained 0.252   random-init encoder 0.242
  (random-init numbers: benchmarks/sma_domains_throughput.py --probe_scratch)
"""
import ml_collections

from maskssl.data.base import LOADER_FIELDS


def get_config(arg=None):
  if arg not in (None, "", "quick", "reference"):
    raise ValueError(f"unknown variant {arg!r}; use ':quick', ':reference' "
                     "or nothing")
  quick, ref = arg == "quick", arg == "reference"
  size = 8 if quick else (192 if ref else 32)
  n = size * size
  c = ml_collections.ConfigDict()
  c.method = "sma"
  c.seed = 0
  c.batch_size = 8 if quick else (128 if ref else 32)
  c.total_steps = 5 if quick else (200_000 if ref else 1000)
  c.num_epochs = 0.0
  c.log_every = 5 if quick else 100
  c.checkpoint_every = 1000 if not ref else 5000
  c.keep_checkpoints = 2
  c.async_checkpoints = True

  c.data = dict(name="cifar10_pixels", source="embedded", path="",
                tfds_data_dir="", tfds_name="cifar10",
                val_size=40 if quick else 200,
                test_size=1000, split_seed=0, max_train=200 if quick else 0,
                max_test=100 if quick else 0, image_size=size,
                num_crops=1 if quick else 2, crop_scale=(0.2, 1.0),
                crop_seed=0, chunk=256, pretrain_split="pretrain",
                # input pipeline (threads, workers, bad_records, ...)
                **LOADER_FIELDS)

  e = 16 if quick else (256 if ref else 64)
  d = 32 if quick else (1024 if ref else 128)
  c.model = dict(
      input="continuous", c_in=3, vocab_size=262, n_max=n,
      encoder_mode="perceiver",
      embed_dim=e, latent_dim=d,
      num_latents=16 if quick else (512 if ref else 64),
      num_self_layers=1 if quick else (6 if ref else 4),
      self_heads=2 if quick else 8, self_qk_dim=d, self_widening=1,
      cross_heads=1, cross_qk_dim=d, cross_widening=1,
      decoder_heads=1, decoder_qk_dim=e,
      head_dim=d, head_qk_dim=d, head_heads=1,
      hidden_dropout=0.0, attn_dropout=0.0, drop_path=0.0,
      finetune_hidden_dropout=0.0, finetune_attn_dropout=0.0,
      finetune_drop_path=0.1,
      compute_dtype="float32", compact=True, gather_impl="auto")

  c.mask = dict(
      mask_mode="sma", ratio=0.5, num_per_query=max(1, n // 64),
      head_aggregation="mean", mask_self=False, mask_self_value="num_heads",
      rho=None, curriculum_fraction=0.0)

  c.optim = dict(name="adamw", lr=1e-4 if ref else 3e-4, schedule="cosine",
                 warmup_steps=5000 if ref else (1 if quick else 100),
                 warmup_fraction=0.0, end_lr=0.0, weight_decay=0.01,
                 no_decay_names=(), clip_norm=1.0, b1=0.9, b2=0.999,
                 eps=1e-8, momentum=0.9, nesterov=False)
  c.parallel = dict(fsdp=False, fsdp_min_size=2 ** 14)

  c.evals = ml_collections.ConfigDict()
  c.evals.knn = dict(type="knn", every=0, enabled=True,
                     k=20 if not quick else 5, temperature=0.07,
                     encode_batch_size=64 if quick else 128)
  c.evals.linear_probe = dict(
      type="linear_probe", every=0, enabled=True, epochs=5 if quick else 90,
      batch_size=64 if quick else 256, warmup_epochs=1 if quick else 10,
      augment=False, norm="standardize", test_crop=1.0,   # fixed features
      encode_batch_size=64 if quick else 128, seed=0)
  return c
