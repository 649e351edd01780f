"""Offline face recognition victim: dlib's ResNet in PyTorch, differentiable alignment, MTCNN detection."""

from __future__ import annotations

from .dlib_net import DlibFaceNet, find_dlib_face_model, load_dlib_face_net, read_dlib_net

__all__ = ["DlibFaceNet", "find_dlib_face_model", "load_dlib_face_net", "read_dlib_net"]
