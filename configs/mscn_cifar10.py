r"""MSCN (Masked Siamese ConvNets; Jing, Zhu & LeCun, arXiv 2206.07700) on
CIFAR-10, method "siamese": ResNet-18 (CIFAR stem), a per-loss projector,
``config.loss.name`` simclr | barlow_twins | vicreg (default), and the MSCN
masking (high-pass filter, focal / grid / channel masks, noise fill) switched
by ``config.mscn.enabled``; augmentation and masking run on device.

  python -m maskssl.main --config=configs/mscn_cifar10.py:quick --workdir=runs/mscn_quick
  python -m maskssl.main --config=configs/mscn_cifar10.py:compare --workdir=runs/mscn_cmp
  python -m maskssl.main --config=configs/mscn_cifar10.py:tfds --workdir=runs/mscn_c10
  python benchmarks/reproduce_images.py --task=cifar10   # all CIFAR :cpu arms
  python -m maskssl.tools.show_masks --config=configs/mscn_cifar10.py --out=runs/mscn_masks.png
Variants: at most one of quick, compare (equal-budget CPU comparison), tfds
(= reference), cpu; plus at most one loss (e.g. ``:cpu,barlow_twins``).
Ablations, masking details, history: benchmarks/results/config_history.md.

:compare (120 steps x 64, width 8), vicreg, test top-1 %, seeds 0/1/2:
          no masking    MSCN (J=1)    MSCN -HPF     MSCN zero fill
  kNN     28.4 +- 0.2   20.5 +- 0.6   28.7 +- 0.7   18.4 +- 1.9
  linear  30.0 +- 1.2   23.1 +- 2.1   31.2 +- 2.6   23.1 +- 1.5
"""
import ml_collections

from maskssl.config_utils import load_sibling
from maskssl.masks import mscn as mscn_lib

common = load_sibling(__file__, "common")

REF_TRAIN_SIZE = 50000
EMBEDDED_TRAIN_SIZE = 2000


SIZES = ("quick", "compare", "tfds", "reference", "cpu")   # at most one
LOSSES = ("simclr", "barlow_twins", "vicreg")   # + at most one of these
# :cpu -- CIFAR-10 tar (50k) with data.test_size=5000: 45,000 training images
CPU_TRAIN_SIZE, CPU_BATCH, CPU_EPOCHS, CPU_PROBE_EPOCHS = 45000, 256, 4, 10
# Barlow Twins' LARS group (facebookresearch/barlowtwins main.py): biases and
# BatchNorm at 0.0048 / 0.2 of the weights' lr.
BT_BIAS_LR_RATIO = 0.0048 / 0.2


