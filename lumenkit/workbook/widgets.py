"""An ipywidgets explorer: browse images and masks, toggle minerals, zoom, and identify minerals with a model."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lumenkit.data.catalogue import CATALOGUE, IGNORE
from lumenkit.data.colours import PALETTE, overlay
from lumenkit.data.datasets import LumenStoneDataset, list_splits
from lumenkit.data.imageio import read_image, resize_image, save_image, target_size, write_text
from lumenkit.errors import LumenkitError
from lumenkit.mineralogy.analysis import grains, modal_composition

ALL = "(all)"


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


class Explorer:
    """Interactive viewer of a LumenStone-layout dataset, usable in any notebook (and driven by tests).

    Controls: split, deposit and image pickers; mask source (truth / prediction); opacity; one toggle per mineral;
    a zoom region (fractions of width and height); with a model, an *Identify* button, a file upload for new
    images and buttons that save the mask, the overlay and the composition CSV.

    Args:
        data: dataset folder (may be ``None`` when only uploading new images to a model).
        model: a :class:`lumenkit.models.Checkpoint` or a path to one (optional).
        split: initial split.
        scale: scale to display at, relative to LumenStone's native ×100 images (default: the stored scale,
            reduced until the longest side is at most ``max_side``).
        max_side: longest side in px of the displayed image.
        out_dir: folder for the save buttons.

    Raises:
        DatasetNotFoundError, EmptySplitError, ...: as :class:`~lumenkit.data.LumenStoneDataset` does.
    """

    def __init__(
        self,
        data: str | Path | None = None,
        model: Any = None,
        split: str = "train",
        scale: float | None = None,
        max_side: int = 1024,
        out_dir: str | Path = "explorer_out",
    ) -> None:
        import ipywidgets as w

        self.data = Path(data) if data else None
        self.max_side = max_side
        self.out_dir = Path(out_dir)
        self.scale = scale
        self.ckpt = None
        if model:
            from lumenkit.models.checkpoint import Checkpoint, load_checkpoint

            self.ckpt = model if isinstance(model, Checkpoint) else load_checkpoint(model)
        self.image: np.ndarray | None = None
        self.shown_scale = 1.0  # scale of the shown image relative to native ×100
        self.truth: np.ndarray | None = None
        self.prediction: np.ndarray | None = None
        self.confidence: np.ndarray | None = None
        self.name = ""
        splits = list_splits(self.data) if self.data else []
        options = splits or ["(none)"]
        self.split = w.Dropdown(options=options, value=split if split in options else options[0], description="split")
        self.deposit = w.Dropdown(options=[ALL], value=ALL, description="deposit")
        self.picker = w.Dropdown(options=[], description="image")
        self.source = w.ToggleButtons(options=["truth", "prediction"], value="truth", description="mask")
        self.opacity = w.FloatSlider(value=0.45, min=0.0, max=1.0, step=0.05, description="opacity")
        self.zoom_x = w.FloatRangeSlider(value=(0.0, 1.0), min=0.0, max=1.0, step=0.01, description="zoom x")
        self.zoom_y = w.FloatRangeSlider(value=(0.0, 1.0), min=0.0, max=1.0, step=0.01, description="zoom y")
        self.view = w.Image(format="png")
        self.composition = w.HTML()
        self.message = w.HTML()
        self.toggles: dict[int, Any] = {}
        self.toggle_box = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self.toggle_box.add_class("lumenkit-minerals")
        self.identify = w.Button(description="Identify", disabled=self.ckpt is None, icon="search")
        self.upload = w.FileUpload(accept=".jpg,.jpeg,.png,.tif,.tiff", multiple=False, disabled=self.ckpt is None,
                                   description="New image")
        self.save_buttons = [w.Button(description=t) for t in ("Save mask", "Save overlay", "Save composition CSV")]
        self._ds: LumenStoneDataset | None = None
        self.split.observe(lambda _: self._open_split(), "value")
        self.deposit.observe(lambda _: self._filter(), "value")
        self.picker.observe(lambda _: self.load(), "value")
        for ctl in (self.source, self.opacity, self.zoom_x, self.zoom_y):
            ctl.observe(lambda _: self.refresh(), "value")
        self.identify.on_click(lambda _: self.run_model())
        self.upload.observe(lambda change: self._on_upload(change), "value")
        self.save_buttons[0].on_click(lambda _: self.save("mask"))
        self.save_buttons[1].on_click(lambda _: self.save("overlay"))
        self.save_buttons[2].on_click(lambda _: self.save("composition"))
        self.widget = w.VBox([
            w.HBox([self.split, self.deposit, self.picker]),
            w.HBox([self.source, self.opacity]),
            w.HBox([self.zoom_x, self.zoom_y]),
            self.toggle_box,
            w.HBox([self.identify, self.upload, *self.save_buttons]),
            self.message,
            w.HBox([self.view, self.composition]),
        ])
        if self.data:
            self._open_split()

    # -- data -------------------------------------------------------------------------------------
    def _open_split(self) -> None:
        if not self.data or self.split.value == "(none)":
            return
        cs = self.ckpt.class_map.codes if self.ckpt is not None else None
        self._ds = LumenStoneDataset(self.data, self.split.value, class_set=cs)
        deps = sorted({d for d in map(self._ds.deposit, self._ds.names) if d})
        self.deposit.options = [ALL, *deps]
        self.deposit.value = ALL
        self._build_toggles(self._ds.codes)
        self._filter()

    def _filter(self) -> None:
        if self._ds is None:
            return
        names = [n for n in self._ds.names if self.deposit.value in (ALL, self._ds.deposit(n))]
        self.picker.options = names
        if names and self.picker.value != names[0]:
            self.picker.value = names[0]
        elif names:
            self.load()

    def _build_toggles(self, codes: Any) -> None:
        import ipywidgets as w

        self.toggles = {}
        for c in codes:
            m = CATALOGUE[c]
            t = w.ToggleButton(value=c != 0, description=m.label, tooltip=m.name,
                               layout=w.Layout(width="auto"))
            t.style.button_color = m.hex
            t.observe(lambda _: self.refresh(), "value")
            self.toggles[c] = t
        self.toggle_box.children = list(self.toggles.values())

    def _display_factor(self, size: tuple[int, int]) -> float:
        return min(1.0, self.max_side / max(size))

    def load(self, name: str | None = None) -> None:
        """Show an image of the current split (default: the picker's)."""
        if self._ds is None:
            return
        name = name or self.picker.value
        if not name:
            return
        try:
            mask = self._ds.read_mask(name)
            factor = self._display_factor((mask.shape[1], mask.shape[0]))
            if self.scale:
                factor = self.scale / self._ds.stored_scale
            s = self._ds.load(name, scale=self._ds.stored_scale * factor)
        except LumenkitError as e:
            self._error(str(e))
            return
        self.name, self.image, self.truth = name, s["image"], s["mask"]
        self.shown_scale = self._ds.stored_scale * factor
        self.prediction = self.confidence = None
        self.source.value = "truth"
        self.message.value = ""
        self.refresh()

    # -- rendering --------------------------------------------------------------------------------
    @property
    def shown_codes(self) -> list[int]:
        """Minerals currently toggled on."""
        return [c for c, t in self.toggles.items() if t.value]

    @property
    def mask(self) -> np.ndarray | None:
        """The mask currently shown (truth or prediction)."""
        return self.prediction if self.source.value == "prediction" and self.prediction is not None else self.truth

    def zoom_window(self) -> tuple[slice, slice]:
        """Rows and columns of the zoom region in the shown image."""
        assert self.image is not None
        h, w = self.image.shape[:2]
        (x0, x1), (y0, y1) = self.zoom_x.value, self.zoom_y.value
        r0, r1 = int(y0 * h), max(int(y0 * h) + 1, round(y1 * h))
        c0, c1 = int(x0 * w), max(int(x0 * w) + 1, round(x1 * w))
        return slice(r0, r1), slice(c0, c1)

    def render(self) -> np.ndarray:
        """The RGB array of the current view: zoomed image with the shown minerals overlaid."""
        if self.image is None:
            return np.zeros((1, 1, 3), np.uint8)
        rows, cols = self.zoom_window()
        img = self.image[rows, cols]
        mask = self.mask
        if mask is None:
            return img.copy()
        return overlay(img, mask[rows, cols], alpha=self.opacity.value, show=self.shown_codes)

    def composition_table(self) -> pd.DataFrame:
        """Modal composition (area %) of the shown mask in the zoom region."""
        mask = self.mask
        if mask is None:
            return pd.DataFrame()
        rows, cols = self.zoom_window()
        codes = list(self.toggles) or None
        return modal_composition(mask[rows, cols], codes)

    def refresh(self) -> None:
        """Re-render the view and the composition bars."""
        view = self.render()
        if view.shape[0] > 1:
            f = self._display_factor((view.shape[1], view.shape[0]))
            if f < 1:
                view = resize_image(view, target_size((view.shape[1], view.shape[0]), f))
        self.view.value = _png(view)
        self.composition.value = self._composition_html()

    def _composition_html(self) -> str:
        df = self.composition_table()
        if df.empty:
            return ""
        bars = []
        for label, row in df.iterrows():
            colour = CATALOGUE[int(row["code"])].hex
            bars.append(
                f"<div style='display:flex;align-items:center;gap:.4em'><span style='width:5em'>{label}</span>"
                f"<span style='display:inline-block;height:.9em;width:{row['area_pct'] * 2:.1f}px;"
                f"background:{colour};border:1px solid #333'></span><span>{row['area_pct']:.1f}%</span></div>"
            )
        title = f"<b>{self.name}</b> — {self.source.value}<br>"
        return title + "".join(bars)

    def _error(self, text: str) -> None:
        import html

        self.message.value = f"<span style='color:#b00'>⚠ {html.escape(text)}</span>"

    # -- model ------------------------------------------------------------------------------------
    def run_model(self) -> None:
        """Identify minerals in the shown image with the model; shows the prediction."""
        if self.ckpt is None:
            self._error("no model loaded: pass model=RUN/model.pt to Explorer")
            return
        if self.image is None:
            return
        from lumenkit.inference.predict import predict_image

        out = predict_image(self.ckpt, self.image, input_scale=self.shown_scale)
        self.prediction, self.confidence = out["codes"], out["confidence"]
        if not self.toggles:
            self._build_toggles(self.ckpt.class_map.codes)
        self.source.value = "prediction"
        self.refresh()

    def open_upload(self, filename: str, content: bytes, scale: float | None = None) -> bool:
        """Identify minerals in an uploaded file; a bad file shows a message instead of raising.

        Args:
            filename: the file's name (for messages).
            content: its bytes.
            scale: its scale relative to native ×100 (default: the model's training scale).

        Returns:
            True when the image was read and identified.
        """
        if self.ckpt is None:
            self._error("no model loaded: pass model=RUN/model.pt to Explorer to identify new images")
            return False
        suffix = Path(filename).suffix or ".jpg"
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / f"upload{suffix}"
            p.write_bytes(content)
            try:
                image = read_image(p)
            except LumenkitError as e:
                self._error(str(e).replace(str(p), filename))
                return False
        self.shown_scale = float(scale or self.ckpt.scale)
        self.name, self.image, self.truth = Path(filename).stem, image, None
        self.message.value = f"identifying {filename} …"
        self.run_model()
        self.message.value = f"{filename}: {image.shape[1]}×{image.shape[0]} px identified"
        return True

    def _on_upload(self, change: dict[str, Any]) -> None:
        files = change.get("new") or ()
        for f in files:
            content = f["content"]
            self.open_upload(f["name"], bytes(content))

    def statistics(self) -> dict[str, pd.DataFrame]:
        """Mineral statistics of the shown mask: modal composition and grains."""
        mask = self.mask
        if mask is None:
            return {}
        return {"composition": modal_composition(mask, list(self.toggles) or None), "grains": grains(mask)}

    def save(self, what: str) -> Path | None:
        """Save the shown ``mask`` (PNG of codes), ``overlay`` (PNG) or ``composition`` (CSV) to ``out_dir``.

        Returns:
            The written path, or ``None`` when nothing is shown yet (the widget says so).

        Raises:
            ValueError: ``what`` is none of the three.
            OutputPathError: ``out_dir`` cannot be written.
        """
        if self.mask is None or self.image is None:
            self._error("nothing to save yet")
            return None
        stem = f"{self.name}_{self.source.value}"
        if what == "mask":
            path = self.out_dir / f"{stem}_mask.png"
            save_image(self.mask, path)
        elif what == "overlay":
            path = self.out_dir / f"{stem}_overlay.png"
            save_image(self.render(), path)
        elif what == "composition":
            path = self.out_dir / f"{stem}_composition.csv"
            write_text(path, self.composition_table().to_csv())
        else:
            raise ValueError(f"unknown item {what!r}; choose mask, overlay or composition")
        self.message.value = f"saved {path}"
        return path

    def static_figure(self) -> Any:
        """A matplotlib Figure of the current view and composition (what an HTML export shows)."""
        import matplotlib.pyplot as plt

        from lumenkit.workbook.figures import legend_handles

        fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [3, 1]},
                                     constrained_layout=True)
        ax.imshow(self.render())
        ax.set_title(f"{self.name} ({self.source.value}, opacity {self.opacity.value:.2f})")
        ax.set_axis_off()
        df = self.composition_table()
        if not df.empty:
            bx.barh(df.index[::-1], df["area_pct"][::-1], color=[PALETTE[c] / 255 for c in df["code"][::-1]],
                    edgecolor="k")
            bx.set_xlabel("area %")
            bx.set_title("composition")
            fig.legend(handles=legend_handles([c for c in df["code"] if c != IGNORE]), loc="outside lower center",
                       ncol=4, frameon=False)
        return fig

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


