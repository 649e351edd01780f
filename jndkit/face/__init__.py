"""Offline face recognition victim (issue "Face privacy").

* :mod:`.dlib_net`: dlib's face recognition ResNet read from its own ``.dat`` file, in PyTorch.
* :mod:`.align`: dlib's face chips as a differentiable sampler of the full-resolution photo.
* :mod:`.detect`: MTCNN detection (facenet-pytorch weights) and differentiable face logits.
* :mod:`.victim`: the differentiable victim, and the from-scratch check of a saved photo.
* :mod:`.goals`: dodging, impersonation (on descriptors) and hiding (from MTCNN) as engine goals.
* :mod:`.protect`: whole-photo protection of every face, checked from scratch on the written file.
"""

from __future__ import annotations

from .align import ChipDetails, extract_chips, face_chip_details, similarity_transform
from .detect import Face, FaceDetector, FaceLogits, FaceProbabilities, logit_threshold
from .dlib_net import (
    DlibFaceNet,
    find_dlib_face_model,
    load_dlib_face_net,
    read_dlib_net,
)
from .goals import Dodge, Hide, Impersonate, stack_references
from .protect import (
    FaceHideVictim,
    FaceProtection,
    FaceProtector,
    FaceRecord,
    FacesVictim,
    face_method,
    parse_face_goal,
    protect_face_paths,
    summarise,
)
from .victim import (
    SAME_PERSON_DISTANCE,
    FaceRecogniserVictim,
    build_gallery,
    embed_faces,
    verify_face_photo,
)

__all__ = [
    "SAME_PERSON_DISTANCE",
    "ChipDetails",
    "DlibFaceNet",
    "Dodge",
    "Face",
    "FaceDetector",
    "FaceHideVictim",
    "FaceLogits",
    "FaceProbabilities",
    "FaceProtection",
    "FaceProtector",
    "FaceRecogniserVictim",
    "FaceRecord",
    "FacesVictim",
    "Hide",
    "Impersonate",
    "build_gallery",
    "embed_faces",
    "extract_chips",
    "face_chip_details",
    "face_method",
    "find_dlib_face_model",
    "load_dlib_face_net",
    "logit_threshold",
    "parse_face_goal",
    "protect_face_paths",
    "read_dlib_net",
    "similarity_transform",
    "stack_references",
    "summarise",
    "verify_face_photo",
]
