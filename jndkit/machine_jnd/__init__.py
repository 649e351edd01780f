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

and the runs the CLI makes of them, as library functions: :func:`apply_to_files` (per photo: ``e``,
the PNG written, read back and evaluated; :func:`downscale`, :func:`jnd_picture`, :class:`MachineJndTask`),
:func:`train_and_save` / :func:`training_record` (NET.json), :func:`read_training_record` /
:func:`inherit_settings` (evaluation settings from NET.json) and :func:`evaluate_parts` /
:func:`evaluation_report`.
"""

from .apply import (
    ALL_CLASSIFIERS,
    REPORT_FORMAT,
    JndRecord,
    MachineJndTask,
    apply_to_files,
    downscale,
    jnd_picture,
)
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
from .runs import (
    EvalSettings,
    TrainRun,
    default_size,
    evaluate_parts,
    evaluation_report,
    inherit_settings,
    materialise,
    read_training_record,
    train_and_save,
    training_record,
)
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
    "ALL_CLASSIFIERS", "CPU_CONFIG", "PAPER_CONFIG", "REPORT_FORMAT", "SHIPPED_PHOTOS", "DMVJNDNet", "EvalSettings",
    "FolderImages", "ImageSet", "JndRecord", "MachineJndTask", "TrainConfig", "TrainRun",
    "apply_jnd_net", "apply_to_files", "bounded_perturbation", "cam",
    "cam_and_logits", "cam_softmax", "cifar10_images", "default_size", "downscale",
    "equal_energy_noise", "evaluate_jnd", "evaluate_jnd_net", "evaluate_parts", "evaluation_report", "folder_images",
    "gap_linear_head", "grad_cam", "homogeneity_test", "inherit_settings", "jnd_objective", "jnd_picture",
    "load_images", "load_jnd_net", "loss1_cross_entropy", "loss2_magnitude", "loss3_spatial", "make_jnd_net",
    "materialise", "mean_abs_jnd", "merged_cam", "merged_cam_and_logits", "normalise_map", "optimise_jnd_per_image",
    "predictions", "psnr", "rca", "read_training_record", "redundancy_target", "save_jnd_net", "shipped_crops",
    "shipped_photos", "split_holdout", "train_and_save", "train_jnd_net", "training_record", "white_noise_rca",
]
