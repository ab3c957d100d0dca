"""Recipe test: each image config's ``:reference`` variant against a table of
the official recipe values, with every difference on an explicit deviation
list (one-line reason each). A drifting config value fails the test.

Sources (``SRC_*``) name the official code / paper each value was read from.
MSCN has no public code: its small-scale recipe is the recipe of the
plugged-in losses (SimCLR / Barlow Twins / VICReg code) scaled to
CIFAR-10 / ResNet-18, marked "assumed" where nothing official exists.
"""
import math
import os

import numpy as np
import pytest

from maskssl.config_utils import load_config_file
from maskssl.masks import mscn as mscn_lib
from maskssl.models import vit as vit_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---- sources ---------------------------------------------------------------
MM = "MetaMask official code (lionellee9089/MetaMask@7d405f5), CIFAR-10 demo"
MM_AUG = "lightly 1.0.8 SimCLRCollateFunction(input_size=32, gaussian_blur=0)"
MM_KNN = "lightly 1.0.8 BenchmarkModule (kNN monitor), MetaMask README"
MM_ASSUMED = "assumed (MetaMask paper App. A.4 not readable; SimCLR-style)"
MSCN_SMALL = ("assumed small-scale MSCN recipe (Jing et al. 2022 gives no "
              "CIFAR recipe; LARS as the plugged-in losses' official code)")
MSCN_MASK = ("jiachenzhu/RandomMask (HPF k=13, sigma=5 at 224 px, /0.08, "
             "noise 0.25; 7x7 grid) scaled to 32 px")
MSCN_PAPER = "Jing, Zhu & LeCun, arXiv 2206.07700 (asymmetric, multi-mask)"
BT = "facebookresearch/barlowtwins main.py (LARS groups 0.2 / 0.0048)"
VIC = "facebookresearch/vicreg main_vicreg.py / VICReg paper sec. 4"
SIMCLR = "google-research/simclr (temperature 0.1)"
VIC_LIN = "facebookresearch/vicreg evaluate.py (linear probe)"
KNN_A = "assumed kNN monitor (InstDisc / solo-learn weighted vote)"
SD = "irsLu/SD-MAE@3ec3383 README PCam pretraining command"
SD_CODE = "irsLu/SD-MAE@3ec3383 run_mae_pretraining.py / modeling_pretrain.py"
SD_FT = "irsLu/SD-MAE@3ec3383 README + run_class_finetuning.py defaults"
SD_LIN = "MAE main_linprobe.py defaults (SD-MAE linear probe)"

CIFAR_TRAIN, PCAM_TRAIN = 50000, 262144


def _get(cfg, path):
  node = cfg
  for part in path.split("."):
    node = node[part]
  return node


def _spe(cfg, n):
  return n // int(cfg.batch_size)


