"""Offline face recognition victim (issue "Face privacy").

* :mod:`.dlib_net`: dlib's face recognition ResNet read from its own ``.dat`` file, in PyTorch.
* :mod:`.align`: dlib's face chips as a differentiable sampler of the full-resolution photo.
* :mod:`.detect`: MTCNN detection (facenet-pytorch weights) and differentiable face logits.
* :mod:`.victim`: the differentiable victims (one face, all faces of a photo, MTCNN logits), and
  the from-scratch check of a saved photo.
* :mod:`.goals`: dodging, impersonation (on descriptors) and hiding (from MTCNN) as engine goals.
* :mod:`.strategy`: one strategy per face goal (references, victim, kappa, rounds, retry rule,
  verdict) and the one parser of face goals, which takes registrations.
* :mod:`.boxes`, :mod:`.methods`, :mod:`.record`: geometry, attack parameters and records of the
  protection.
* :mod:`.protect`: whole-photo protection of every face, checked from scratch on the encoded file;
  only a protected photo is written.
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
from .methods import FACE_PARAMS, face_method
from .protect import FaceProtector, protect_face_paths
from .record import FaceProtection, FaceRecord, summarise
from .strategy import (
    DodgeStrategy,
    FaceContext,
    FaceGoalSpec,
    FaceStrategy,
    HideStrategy,
    ImpersonateStrategy,
    parse_face_goal,
    register_face_goal,
)
from .victim import (
    SAME_PERSON_DISTANCE,
    FaceHideVictim,
    FaceRecogniserVictim,
    FacesVictim,
    build_gallery,
    embed_faces,
    verify_face_photo,
)

__all__ = [
    "FACE_PARAMS",
    "SAME_PERSON_DISTANCE",
    "ChipDetails",
    "DlibFaceNet",
    "Dodge",
    "DodgeStrategy",
    "Face",
    "FaceContext",
    "FaceDetector",
    "FaceGoalSpec",
    "FaceHideVictim",
    "FaceLogits",
    "FaceProbabilities",
    "FaceProtection",
    "FaceProtector",
    "FaceRecogniserVictim",
    "FaceRecord",
    "FaceStrategy",
    "FacesVictim",
    "Hide",
    "HideStrategy",
    "Impersonate",
    "ImpersonateStrategy",
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
    "register_face_goal",
    "similarity_transform",
    "stack_references",
    "summarise",
    "verify_face_photo",
]
