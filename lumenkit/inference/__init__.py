"""Prediction: tiled whole-image inference, batch prediction of files, ensembles, the ONNX export and runtime."""

from lumenkit.inference.ensemble import Ensemble
from lumenkit.inference.loading import load_ensemble
from lumenkit.inference.onnx import OnnxModel, export_onnx, load_onnx
from lumenkit.inference.predict import PredictionReport, collect_images, load_model, predict_files, predict_image
from lumenkit.inference.refine import Refine
from lumenkit.inference.tiling import Tiling, predict_probs, resize_probs, tta_transforms

__all__ = [
    "Ensemble",
    "OnnxModel",
    "PredictionReport",
    "Refine",
    "Tiling",
    "collect_images",
    "export_onnx",
    "load_ensemble",
    "load_model",
    "load_onnx",
    "predict_files",
    "predict_image",
    "predict_probs",
    "resize_probs",
    "tta_transforms",
]
