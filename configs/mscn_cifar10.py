r"""MSCN (Masked Siamese ConvNets) on CIFAR-10; Jing, Zhu & LeCun,
arXiv 2206.07700.

Method "siamese" (maskssl/methods/siamese.py): ResNet-18 with the CIFAR stem
(512-d feature), a per-loss projector (width 2048, spec 2.2 small-scale
variant), a loss chosen by ``config.loss.name`` (simclr | barlow_twins |
vicreg, default vicreg), and the MSCN masking module switched by ONE flag,
``config.mscn.enabled``. All augmentation and masking runs on device inside
the jitted train step.

Masking (``config.mscn``, spec sec. 3; [R]/[A] provenance in
maskssl/masks/mscn.py): HPF (sigma = 5*32/224 = 0.71, k = 3, reflect
padding, / 0.08) on both views, view A -> J = 2 masked copies (per sample:
focal 0.2 / grid 0.24 / channel-wise 0.56; grid 4x4, ratio U[0.05, 0.25];
focal window round(200/224*32) = 29 px), fresh N(0, 0.25^2) noise fill, view
B unmasked (asymmetric). Evaluation inputs get the same HPF
(``mscn.hpf_at_eval=True``).

Variants (``--config=configs/mscn_cifar10.py[:variant]``):
  (none)   spec small-scale recipe on the embedded real sample (2,000 train /
           500 test images): batch 512, 800 epochs, LARS (base lr 0.3 x
           batch/256, wd 1e-4, 10 warm-up epochs, cosine). A GPU job.
  tfds     the same recipe on full TFDS cifar10 (50k/10k), prepared locally
           (``--config.data.tfds_data_dir=...``).
  compare  the equal-budget CPU comparison used for the reported numbers:
           ResNet-18 layout at width 8 (64-d feature), projector 256,
           batch 64, 120 steps, AdamW lr 2e-3 (LARS does not move in so few
           steps), J = 1 masked copy (so with and without masking cost the
           same number of forwards), kNN (k=20, t=0.07) and linear probe.
  quick    a smoke run (seconds to a minute on CPU): width 8, projector 64,
           batch 32, 6 steps, AdamW.
  reference  = tfds; tests/test_recipes.py checks it against the recipe.
  cpu      the CPU reproduction (benchmarks/reproduce_images.py): the 50k
           tar (--config.data.path=.../cifar10_full/train.tar, 5,000 held
           out), ResNet-18 at 1/8 width (64-d), projector 256, batch 256,
           J = 2, LARS lr 0.3 (1 warm-up epoch), 4 epochs (3.1 CPU-s/step
           on the loaded CPU, ~1.6 s on 2 idle cores: ~20 min; without
           masking ~2/3 of that): 0.45 % of the reference's 800 x 50k
           examples at ~1/64 of its FLOPs per image; probe 10 epochs; kNN
           k=20 and k=5 (``knn_k5``).
  + a loss (comma-joined, e.g. ``:cpu,simclr``): simclr | barlow_twins |
           vicreg; barlow_twins adds Barlow Twins' LARS group (biases / BN at
           0.0048 / 0.2 of the lr); --config.loss.name alone does not.

Ablations are overrides, e.g.:
  --config.mscn.enabled=False                       # plain siamese baseline
  --config.loss.name=simclr | barlow_twins | vicreg
  --config.mscn.hpf=False --config.mscn.hpf_input=imagenet_norm   # no HPF
  --config.mscn.fill=zero                           # no noise fill
  --config.mscn.kind_probs="(0.,1.,0.)"             # grid masks only
  --config.mscn.n_masked_views=1 / --config.mscn.mask_both_views=True
(Without the HPF the input is ImageNet-normalised so the noise std keeps its
meaning; with the HPF the input is the [0, 1] image high-passed / 0.08.)

Commands:
  python -m maskssl.main --config=configs/mscn_cifar10.py:quick --workdir=runs/mscn_quick
  python -m maskssl.main --config=configs/mscn_cifar10.py:compare --workdir=runs/mscn_cmp
  python -m maskssl.main --config=configs/mscn_cifar10.py:tfds --workdir=runs/mscn_c10
  python benchmarks/reproduce_images.py --task=cifar10   # all CIFAR :cpu arms
  python -m maskssl.tools.show_masks --config=configs/mscn_cifar10.py --out=runs/mscn_masks.png
  python benchmarks/mscn_mask_cost.py               # masking cost share (JSON)

Measured (2-core shared CPU, embedded sample 2,000 train / 500 test,
``:compare`` budget = 120 steps x batch 64, i.e. ~4 epochs; ResNet-18 layout
at width 8; kNN k=20 t=0.07 and linear probe (30 epochs), test top-1 %,
mean +- std over seeds 0/1/2; MSCN arms with HPF at eval):

  loss          no masking      MSCN (J=1)     MSCN -HPF      MSCN zero fill
  vicreg  kNN   28.4 +- 0.2     20.5 +- 0.6    28.7 +- 0.7    18.4 +- 1.9
          lin   30.0 +- 1.2     23.1 +- 2.1    31.2 +- 2.6    23.1 +- 1.5
  simclr  kNN   29.7 +- 0.3     20.4 +- 1.1
          lin   30.7 +- 0.6     22.6 +- 2.4
  barlow  kNN   27.5 +- 1.5     17.3 +- 1.8
          lin   29.8 +- 1.8     22.7 +- 1.2

At this tiny budget MSCN masking HURTS all three losses (-8 to -10 kNN
points); the loss comes from the 32-px HPF (k=3, sigma 0.71 removes the
colour/low-frequency content kNN relies on early): masking with noise fill
but without the HPF matches the baseline, and zero fill is worse than noise
fill (in line with the paper's noise-fill design). This does not test the
paper's claims (ImageNet low-shot, VOC/COCO after 100+ epochs).

Masking cost (benchmarks/mscn_mask_cost.py, CPU): crops + HPF + masks + noise
= 7.5 % of the step at width 8 / batch 128 / J=1, 0.23 % at width 64 /
batch 32 / J=2 (target <= 10 %).
"""
import ml_collections

