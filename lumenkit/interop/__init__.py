"""Exchange with the tools mineralogists annotate and view in: QuPath GeoJSON, ImageJ/Fiji lookup tables, napari."""

from lumenkit.interop.geojson import (
    geojson_to_mask,
    mask_to_geojson,
    read_geojson_mask,
    trace_grains,
    write_grains_geojson,
)
from lumenkit.interop.imagej import lut_bytes, write_imagej_lut
from lumenkit.interop.napari import mask_from_labels_image

__all__ = [
    "geojson_to_mask",
    "lut_bytes",
    "mask_from_labels_image",
    "mask_to_geojson",
    "read_geojson_mask",
    "trace_grains",
    "write_grains_geojson",
    "write_imagej_lut",
]