class MosaicViewer:
    """A whole-section mosaic and its predicted mask: a reduced overview, and any region at full resolution.

    Nothing is loaded whole: the overview and each region are read from the files' pyramids and tiles
    (:func:`lumenkit.data.mosaic.mosaic_overview`, :func:`lumenkit.data.mosaic.mosaic_region`). Controls: zoom x
    and y (fractions of the width and height), opacity, one toggle per mineral present in the overview. The overview
    outlines the zoomed region; the region is shown at full resolution when it fits ``max_side``, else reduced by
    the whole step the caption states. The caption gives the region's size in px and, with a pixel size, in µm.

    Args:
        image: the mosaic file.
        mask: its mask as ``predict`` writes it (``OUT/NAME.tif``), or ``None`` for the image alone.
        pixel_size_um: µm per full-resolution pixel (caption, scale bars); ``None``: the file's own metadata
            (OME-XML, TIFF resolution tags) where it declares one.
        max_side: longest side in px of the overview and of the region shown.

    Attributes:
        overview, overview_mask, overview_step: the overview and its reduction.
        region, region_mask, region_step, box: what the zoom panel shows, and its ``(y0, y1, x0, x1)`` in px.

    Raises:
        BadImageError, BadMaskError: a file that cannot be read.
    """

    def __init__(
        self, image: str | Path, mask: str | Path | None = None, pixel_size_um: float | None = None,
        max_side: int = 1024,
    ) -> None:
        import ipywidgets as w

        from lumenkit.data.mosaic import Mosaic, mosaic_overview

        self.image_path, self.mask_path = Path(image), Path(mask) if mask is not None else None
        self.pixel_size_um, self.max_side = pixel_size_um, max_side
        with Mosaic(self.image_path) as m:
            self.shape = m.shape
            if not self.pixel_size_um:
                self.pixel_size_um = m.pixel_size_um
        self.overview, self.overview_mask, self.overview_step = mosaic_overview(self.image_path, self.mask_path,
                                                                                max_side)
        self.zoom_x = w.FloatRangeSlider(value=(0.4, 0.6), min=0.0, max=1.0, step=0.005, description="zoom x")
        self.zoom_y = w.FloatRangeSlider(value=(0.4, 0.6), min=0.0, max=1.0, step=0.005, description="zoom y")
        self.opacity = w.FloatSlider(value=0.45, min=0.0, max=1.0, step=0.05, description="opacity")
        present = (np.flatnonzero(np.bincount(self.overview_mask.ravel(), minlength=256))
                   if self.overview_mask is not None else [])
        self.toggles = {int(c): w.ToggleButton(value=True, description=CATALOGUE[int(c)].label)
                        for c in present if int(c) in CATALOGUE and int(c) not in (0, IGNORE)}
        self.overview_view, self.region_view = w.Image(format="png"), w.Image(format="png")
        self.caption = w.HTML()
        for ctl in (self.zoom_x, self.zoom_y, self.opacity, *self.toggles.values()):
            ctl.observe(lambda _: self.refresh(), "value")
        self.widget = w.VBox([w.HBox([self.zoom_x, self.zoom_y, self.opacity]),
                              w.HBox(list(self.toggles.values()), layout=w.Layout(flex_flow="row wrap")),
                              self.caption, w.HBox([self.overview_view, self.region_view])])
        self.refresh()

    def shown_codes(self) -> list[int]:
        """Codes whose toggle is on."""
        return [c for c, t in self.toggles.items() if t.value]

    def zoom_box(self) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)`` of the zoomed region in full-resolution px (at least one pixel each way)."""
        h, w = self.shape
        y0, y1 = (round(v * h) for v in self.zoom_y.value)
        x0, x1 = (round(v * w) for v in self.zoom_x.value)
        y0, x0 = min(y0, h - 1), min(x0, w - 1)
        return y0, max(y1, y0 + 1), x0, max(x1, x0 + 1)

    def _overlay(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        return image if mask is None else overlay(image, mask, alpha=self.opacity.value, show=self.shown_codes())

    def refresh(self) -> None:
        """Read the zoomed region and redraw both panels."""
        from lumenkit.data.mosaic import mosaic_region

        self.box = self.zoom_box()
        self.region, self.region_mask, self.region_step = mosaic_region(self.image_path, self.mask_path, self.box,
                                                                        self.max_side)
        view = self._overlay(self.overview, self.overview_mask).copy()
        y0, y1, x0, x1 = (v // self.overview_step for v in self.box)
        y1, x1 = min(max(y1, y0 + 1), view.shape[0]) - 1, min(max(x1, x0 + 1), view.shape[1]) - 1
        for edge in (view[y0, x0:x1 + 1], view[y1, x0:x1 + 1], view[y0:y1 + 1, x0], view[y0:y1 + 1, x1]):
            edge[...] = (255, 255, 0)  # the zoomed region, outlined in yellow
        self.overview_view.value = _png(view)
        self.region_view.value = _png(self._overlay(self.region, self.region_mask))
        h, w = self.box[1] - self.box[0], self.box[3] - self.box[2]
        size = f"{w}×{h} px"
        if self.pixel_size_um:
            size += f" ({w * self.pixel_size_um / 1000:.3g}×{h * self.pixel_size_um / 1000:.3g} mm)"
        shown = "full resolution" if self.region_step == 1 else f"reduced {self.region_step}×"
        self.caption.value = (f"<b>{self.image_path.name}</b>: {self.shape[1]}×{self.shape[0]} px mosaic; region "
                              f"x {self.box[2]}–{self.box[3]}, y {self.box[0]}–{self.box[1]}: {size}, {shown}")

    def static_figure(self) -> Any:
        """A matplotlib Figure of the current view, what an HTML export shows.

        The overview with the zoomed region outlined, and the region; the legend of the minerals shown, and scale
        bars in µm when the pixel size is known.
        """
        import matplotlib.pyplot as plt

        from lumenkit.workbook.figures import add_scale_bar, legend_handles

        fig, axes = plt.subplots(1, 2, figsize=(14, 6), constrained_layout=True)
        panels = ((self._overlay(self.overview, self.overview_mask), self.overview_step, "overview"),
                  (self._overlay(self.region, self.region_mask), self.region_step, "region"))
        for ax, (picture, step, what) in zip(axes, panels, strict=True):
            ax.imshow(picture)
            ax.set_axis_off()
            if self.pixel_size_um:
                add_scale_bar(ax, picture.shape[1], self.pixel_size_um * step)
            shown = "full resolution" if step == 1 else f"reduced {step}×"
            ax.set_title(f"{self.image_path.name}: {what} ({shown})" if what == "overview" else f"{what} ({shown})")
        y0, y1, x0, x1 = (v / self.overview_step for v in self.box)
        axes[0].add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="yellow"))
        codes = self.shown_codes()
        if codes:
            fig.legend(handles=legend_handles(codes), loc="outside lower center", ncol=6, frameon=False)
        return fig

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
