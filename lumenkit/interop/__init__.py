"""Exchange with the tools mineralogists annotate and view in: QuPath GeoJSON, ImageJ/Fiji lookup tables, napari."""
