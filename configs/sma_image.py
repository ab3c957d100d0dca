r"""SMA on images (one token per pixel): self-guided masked pretraining of a
Perceiver-mode encoder on raw RGB pixels (linear embedding + learned
position, no patches), then kNN and linear-probe accuracy on frozen features
(extras: the reference protocol is full fine-tuning, spec §6). Data:
``cifar10_pixels`` (``maskssl.data.pixels``), the embedded CIFAR-10 sample
by default; tfds / npz / folder via ``--config.data.source``.

  python -m maskssl.main --config=configs/sma_image.py:quick
  python -m maskssl.main --config=configs/sma_image.py
  python -m maskssl.main --config=configs/sma_image.py \
      --config.mask.mask_mode=random --workdir=runs/sma_image_random
Variants: default (CPU-sized, 32x32 pixels), quick (8x8 pixels, tiny model,
~1 min), reference (spec sizes: 192x192, E 256, D 1024, 512 latents).

:quick model on 16x16 pixels, 300 steps, 1 seed (2026-11-23; setup in
benchmarks/results/config_history.md):
                    pretrained   random-init encoder
  kNN top-1         0.222        0.242
  linear probe      0.252        0.242
"""
import ml_collections

from maskssl.config_utils import load_sibling

common = load_sibling(__file__, "common")

VARIANTS = ("quick", "reference")


def get_config(arg=None):
  opts = common.variants(arg, VARIANTS, exclusive=[VARIANTS])
  quick, ref = "quick" in opts, "reference" in opts
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

  # images resized to image_size, ImageNet-normalised, flattened row-major;
  # num_crops offline RandomResizedCrop views (scale 0.2-1) per image
  c.data = common.data(
      "cifar10_pixels", val_size=40 if quick else 200,
      max_train=200 if quick else 0, max_test=100 if quick else 0,
      image_size=size, num_crops=1 if quick else 2, chunk=256)

  e = 16 if quick else (256 if ref else 64)
  d = 32 if quick else (1024 if ref else 128)
  c.model = common.sma_model(
      d, e, c_in=3, n_max=n, encoder_mode="perceiver",
      num_latents=16 if quick else (512 if ref else 64),
      num_self_layers=1 if quick else (6 if ref else 4),
      self_heads=2 if quick else 8, cross_heads=1,
      finetune_hidden_dropout=0.0, finetune_attn_dropout=0.0,
      finetune_drop_path=0.1)

  # ratio 0.5, num_per_query = N/64 (the spec's 576 for 36,864 tokens)
  c.mask = dict(
      mask_mode="sma", ratio=0.5, num_per_query=max(1, n // 64),
      head_aggregation="mean", mask_self=False, mask_self_value="num_heads",
      rho=None, curriculum_fraction=0.0)

  c.optim = common.optim(
      lr=1e-4 if ref else 3e-4,
      warmup_steps=5000 if ref else (1 if quick else 100),
      weight_decay=0.01, clip_norm=1.0)
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