def get_config(arg=None):
  opts = common.variants(arg, SIZES + LOSSES, exclusive=[SIZES, LOSSES])
  size = next((o for o in SIZES if o in opts), None)
  loss = next((o for o in LOSSES if o in opts), "vicreg")
  arg = "tfds" if size == "reference" else size
  cpu = arg == "cpu"
  small = arg in ("quick", "compare")
  c = ml_collections.ConfigDict()
  c.method = "siamese"
  c.seed = 0
  c.batch_size = {"quick": 32, "compare": 64, "cpu": CPU_BATCH}.get(arg, 512)
  train_size = (REF_TRAIN_SIZE if arg == "tfds" else
                CPU_TRAIN_SIZE if cpu else EMBEDDED_TRAIN_SIZE)
  spe = max(1, train_size // c.batch_size)
  epochs = CPU_EPOCHS if cpu else 800
  c.total_steps = {"quick": 6, "compare": 120}.get(arg, spe * epochs)
  c.num_epochs = 0.0
  c.log_every = {"quick": 2, "compare": 25}.get(arg, 50)
  c.checkpoint_every = {"quick": 6, "compare": 120, "cpu": spe}.get(arg, 1000)
  c.keep_checkpoints = 2
  c.async_checkpoints = True
  c.parallel = dict(fsdp=False)

  c.data = common.data("cifar10",
                       source="tfds" if arg == "tfds" else "embedded")

  c.model = dict(
      backbone="resnet18", stem="cifar",
      width=8 if small or cpu else 64,            # 1/8 width: 64-d
      stage_sizes=None, init_scheme="kaiming_fan_out",   # torchvision [O]
      zero_init_residual=True,                            # BT/VICReg code [O]
      compute_dtype="float32",
      projector_width={"quick": 64, "compare": 256, "cpu": 256}.get(arg,
                                                                    2048),
      projector_dims=None, projector_init="pytorch")

  c.loss = common.siamese_loss(loss)

  # Crops on device; photometric "none" is the spec default for MSCN [A]
  # (masking is the main augmentation); "simclr" adds colour jitter/gray.
  c.augment = dict(size=32, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0),
                   flip_p=0.5, photometric="none", jitter_p=0.8,
                   brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                   grayscale_p=0.2, mean=(0.485, 0.456, 0.406),
                   std=(0.229, 0.224, 0.225))

  c.mscn = mscn_lib.default_config(32)
  if small:
    c.mscn.n_masked_views = 1

  if small:
    # Tiny-budget runs: LARS (relative step lr * 1e-3 per step) barely moves
    # the weights in ~100 steps at batch 64, so AdamW is used instead [A].
    c.optim = common.optim(name="adamw", lr=2e-3,
                           warmup_steps=1 if arg == "quick" else 10,
                           weight_decay=1e-4)
  else:
    base_lr = 0.3 * c.batch_size / 256            # LARS recipe [O] (spec 5)
    # 10 warm-up epochs of 800; :cpu: 1 of its CPU_EPOCHS
    c.optim = common.optim(
        name="lars", lr=base_lr, warmup_steps=(1 if cpu else 10) * spe,
        end_lr=base_lr / 1000, weight_decay=1e-4,
        bias_lr=base_lr * BT_BIAS_LR_RATIO if loss == "barlow_twins"
        else None)

  c.evals = ml_collections.ConfigDict()
  # every=N (> 0) also runs an evaluator every N pretraining steps
  # (every_epochs=N: every N epochs). kNN monitor: the solo-learn / InstDisc
  # weighted vote, k=20, cosine, exp(sim / 0.07) [A]
  c.evals.knn = dict(type="knn", k=20, temperature=0.07, bank="current",
                     bank_split="train", test_split="test",
                     encode_batch_size=256, every=0, every_epochs=0)
  # Linear probe, VICReg protocol (spec 6 [A, O]): frozen eval-mode
  # backbone (HPF at eval), RandomResizedCrop(32) + flip per epoch, 100
  # epochs of SGD momentum 0.9, lr 0.3 cosine, wd 1e-6 (torch: on the bias
  # too), batch 256; test = the whole 32 px image (the 256 -> 224 centre
  # crop is the ImageNet rule). VICReg's head is a plain Linear
  # (norm="none"); here BatchNorm without affine comes first (the MAE head),
  # so lr 0.3 does not depend on the feature scale (~0.04 for this
  # zero-init-residual ResNet on HPF inputs). :quick: 512 training images,
  # 4 epochs of batch 64, BN running statistics as the cumulative average.
  # :compare keeps the fixed-feature probe (standardised, 30 epochs, lr
  # 0.1) its numbers above were measured with.
  c.evals.linear_probe = dict(
      type="linear_probe", every=0, augment=arg != "compare",
      norm="standardize" if arg == "compare" else "batchnorm",
      bn_momentum=None if arg == "quick" else 0.1, size=32,
      crop_scale=(0.08, 1.0), flip_p=0.5, test_crop=1.0,
      epochs={"quick": 4, "compare": 30}.get(arg, 100),
      batch_size=64 if arg == "quick" else 256,
      warmup_epochs=0, train_subset=512 if arg == "quick" else 0,
      encode_batch_size=256,
      optim=dict(name="sgd", lr=0.1 if arg == "compare" else 0.3,
                 momentum=0.9, weight_decay=0.0 if arg == "compare" else 1e-6,
                 decay_all=True, schedule="cosine", clip_norm=0.0))
  if cpu:
    c.data.test_size = 5000    # of the 50k tar (pass data.path)
    # The CPU budget (benchmarks/reproduce_images.py): also MetaMask's kNN
    # protocol (k=5, t=1), and a probe of CPU_PROBE_EPOCHS instead of 100.
    c.evals.knn_k5 = dict(c.evals.knn, k=5, temperature=1.0)
    c.evals.linear_probe.epochs = CPU_PROBE_EPOCHS
  return c
