"""Machine JND (seed 003, Jin et al., "Just Noticeable Difference for Deep Machine Vision").

The largest change ``e`` of a photo ``x`` that classifiers tolerate without changing their
answer: a DMV-JND-NET ``e = E(x, c)`` guided by the merged class activation map ``c``
and trained without labels on eq. 7 (Loss1 + alpha Loss2 + beta Loss3), or the same
objective optimised per photo. Everything is judged on the saved 8-bit ``x + e``.

One library call per CLI subcommand:

* ``jndkit machine-jnd train`` -> :func:`train_jnd_net` then :func:`save_jnd_net`
* ``jndkit machine-jnd apply`` -> :func:`apply_jnd_net` (trained net) or
  :func:`optimise_jnd_per_image` (no training)
* ``jndkit machine-jnd eval``  -> :func:`evaluate_jnd_net` (or :func:`evaluate_jnd` for given ``e``)
"""

from .cam import cam, cam_and_logits, gap_linear_head, grad_cam, merged_cam, merged_cam_and_logits, normalise_map
from .data import (
    SHIPPED_PHOTOS,
    FolderImages,
    ImageSet,
    cifar10_images,
    folder_images,
    load_images,
    shipped_crops,
    shipped_photos,
    split_holdout,
)
from .evaluate import (
    equal_energy_noise,
    evaluate_jnd,
    evaluate_jnd_net,
    homogeneity_test,
    predictions,
    psnr,
    rca,
    white_noise_rca,
)
from .losses import (
    cam_softmax,
    jnd_objective,
    loss1_cross_entropy,
    loss2_magnitude,
    loss3_spatial,
    mean_abs_jnd,
    redundancy_target,
)
from .net import DMVJNDNet, bounded_perturbation, make_jnd_net
from .train import (
    CPU_CONFIG,
    PAPER_CONFIG,
    TrainConfig,
    apply_jnd_net,
    load_jnd_net,
    optimise_jnd_per_image,
    save_jnd_net,
    train_jnd_net,
)

__all__ = [
    "CPU_CONFIG", "PAPER_CONFIG", "SHIPPED_PHOTOS", "DMVJNDNet", "FolderImages", "ImageSet", "TrainConfig",
    "apply_jnd_net", "bounded_perturbation", "cam", "cam_and_logits", "cam_softmax", "cifar10_images",
    "equal_energy_noise", "evaluate_jnd", "evaluate_jnd_net", "folder_images", "gap_linear_head", "grad_cam",
    "homogeneity_test", "jnd_objective", "load_images", "load_jnd_net", "loss1_cross_entropy", "loss2_magnitude",
    "loss3_spatial", "make_jnd_net", "mean_abs_jnd", "merged_cam", "merged_cam_and_logits", "normalise_map",
    "optimise_jnd_per_image", "predictions", "psnr", "rca", "redundancy_target", "save_jnd_net", "shipped_crops",
    "shipped_photos", "split_holdout", "train_jnd_net", "white_noise_rca",
]
