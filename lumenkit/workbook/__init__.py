"""The notebook workbook: the papermill report pipeline, figures, the interactive explorer, the notebooks' helpers."""