# Derived quantities: name -> fn(cfg, train_size). Recipes are stated in
# epochs and per-256 learning rates; the configs hold steps and actual lrs.
DERIVED = {
    "epochs": lambda c, n: c.total_steps / _spe(c, n),
    "warmup_epochs": lambda c, n: c.optim.warmup_steps / _spe(c, n),
    "base_lr_per_256": lambda c, n: c.optim.lr * 256 / c.batch_size,
    "end_lr_over_lr": lambda c, n: c.optim.end_lr / c.optim.lr,
    "bias_lr_over_lr": lambda c, n: (c.optim.bias_lr or c.optim.lr)
                                    / c.optim.lr,
    "mscn.hpf_kernel_32px": lambda c, n: mscn_lib.resolve_hpf(c.mscn, 32)[0],
    "mscn.hpf_sigma_32px": lambda c, n: mscn_lib.resolve_hpf(c.mscn, 32)[1],
    "mscn.focal_window_32px": lambda c, n: mscn_lib.focal_size(c.mscn, 32,
                                                               32)[0],
    "vit.encoder": lambda c, n: tuple(vit_lib.model_kwargs(c.model)[k] for k
                                      in ("enc_dim", "enc_depth",
                                          "enc_heads")),
    "vit.decoder": lambda c, n: tuple(vit_lib.model_kwargs(c.model)[k] for k
                                      in ("dec_dim", "dec_depth",
                                          "dec_heads")),
    "finetune.lr_per_256": lambda c, n: (c.evals.finetune.optim.lr * 256
                                         / c.evals.finetune.batch_size),
    "finetune.warmup_epochs": lambda c, n: (
        c.evals.finetune.optim.warmup_steps
        / (n // c.evals.finetune.batch_size)),
    "linear_probe.lr_per_256": lambda c, n: (
        c.evals.linear_probe.optim.lr * 256
        / c.evals.linear_probe.batch_size),
    "metamask.schedule_epochs": lambda c, n: c.metamask.epochs,
}

# ---- official recipes: config -> field -> (value, source) -----------------
METAMASK = {
    "seed": (1, MM),
    "batch_size": (512, MM),
    "epochs": (800, MM),
    "metamask.steps_per_epoch": (CIFAR_TRAIN // 512, MM + " (drop_last)"),
    "metamask.schedule_epochs": (800, MM),
    "model.backbone": ("resnet18", MM),
    "model.stem": ("cifar", MM),
    "model.stem_relu": (False, MM + " (stem rebuilt without its ReLU)"),
    "model.width": (64, MM),
    "model.bt_features": ((2048, 2048, 2048), MM),
    "model.cl_features": ((2048, 256), MM),
    "optim.name": ("sgd", MM),
    "optim.lr": (1e-3, MM),
    "optim.momentum": (0.9, MM),
    "optim.weight_decay": (5e-4, MM),
    "optim.decay_all": (True, MM + " (wd on BN and biases too)"),
    "optim.schedule": ("cosine_epoch", MM + " (per-epoch cosine, no warm-up)"),
    "metamask.mask_lr": (1e-3, MM),
    "metamask.mask_momentum": (0.9, MM),
    "metamask.mask_weight_decay": (5e-4, MM),
    "metamask.mask_param": ("sigmoid", MM),
    "metamask.enable_meta": (True, MM),
    "metamask.meta_grad": ("finite_difference", MM + " (DARTS estimate)"),
    "metamask.fd_r": (0.01, MM),
    "metamask.w_cl": (10.0, MM),
    "metamask.bt_lambda": (5e-3, MM),
    "metamask.bt_eps": (0.0, MM),
    "metamask.temperature": (0.07, MM + " (hard-coded)"),
    "augment.size": (32, MM_AUG),
    "augment.scale": ((0.08, 1.0), MM_AUG),
    "augment.ratio": ((3 / 4, 4 / 3), MM_AUG),
    "augment.flip_p": (0.5, MM_AUG),
    "augment.jitter_p": (0.8, MM_AUG),
    "augment.brightness": (0.4, MM_AUG),
    "augment.contrast": (0.4, MM_AUG),
    "augment.saturation": (0.4, MM_AUG),
    "augment.hue": (0.1, MM_AUG),
    "augment.grayscale_p": (0.2, MM_AUG),
    "augment.mean": ((0.485, 0.456, 0.406), MM_AUG),
    "augment.std": ((0.229, 0.224, 0.225), MM_AUG),
    "evals.knn.k": (5, MM_KNN),
    "evals.knn.temperature": (1.0, MM_KNN),
    "evals.knn.every_epochs": (1, MM_KNN + " (after every epoch)"),
    "evals.knn.bank": ("previous", MM_KNN + " (bank from the previous "
                       "epoch's end, Lightning 1.5 hook order)"),
    "evals.linear_probe.epochs": (100, MM_ASSUMED),
    "evals.linear_probe.batch_size": (512, MM_ASSUMED),
    "evals.linear_probe.optim.lr": (0.1, MM_ASSUMED),
    "evals.linear_probe.optim.momentum": (0.9, MM_ASSUMED),
    "evals.linear_probe.optim.weight_decay": (0.0, MM_ASSUMED),
    "evals.linear_probe.augment": (True, MM_ASSUMED + " (crop + flip)"),
}
METAMASK_DEV = {
    "metamask.meta_grad": (
        "exact", "exact hypergradient by default (FD is ~2 % off at lr 1e-3);"
        " meta_grad=finite_difference reproduces the reference"),
}

MSCN = {
    "batch_size": (512, MSCN_SMALL),
    "epochs": (800, MSCN_SMALL),
    "model.backbone": ("resnet18", MSCN_SMALL + " (CIFAR stem)"),
    "model.stem": ("cifar", MSCN_SMALL),
    "model.width": (64, MSCN_SMALL),
    "model.projector_width": (2048, MSCN_SMALL + " (8192 at ImageNet scale)"),
    "model.zero_init_residual": (True, BT + "; " + VIC),
    "optim.name": ("lars", BT + "; " + VIC),
    "base_lr_per_256": (0.3, MSCN_SMALL),
    "optim.weight_decay": (1e-4, MSCN_SMALL),
    "optim.momentum": (0.9, BT),
    "optim.trust_coefficient": (1e-3, BT),
    "optim.schedule": ("cosine", BT),
    "warmup_epochs": (10, BT + "; " + VIC),
    "end_lr_over_lr": (1e-3, BT + " (cosine to base/1000)"),
    "bias_lr_over_lr": (1.0, VIC + " (one lr; BT only has a bias group)"),
    "loss.name": ("vicreg", MSCN_SMALL + " (VICReg framework)"),
    "loss.sim_coeff": (25.0, VIC),
    "loss.std_coeff": (25.0, VIC),
    "loss.cov_coeff": (1.0, VIC),
    "loss.vic_eps": (1e-4, VIC),
    "loss.temperature": (0.1, SIMCLR),
    "loss.lambd": (5e-3, "Zbontar et al. 2021 sec. 3 (code default "
                         "0.0051)"),
    "loss.bt_standardize": ("batchnorm", BT + " (BatchNorm1d, affine=False)"),
    "loss.bt_eps": (1e-5, BT + " (BatchNorm1d eps)"),
    "augment.size": (32, MSCN_SMALL),
    "augment.scale": ((0.08, 1.0), MSCN_SMALL),
    "augment.flip_p": (0.5, MSCN_SMALL),
    "augment.photometric": ("none", MSCN_PAPER + " (masking is the main "
                            "augmentation)"),
    "mscn.enabled": (True, MSCN_PAPER),
    "mscn.hpf": (True, MSCN_PAPER),
    "mscn.hpf_input": ("unit", MSCN_MASK),
    "mscn.hpf_scale": (0.08, MSCN_MASK),
    "mscn.hpf_kernel_32px": (3, MSCN_MASK),
    "mscn.hpf_sigma_32px": (5.0 * 32 / 224, MSCN_MASK),
    "mscn.grid": (4, MSCN_MASK),
    "mscn.ratio_lo": (0.05, MSCN_MASK),
    "mscn.ratio_hi": (0.25, MSCN_MASK),
    "mscn.focal_window_32px": (29, MSCN_MASK + " (200/224 of the side)"),
    "mscn.kind_probs": ((0.2, 0.24, 0.56), MSCN_MASK),
    "mscn.fill": ("noise", MSCN_MASK),
    "mscn.noise_std": (0.25, MSCN_MASK),
    "mscn.mask_both_views": (False, MSCN_PAPER),
    "mscn.n_masked_views": (2, MSCN_PAPER + " (number assumed)"),
    "mscn.hpf_at_eval": (True, "WACV saliency-masking code (HPF at linear "
                               "evaluation)"),
    "evals.knn.k": (20, KNN_A),
    "evals.knn.temperature": (0.07, KNN_A),
    "evals.linear_probe.epochs": (100, VIC_LIN),
    "evals.linear_probe.batch_size": (256, VIC_LIN),
    "evals.linear_probe.optim.lr": (0.3, VIC_LIN),
    "evals.linear_probe.optim.momentum": (0.9, VIC_LIN),
    "evals.linear_probe.optim.weight_decay": (1e-6, VIC_LIN),
    "evals.linear_probe.augment": (True, VIC_LIN + " (RandomResizedCrop + "
                                   "flip)"),
    "evals.linear_probe.norm": ("none", VIC_LIN + " (plain Linear)"),
    "evals.linear_probe.test_crop": (0.875, VIC_LIN + " (Resize 256, "
                                     "CenterCrop 224)"),
}
MSCN_DEV = {
    "evals.linear_probe.norm": (
        "batchnorm", "BatchNorm without affine before the Linear (MAE's probe"
        " head) so lr 0.3 does not depend on the ~0.04 feature scale"),
    "evals.linear_probe.test_crop": (
        1.0, "32-px CIFAR test images are used whole; 256 -> 224 is the "
        "ImageNet rule"),
}
# The Barlow Twins arm: LARS with the bias / BatchNorm group of the official
# code, its 0.0048 / 0.2 ratio applied to the small-scale lr.
MSCN_BT = dict(MSCN, **{
    "loss.name": ("barlow_twins", BT),
    "bias_lr_over_lr": (0.0048 / 0.2, BT + " (--learning-rate-biases)"),
})
MSCN_SIMCLR = dict(MSCN, **{"loss.name": ("simclr", SIMCLR)})

SDMAE = {
    "seed": (0, SD),
    "batch_size": (1024, SD + " (4 GPUs x 256)"),
    "epochs": (100, SD),
    "vit.encoder": ((384, 12, 6), SD_CODE + " (small_patch16_224)"),
    "vit.decoder": ((192, 4, 3), SD_CODE + " (small_patch16_224)"),
    "model.image_size": (224, SD + " (96 px patches upsampled)"),
    "model.patch_size": (16, SD_CODE),
    "model.mlp_ratio": (4.0, SD_CODE),
    "model.compute_dtype": ("float16", SD + " (fp16 AMP + GradScaler)"),
    "sdmae.mask_ratio": (0.6, SD),
    "sdmae.sd_weight": (0.2, SD_CODE + " (script default p)"),
    "sdmae.teacher_temp": (0.04, SD_CODE),
    "sdmae.student_temp": (0.1, SD_CODE),
    "sdmae.center_momentum": (0.9, SD_CODE),
    "sdmae.center_on": ("probs", SD_CODE + " (centre of probabilities)"),
    "sdmae.teacher_stop_grad": (False, SD_CODE + " (no stop-gradient)"),
    "sdmae.head_hidden": (2048, SD_CODE),
    "sdmae.head_bottleneck": (256, SD_CODE),
    "sdmae.head_out": (4096, SD_CODE),
    "sdmae.alpha_visible": (0.0, SD_CODE + " (masked patches only)"),
    "sdmae.augment": (True, SD_CODE + " (RandomResizedCrop, no flip)"),
    "sdmae.crop_scale": ((0.08, 1.0), SD_CODE),
    "sdmae.crop_ratio": ((3 / 4, 4 / 3), SD_CODE),
    "optim.name": ("adamw", SD_CODE),
    "base_lr_per_256": (6e-4, SD + " (--lr 0.0006, scaled by batch/256)"),
    "warmup_epochs": (5, SD),
    "optim.schedule": ("cosine", SD_CODE + " (per-iteration cosine)"),
    "optim.end_lr": (1e-5, SD_CODE + " (min_lr)"),
    "optim.weight_decay": (0.05, SD_CODE),
    "optim.b1": (0.9, SD_CODE),
    "optim.b2": (0.999, SD_CODE),
    "optim.eps": (1e-8, SD_CODE),
    "optim.clip_norm": (0.0, SD_CODE + " (no clipping)"),
    "optim.no_decay_names": (("q_bias", "v_bias", "mask_token"), SD_CODE),
    "finetune.drop_path": (0.1, SD_FT),
    "finetune.init_scale": (0.001, SD_FT),
    "evals.finetune.batch_size": (1024, SD_FT),
    "evals.finetune.num_epochs": (100.0, SD_FT + " (README; code 30)"),
    "finetune.lr_per_256": (1e-3, SD_FT),
    "finetune.warmup_epochs": (5, SD_FT),
    "evals.finetune.optim.end_lr": (1e-6, SD_FT),
    "evals.finetune.optim.weight_decay": (0.05, SD_FT),
    "evals.finetune.optim.b2": (0.999, SD_FT),
    "evals.finetune.layer_decay": (0.75, SD_FT),
    "evals.finetune.rand_augment": ("rand-m9-mstd0.5-inc1", SD_FT),
    "evals.finetune.reprob": (0.25, SD_FT),
    "evals.finetune.mixup": (0.8, SD_FT),
    "evals.finetune.cutmix": (1.0, SD_FT),
    "evals.finetune.mixup_switch_prob": (0.5, SD_FT),
    "evals.finetune.smoothing": (0.1, SD_FT),
    "evals.finetune.two_class": (True, SD_FT + " (2-class soft-target CE)"),
    "evals.linear_probe.norm": ("batchnorm", SD_LIN + " (affine=False)"),
    "evals.linear_probe.bn_eps": (1e-6, SD_LIN),
    "evals.linear_probe.epochs": (90, SD_LIN),
    "evals.linear_probe.warmup_epochs": (10, SD_LIN),
    "evals.linear_probe.batch_size": (512, SD_LIN),
    "linear_probe.lr_per_256": (0.1, SD_LIN),
    "evals.linear_probe.optim.momentum": (0.9, SD_LIN),
    "evals.linear_probe.optim.weight_decay": (0.0, SD_LIN),
    "evals.linear_probe.test_crop": (0.875, SD_LIN + " (Resize 256 / "
                                     "CenterCrop 224)"),
}
SDMAE_DEV = {
    "model.compute_dtype": (
        "bfloat16", "bf16 compute with float32 params and loss instead of "
        "fp16 AMP (no loss scaler needed)"),
}
MAE = dict(SDMAE, **{"sdmae.sd_weight": (0.0, "MAE = SD-MAE without the "
                                         "distillation term (the paper's "
                                         "MAE baseline, same recipe)")})

# config[:variant] -> (table, deviations, training-set size of the recipe)
RECIPES = {
    "metamask_cifar10.py:reference": (METAMASK, METAMASK_DEV, CIFAR_TRAIN),
    "mscn_cifar10.py:reference": (MSCN, MSCN_DEV, CIFAR_TRAIN),
    "mscn_cifar10.py:reference,barlow_twins": (MSCN_BT, MSCN_DEV,
                                               CIFAR_TRAIN),
    "mscn_cifar10.py:reference,simclr": (MSCN_SIMCLR, MSCN_DEV, CIFAR_TRAIN),
    "sdmae_pcam.py:reference": (SDMAE, SDMAE_DEV, PCAM_TRAIN),
    "mae_pcam.py:reference": (MAE, SDMAE_DEV, PCAM_TRAIN),
}


def _value(cfg, field, n):
  if field in DERIVED:
    return DERIVED[field](cfg, n)
  return _get(cfg, field)


def _same(a, b) -> bool:
  if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
    a, b = tuple(a or ()), tuple(b or ())
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
  if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) \
      or isinstance(b, str) or a is None or b is None:
    return a == b
  return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def compare(cfg, table, deviations, n) -> list[str]:
  """Differences between a built config and the official table that are not
  on the deviation list (or deviation entries that no longer hold)."""
  problems = []
  for field, (official, source) in table.items():
    try:
      got = _value(cfg, field, n)
    except (KeyError, AttributeError) as e:
      problems.append(f"{field}: missing from the config ({e})")
      continue
    if field in deviations:
      dev, _ = deviations[field]
      if _same(got, official):
        problems.append(f"{field}: now matches the official {official!r}; "
                        "drop the deviation entry")
      elif not _same(got, dev):
        problems.append(f"{field}: {got!r}, neither the official "
                        f"{official!r} ({source}) nor the listed deviation "
                        f"{dev!r}")
    elif not _same(got, official):
      problems.append(f"{field}: {got!r} != official {official!r} "
                      f"({source})")
  for field in deviations:
    if field not in table:
      problems.append(f"deviation {field!r} has no official value")
  return problems


def _build(name):
  path, _, variant = name.partition(":")
  return load_config_file(os.path.join(REPO, "configs", path) + ":" + variant)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_reference_variant_matches_official_recipe(name):
  table, deviations, n = RECIPES[name]
  assert compare(_build(name), table, deviations, n) == []


def test_every_entry_has_a_source_and_every_deviation_a_reason():
  for name, (table, deviations, _) in RECIPES.items():
    for field, (_, source) in table.items():
      assert isinstance(source, str) and len(source) > 10, (name, field)
      assert "specs" not in source, (name, field)
    for field, (_, reason) in deviations.items():
      assert isinstance(reason, str) and len(reason) > 10, (name, field)


def test_drift_is_caught():
  name = "metamask_cifar10.py:reference"
  table, deviations, n = RECIPES[name]
  cfg = _build(name)
  with cfg.unlocked():
    cfg.optim.lr = 2e-3                      # drifts from 1e-3
    cfg.metamask.meta_grad = "first_order"   # neither official nor deviation
    cfg.total_steps = cfg.total_steps // 2   # 400 epochs
  got = compare(cfg, table, deviations, n)
  assert [p.split(":")[0] for p in got] == ["epochs", "optim.lr",
                                            "metamask.meta_grad"]
  assert "neither the official" in got[2]


def test_stale_deviation_is_caught():
  name = "sdmae_pcam.py:reference"
  table, deviations, n = RECIPES[name]
  cfg = _build(name)
  with cfg.unlocked():
    cfg.model.compute_dtype = "float16"
  got = compare(cfg, table, deviations, n)
  assert got == ["model.compute_dtype: now matches the official 'float16'; "
                 "drop the deviation entry"]


def test_reference_bt_bias_group_reaches_the_optimiser():
  """The Barlow Twins reference arm gives biases / BN 0.0048 / 0.2 of the
  weights' LARS lr (checked through the built optimiser, not the dict)."""
  import jax
  import jax.numpy as jnp
  from maskssl import optim
  cfg = _build("mscn_cifar10.py:reference,barlow_twins")
  o = dict(cfg.optim)
  o.update(schedule="constant", weight_decay=0.0, momentum=0.0)
  tx, _ = optim.make(o, 10)
  params = {"Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}}
  grads = jax.tree.map(jnp.ones_like, params)
  upd, _ = tx.update(grads, tx.init(params), params)
  # kernel: LARS trust ratio (||p|| / ||g|| = 1) x 1e-3 x lr; bias: lr x ratio
  np.testing.assert_allclose(upd["Dense_0"]["kernel"],
                             -cfg.optim.lr * 1e-3, rtol=1e-5)
  np.testing.assert_allclose(upd["Dense_0"]["bias"],
                             -cfg.optim.lr * 0.0048 / 0.2, rtol=1e-5)