from maskssl.data.base import LOADER_FIELDS

from maskssl.masks import mscn as mscn_lib

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
  opts = [o for o in (arg or "").split(",") if o]
  sizes = [o for o in opts if o in SIZES]
  losses = [o for o in opts if o in LOSSES]
  if len(sizes) + len(losses) != len(opts) or len(sizes) > 1 \
      or len(losses) > 1:
    raise ValueError(f"unknown variant {arg!r}; use at most one of {SIZES} "
                     f"and one of {LOSSES}, joined by a comma, or nothing")
  arg = "tfds" if sizes == ["reference"] else (sizes or [None])[0]
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

  c.data = dict(name="cifar10", source="tfds" if arg == "tfds" else
                "embedded", path="", tfds_data_dir="", tfds_name="cifar10",
                val_size=0, test_size=1000, split_seed=0, max_train=0,
                max_test=0, pretrain_split="pretrain",
                # input pipeline (threads, workers, bad_records, ...)
                **LOADER_FIELDS)

  c.model = dict(
      backbone="resnet18", stem="cifar",
      width=8 if small or cpu else 64,            # 1/8 width: 64-d
      stage_sizes=None, init_scheme="kaiming_fan_out",   # torchvision [O]
      zero_init_residual=True,                            # BT/VICReg code [O]
      compute_dtype="float32",
      projector_width={"quick": 64, "compare": 256, "cpu": 256}.get(arg,
                                                                    2048),
      projector_dims=None, projector_init="pytorch")

  c.loss = dict(name=(losses or ["vicreg"])[0], temperature=0.1, lambd=5e-3,
                bt_standardize="batchnorm", bt_eps=1e-5, sim_coeff=25.0,
                std_coeff=25.0, cov_coeff=1.0, vic_eps=1e-4)

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
    c.optim = dict(name="adamw", lr=2e-3, schedule="cosine",
                   warmup_steps=1 if arg == "quick" else 10, end_lr=0.0,
                   weight_decay=1e-4, clip_norm=0.0, b1=0.9, b2=0.999,
                   eps=1e-8)
  else:
    base_lr = 0.3 * c.batch_size / 256            # LARS recipe [O] (spec 5)
    # 10 warm-up epochs of 800; :cpu: 1 of its CPU_EPOCHS
    c.optim = dict(name="lars", lr=base_lr, schedule="cosine",
                   warmup_steps=(1 if cpu else 10) * spe,
                   end_lr=base_lr / 1000,
                   weight_decay=1e-4, momentum=0.9, trust_coefficient=1e-3,
                   clip_norm=0.0,
                   bias_lr=base_lr * BT_BIAS_LR_RATIO
                   if losses == ["barlow_twins"] else None)

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
