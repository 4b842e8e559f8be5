"""The painting loop: paint strokes of a mineral on an image, fine-tune in the background, see the new prediction.

:class:`StrokePainter` shows an image on an ipycanvas canvas with the model's prediction over it. The user picks a
mineral and paints strokes; *Fine-tune* runs a few optimizer steps on the strokes in a background thread
(:func:`lumenkit.training.interactive.finetune_steps`) and redraws the prediction and its confidence; *Suggest*
outlines the regions of lowest confidence, where a stroke teaches most. Every stroke is saved at once as a sparse
mask in the dataset layout (``FOLDER/imgs/train/NAME.png``, ``FOLDER/masks/train/NAME.png``, ``dataset.yaml`` with
``labels: sparse``), so the loop is reproducible from files: ``lumenkit train --preset finetune --init MODEL
--data FOLDER`` trains the same strokes as a proper run, and opening the painter on the folder again resumes them.

Why ipycanvas: a maintained drawing widget (mouse events and layered drawing in every Jupyter front end); the
strokes themselves are rasterised here in image pixels (discs along each mouse segment), so what is saved does not
depend on the browser's anti-aliasing.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import numpy as np

from lumenkit.data.catalogue import CATALOGUE, IGNORE
from lumenkit.data.colours import PALETTE, overlay
from lumenkit.data.imageio import read_image, read_mask, resize_image, resize_mask, save_image, target_size, write_text
from lumenkit.errors import ConfigError


def stamp(labels: np.ndarray, code: int, points: list[tuple[float, float]], radius: float) -> int:
    """Paint ``code`` into ``labels`` along the polyline ``points`` (``(x, y)`` px) with discs of ``radius`` px.

    Returns:
        Pixels painted.
    """
    h, w = labels.shape
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 1:
        pts = np.vstack([pts, pts])
    r = max(0.5, float(radius))
    painted = 0
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        ya, yb = int(max(0, np.floor(min(y0, y1) - r))), int(min(h, np.ceil(max(y0, y1) + r) + 1))
        xa, xb = int(max(0, np.floor(min(x0, x1) - r))), int(min(w, np.ceil(max(x0, x1) + r) + 1))
        if ya >= yb or xa >= xb:
            continue
        yy, xx = np.mgrid[ya:yb, xa:xb]
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0, 1)
        near = (xx - (x0 + t * dx)) ** 2 + (yy - (y0 + t * dy)) ** 2 <= r * r  # distance to the segment ≤ r
        block = labels[ya:yb, xa:xb]
        painted += int((near & (block != code)).sum())
        block[near] = code
    return painted


class StrokePainter:
    """Paint strokes on one image, fine-tune the model on them, see the prediction change (see the module).

    Args:
        image: the image file (JPEG/PNG/TIFF).
        model: a :class:`lumenkit.models.Checkpoint` or its path.
        folder: dataset folder the strokes are saved in (created; an existing one is resumed).
        scale: the image's scale relative to LumenStone's native images (1.0: 3396×2547 px at ×100), as ``predict``'s
            ``--scale``; the image is resampled to the model's scale for prediction and fine-tuning.
        max_side: longest side in px of the canvas (the image is shown reduced; strokes are stored at full size).
        steps: optimizer steps per *Fine-tune*.

    Attributes:
        labels: the strokes, ``(H, W)`` uint8 LumenStone codes at the image's size, 255 where unpainted.
        ckpt: the current model (the fine-tuned one after *Fine-tune*).
        prediction, confidence: its latest prediction at the image's size.
        suggestions: ``(x0, y0, x1, y1)`` boxes of lowest confidence from the last *Suggest*.

    Raises:
        BadImageError: the image cannot be read. CheckpointError: the model cannot be loaded.
    """

    def __init__(self, image: str | Path, model: Any, folder: str | Path, scale: float = 1.0,
                 max_side: int = 768, steps: int = 20) -> None:
        import ipywidgets as w
        from ipycanvas import MultiCanvas

        from lumenkit.models.checkpoint import Checkpoint, load_checkpoint

        self.image_path, self.folder, self.scale, self.steps = Path(image), Path(folder), float(scale), int(steps)
        self.name = self.image_path.stem
        self.image = read_image(self.image_path)
        self.base = model if isinstance(model, Checkpoint) else load_checkpoint(model)
        self.ckpt = self.base
        h, w_ = self.image.shape[:2]
        self.labels = np.full((h, w_), IGNORE, dtype=np.uint8)
        saved = self.folder / "masks" / "train" / f"{self.name}.png"
        if saved.is_file():
            self.labels = read_mask(saved, expected_size=(w_, h))
        self.view_factor = min(1.0, max_side / max(h, w_))
        self.view_size = target_size((w_, h), self.view_factor)
        self.shown = resize_image(self.image, self.view_size) if self.view_factor < 1 else self.image
        codes = list(self.base.class_map.codes) + [c for c in CATALOGUE if c not in self.base.class_map.codes]
        self.mineral = w.Dropdown(options=[(f"{CATALOGUE[c].label} ({CATALOGUE[c].name})", c) for c in codes],
                                  value=codes[min(1, len(codes) - 1)], description="mineral")
        self.brush = w.IntSlider(value=max(2, int(6 / self.view_factor)), min=1, max=60, description="brush px")
        self.opacity = w.FloatSlider(value=0.4, min=0.0, max=1.0, step=0.05, description="opacity")
        self.tune = w.Button(description="Fine-tune", icon="play")
        self.hint = w.Button(description="Suggest", icon="lightbulb-o")
        self.status = w.HTML()
        self.canvas = MultiCanvas(3, width=self.view_size[0], height=self.view_size[1])
        self.canvas.add_class("lumenkit-painter")
        self.suggestions: list[tuple[int, int, int, int]] = []
        self._stroke: list[tuple[float, float]] = []
        self._thread: threading.Thread | None = None
        top = self.canvas[2]
        top.on_mouse_down(self._on_down)
        top.on_mouse_move(self._on_move)
        top.on_mouse_up(self._on_up)
        self.canvas.on_client_ready(self.draw)  # a new view (a reload, Voila) starts blank: draw for it
        self.tune.on_click(lambda _: self.finetune())
        self.hint.on_click(lambda _: self.suggest())
        self.opacity.observe(lambda _: self.draw(), "value")
        self.widget = w.VBox([w.HBox([self.mineral, self.brush, self.opacity]), w.HBox([self.tune, self.hint]),
                              self.status, self.canvas])
        self.predict()

    # -- files ----------------------------------------------------------------------------------------
    def save(self) -> Path:
        """Write the image (once), the strokes and ``dataset.yaml`` into the folder; returns the mask path."""
        import yaml

        from lumenkit.data.datasets import DatasetInfo

        img = self.folder / "imgs" / "train" / f"{self.name}.png"
        if not img.is_file():
            save_image(self.image, img)
        mask = self.folder / "masks" / "train" / f"{self.name}.png"
        save_image(self.labels, mask)
        info = DatasetInfo.read(self.folder) if (self.folder / "dataset.yaml").is_file() else DatasetInfo(
            name=self.folder.name, scale=self.scale)
        info.labels = "sparse"
        write_text(self.folder / "dataset.yaml", yaml.safe_dump(info.to_dict(), sort_keys=False, allow_unicode=True))
        return mask

    # -- painting -------------------------------------------------------------------------------------
    def paint(self, code: int, points: list[tuple[float, float]], radius: float) -> int:
        """Paint a stroke of mineral ``code`` through ``points`` (``(x, y)`` in image px) and save it.

        Returns:
            Pixels painted.

        Raises:
            ConfigError: a code that is not a mineral of the catalogue.
        """
        if code not in CATALOGUE:
            raise ConfigError(f"code {code} is not a mineral of the catalogue (codes {sorted(CATALOGUE)}); pick one "
                              "from the list")
        n = stamp(self.labels, int(code), points, radius)
        self.save()
        self.draw()
        return n

    def _image_xy(self, x: float, y: float) -> tuple[float, float]:
        return x / self.view_factor, y / self.view_factor

    def _on_down(self, x: float, y: float) -> None:
        self._stroke = [self._image_xy(x, y)]

    def _on_move(self, x: float, y: float) -> None:
        if self._stroke:
            self._stroke.append(self._image_xy(x, y))
            (x0, y0), (x1, y1) = self._stroke[-2], self._stroke[-1]
            layer = self.canvas[2]
            layer.stroke_style = _hex(int(self.mineral.value))
            layer.line_width = self.brush.value * self.view_factor
            layer.line_cap = "round"
            layer.stroke_line(x0 * self.view_factor, y0 * self.view_factor, x1 * self.view_factor,
                              y1 * self.view_factor)

    def _on_up(self, x: float, y: float) -> None:
        if self._stroke:
            self._stroke.append(self._image_xy(x, y))
            self.paint(int(self.mineral.value), self._stroke, self.brush.value / 2)
            self._stroke = []

    # -- model ----------------------------------------------------------------------------------------
    def predict(self) -> None:
        """Predict the image with the current model and redraw."""
        from lumenkit.inference.predict import predict_image

        out = predict_image(self.ckpt, self.image, self.scale)
        self.prediction, self.confidence = out["codes"], out["confidence"]
        self.draw()

    def _training_data(self) -> tuple[np.ndarray, np.ndarray]:
        size = target_size((self.image.shape[1], self.image.shape[0]), self.ckpt.scale / self.scale)
        return resize_image(self.image, size), resize_mask(self.labels, size, sparse=True)

    def finetune(self, steps: int | None = None, wait: bool = False) -> threading.Thread | None:
        """Fine-tune on the strokes for ``steps`` optimizer steps in a background thread, then predict again.

        Args:
            steps: optimizer steps (default: the painter's ``steps``).
            wait: block until done (tests, scripts).

        Returns:
            The thread (``None`` when nothing could start: no stroke yet, or a fine-tuning still running).
        """
        from lumenkit.training.interactive import finetune_steps

        if self._thread is not None and self._thread.is_alive():
            self.status.value = "fine-tuning still running…"
            return None
        if not (self.labels != IGNORE).any():
            self.status.value = "<b>paint at least one stroke of a mineral first</b>"
            return None
        image, mask = self._training_data()
        n = int(steps if steps is not None else self.steps)

        def work() -> None:
            try:
                self.ckpt = finetune_steps(self.ckpt, [image], [mask], steps=n)
                self.predict()
                self.status.value = (f"fine-tuned {self.ckpt.config['interactive']['steps']} steps on "
                                     f"{int((self.labels != IGNORE).sum())} painted px")
            except Exception as e:  # shown in the widget, not lost in a thread
                self.status.value = f"<b>fine-tuning failed:</b> {e}"

        self.status.value = f"fine-tuning {n} steps…"
        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()
        if wait:
            self._thread.join()
        return self._thread

    def suggest(self, k: int = 3, window: int = 64) -> list[tuple[int, int, int, int]]:
        """The ``k`` windows (``window`` px at the image's size) of lowest mean confidence, outlined on the canvas.

        Returns:
            ``(x0, y0, x1, y1)`` boxes in image px, lowest confidence first (non-overlapping).
        """
        from scipy import ndimage as ndi

        conf = ndi.uniform_filter(self.confidence.astype(np.float32), size=window, mode="nearest")
        boxes: list[tuple[int, int, int, int]] = []
        taken = np.zeros(conf.shape, dtype=bool)
        h, w = conf.shape
        for idx in np.argsort(conf, axis=None):
            y, x = divmod(int(idx), w)
            if taken[y, x]:
                continue
            y0, x0 = max(0, y - window // 2), max(0, x - window // 2)
            y1, x1 = min(h, y0 + window), min(w, x0 + window)
            boxes.append((x0, y0, x1, y1))
            taken[max(0, y0 - window // 2): y1 + window // 2, max(0, x0 - window // 2): x1 + window // 2] = True
            if len(boxes) == k:
                break
        self.suggestions = boxes
        self.draw()
        return boxes

    # -- drawing --------------------------------------------------------------------------------------
    def draw(self) -> None:
        """Redraw the layers: image with prediction, painted strokes, suggestions."""
        size = self.view_size
        pred = resize_mask(self.prediction, size) if self.view_factor < 1 else self.prediction
        self.canvas[0].put_image_data(overlay(self.shown, pred, alpha=self.opacity.value), 0, 0)
        strokes = resize_mask(self.labels, size, sparse=True) if self.view_factor < 1 else self.labels
        rgba = np.zeros((*strokes.shape, 4), dtype=np.uint8)
        on = strokes != IGNORE
        rgba[on, :3] = PALETTE[strokes[on]]
        rgba[on, 3] = 255
        self.canvas[1].clear()
        self.canvas[1].put_image_data(rgba, 0, 0)
        top = self.canvas[2]
        top.clear()
        top.stroke_style, top.line_width = "#ffff00", 2
        for x0, y0, x1, y1 in self.suggestions:
            f = self.view_factor
            top.stroke_rect(x0 * f, y0 * f, (x1 - x0) * f, (y1 - y0) * f)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def _hex(code: int) -> str:
    r, g, b = (int(v) for v in PALETTE[code])
    return f"#{r:02x}{g:02x}{b:02x}"
