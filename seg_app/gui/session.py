"""The open document, without Qt: scan, label map, edit history, lesions, model and the unsaved-changes flag.

The main window shows a :class:`Session` and the job/export controllers change it; everything here is
plain Python and NumPy (testable without a display). Listeners registered with :meth:`Session.connect`
are called with the name of what changed: ``"volume"``, ``"labels"``, ``"measurements"``, ``"model"``,
``"names"`` (the label names and colours: a segmentation was opened, or that was undone),
``"patient"`` (the anonymise switch) or ``"dirty"``.

Patient identifiers (:class:`~seg_app.core.patient.PatientInfo`) are shown and exported, never logged.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from seg_app.core.export import safe_file_name
from seg_app.core.files import overwrites_source
from seg_app.core.patient import PatientInfo, patient_info
from seg_app.core.volume import Volume
from seg_app.gui.editing import LabelEditor
from seg_app.gui.viewer_state import VIEW_NAMES, DisplayGeometry, slice_caption

#: Label used when no model is loaded (painting by hand still works).
DEFAULT_LABEL = (1, "lesion", (230, 60, 60))
#: Colours of opened-segmentation labels that neither a BraTS role nor the model colours.
EXTRA_COLORS = ((230, 60, 60), (60, 200, 80), (250, 210, 40), (70, 130, 240), (230, 90, 220), (60, 210, 220),
                (250, 140, 40), (160, 100, 240))


class Session:
    """Document state of the workstation.

    Attributes:
        volume: the open scan, or None.
        geometry: how the scan maps to the display axes (set with the volume).
        labels: label map on the scan's grid, a writable uint8 ``(1, I, J, K)`` volume, or None.
        probabilities / agreement: the model's foreground probability and TTA agreement, when segmented.
        editor: brush editing and undo/redo of ``labels`` (through the display view of the array).
        lesions / totals: the measurements of the current labels (empty until measured).
        checkpoint: the loaded model (``LoadedCheckpoint``), or None.
        last_result: the last ``SegmentationResult`` (provenance for the JSON export).
        dirty: True while the label map has changes that were not exported.
        patient: the open scan's patient and study identifiers (empty without a scan).
        anonymise: hide every identifier (views, title, Scan panel, exports) for screenshots/teaching.
        opened_names: label value -> name of a segmentation opened from a file (File > Open
            segmentation); None while the labels are the model's (or painted). See :meth:`label_specs`.
        opened_source: the file of that segmentation ("" when none).
    """

    def __init__(self) -> None:
        self.volume: Volume | None = None
        self.geometry: DisplayGeometry | None = None
        self.labels: Volume | None = None
        self.probabilities: Volume | None = None
        self.agreement: Volume | None = None
        self.editor: LabelEditor | None = None
        self.lesions: list = []
        self.totals: list[dict] = []
        self.checkpoint: Any = None
        self.last_result: Any = None
        self.dirty = False
        self.patient = PatientInfo()
        self.anonymise = False
        self.opened_names: dict[int, str] | None = None
        self.opened_source = ""
        self._listeners: list[Callable[[str], None]] = []

    # ---- events
    def connect(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(what)`` after every change (``what``: volume, labels, measurements, model, dirty)."""
        self._listeners.append(callback)

    def _emit(self, what: str) -> None:
        for cb in list(self._listeners):
            cb(what)

    def set_dirty(self, dirty: bool) -> None:
        """Mark the label map as changed since the last export (or not); always notifies."""
        self.dirty = bool(dirty)
        self._emit("dirty")

    # ---- scan
    def set_volume(self, volume: Volume) -> DisplayGeometry:
        """Open a new scan: drops any mask, history and measurements; the document is clean."""
        self.volume = volume
        self.geometry = DisplayGeometry.from_affine(volume.affine, volume.shape)
        self.patient = patient_info(volume)
        self.clear_labels()
        self._emit("volume")
        self.set_dirty(False)
        return self.geometry

    @property
    def shown_patient(self) -> PatientInfo:
        """The identifiers to show and export: all of them, or none when anonymised."""
        return self.patient.anonymised() if self.anonymise else self.patient

    def set_anonymise(self, on: bool) -> None:
        """Hide (or show again) the patient and study identifiers everywhere."""
        self.anonymise = bool(on)
        self._emit("patient")

    @property
    def scan_name(self) -> str:
        """The scan's name as shown (``volume.name``; "anonymised" when identifiers are hidden)."""
        if self.volume is None:
            return ""
        return "anonymised" if self.anonymise else self.volume.name

    @property
    def title(self) -> str:
        """Window title: patient, ID and series (or the scan's name); ``[*]`` is Qt's unsaved mark."""
        if self.volume is None:
            return "seg-app[*]"
        name = self.shown_patient.title() or self.scan_name
        return f"{name}[*] - seg-app"

    def scan_summary(self) -> list[str]:
        """Lines (rich text) describing the open scan for the Scan panel."""
        volume, g = self.volume, self.geometry
        if volume is None or g is None:
            return ["No scan open."]
        sp = " x ".join(f"{s:.3g}" for s in volume.spacing)
        info = [
            f"<b>{html.escape(self.scan_name)}</b>",
            f"{volume.modality or 'modality not recorded'}, {' x '.join(map(str, volume.shape))} voxels, {sp} mm",
            f"array axes {volume.orientation}+" + (" (oblique: shown on the closest canonical planes)" if g.oblique else ""),
        ]
        if volume.warnings:
            info.append(f"<span style='color:#c60'>{len(volume.warnings)} loading warning(s): "
                        + "; ".join(volume.warnings) + "</span>")
        return info

    def source_voxel(self, display_index) -> tuple[int, int, int] | None:
        """Source-array indices ``(i, j, k)`` (0-based) of a display voxel; None without a scan."""
        g = self.geometry
        if g is None:
            return None
        d = np.clip(np.round(np.asarray(display_index, float)).astype(int), 0, np.asarray(g.shape) - 1)
        return g.to_source_index(d)

    def describe_voxel(self, display_index, channel: int = 0) -> str:
        """Status-bar text for a display voxel: slice numbers as the views show them (1-based), RAS mm,
        intensity and label ("" without a scan)."""
        g, volume = self.geometry, self.volume
        if g is None or volume is None:
            return ""
        d = np.clip(np.round(np.asarray(display_index, float)).astype(int), 0, np.asarray(g.shape) - 1)
        i, j, k = g.to_source_index(d)
        ras = volume.voxel_to_world((i, j, k))
        value = float(volume.array[channel, i, j, k])
        unit = " HU" if volume.modality == "CT" else ""
        slices = "  ".join(slice_caption(v, d, g.shape) for v in VIEW_NAMES)
        text = f"{slices}   RAS ({ras[0]:.1f}, {ras[1]:.1f}, {ras[2]:.1f}) mm   value {value:.6g}{unit}"
        if self.labels is not None:
            lab = int(self.labels.array[0, i, j, k])
            name = "background" if lab == 0 else self.label_names().get(lab, f"label {lab}")
            text += f"   label {lab} ({name})"
        return text

    # ---- model
    def set_checkpoint(self, checkpoint: Any) -> None:
        self.checkpoint = checkpoint
        self._emit("model")

    @property
    def spec(self) -> Any:
        """The loaded model's ``ModelSpec``, or None."""
        return self.checkpoint.spec if self.checkpoint is not None else None

    def model_label_specs(self) -> list[tuple[int, str, tuple[int, int, int]]]:
        """``(value, name, rgb)`` of each foreground label of the model (one default label without a model)."""
        if self.checkpoint is not None:
            return [(lab.value, lab.name, tuple(lab.color)) for lab in self.checkpoint.spec.foreground_labels]
        return [DEFAULT_LABEL]

    def label_specs(self) -> list[tuple[int, str, tuple[int, int, int]]]:
        """``(value, name, rgb)`` of each foreground label: the model's, or an opened segmentation's.

        With an opened segmentation its names win; a bare ``"label <v>"`` (a NIfTI file has no names)
        keeps the model's name for that value, so a mask exported by this app reopens as it was. Colours:
        the BraTS colour of a BraTS role read from the name, else the model's for that value, else a
        palette. The model's other labels stay listed (they can still be painted).
        """
        model = self.model_label_specs()
        if self.opened_names is None:
            return model
        by_value = {v: (n, c) for v, n, c in model} if self.checkpoint is not None else {}
        from seg_app.core.regions import BRATS_COLORS, brats_role

        out = []
        for v, name in sorted(self.opened_names.items()):
            if int(v) <= 0:
                continue
            model_name, model_color = by_value.get(int(v), (None, None))
            if model_name is not None and name == f"label {int(v)}":
                name = model_name
            role = brats_role(name)
            color = BRATS_COLORS[role] if role else model_color or EXTRA_COLORS[(int(v) - 1) % len(EXTRA_COLORS)]
            out.append((int(v), str(name), tuple(color)))
        out += [spec for spec in model if spec[0] not in self.opened_names and (spec[0] in by_value or not out)]
        return sorted(out)

    def label_names(self) -> dict[int, str]:
        return {v: n for v, n, _c in self.label_specs()}

    def label_colors(self) -> dict[int, tuple[int, int, int]]:
        return {v: c for v, _n, c in self.label_specs()}

    def region_colors(self) -> dict[str, tuple[int, int, int]]:
        """Colour of each sub-region (its label's) and composite (WT: outermost, TC: core, ET: enhancing)."""
        from seg_app.core.regions import composite_regions

        specs = self.label_specs()
        regions = composite_regions({v: n for v, n, _c in specs})
        if not regions:
            return {}
        colors = {v: c for v, _n, c in specs}
        out = {n: c for v, n, c in specs if v != 0}
        oedema = [v for v in regions["WT"] if v not in regions["TC"]]
        for key, v in (("WT", oedema[0] if oedema else regions["WT"][0]), ("TC", regions["TC"][0]), ("ET", regions["ET"][0])):
            out[key] = colors.get(v, (200, 200, 200))
        return out

    def model_card_text(self) -> str | None:
        """The loaded model's card (with its file), or None without a model."""
        if self.checkpoint is None:
            return None
        from seg_app.core.spec import model_card

        text = model_card(self.checkpoint.spec)
        if getattr(self.checkpoint, "path", ""):
            text += f"\nFile: {self.checkpoint.path}"
        return text

    # ---- labels and editing
    def clear_labels(self) -> None:
        """Drop the label map, probabilities, edit history and measurements."""
        self.labels = self.probabilities = self.agreement = None
        self.editor = None
        self.lesions, self.totals = [], []
        self._set_opened(None, "")
        self._emit("labels")

    def _set_opened(self, names: dict[int, str] | None, source: str) -> None:
        changed = names != self.opened_names
        self.opened_names, self.opened_source = (dict(names) if names is not None else None), source
        if changed:
            self._emit("names")

    def open_segmentation(self, loaded: Any) -> None:
        """Put a ``LoadedSegmentation`` (labels on the scan's grid) in place of the mask, as one undo step.

        Its label names replace the model's (see :meth:`label_specs`); undo brings back the previous mask
        and names. The mask equals the file, so nothing is unsaved. Probabilities and the model's result
        are kept (undo returns to them).

        Raises:
            ValueError: no scan is open, the labels do not have the scan's shape or have values above 255.
        """
        if self.volume is None or self.geometry is None:
            raise ValueError("open a scan before opening a segmentation")
        arr = np.asarray(loaded.labels)
        if arr.shape != self.volume.shape:
            raise ValueError(f"label shape {arr.shape} does not match the scan {self.volume.shape}")
        if arr.size and int(arr.max()) > 255:
            raise ValueError(f"label value {int(arr.max())} is above 255, the largest value the editor keeps")
        self.ensure_labels()
        assert self.editor is not None
        before = (self.opened_names, self.opened_source)
        after = ({int(v): str(n) for v, n in loaded.names.items()}, str(loaded.source))
        self.editor.replace(self.geometry.view(arr.astype(np.uint8)), note=("opened", before, after))
        self.lesions, self.totals = [], []
        self._set_opened(*after)
        self._emit("labels")
        self.set_dirty(False)

    def set_labels(self, labels: Volume, probabilities: Volume | None = None, agreement: Volume | None = None) -> None:
        """Replace the label map (copied into a writable uint8 array on the scan's grid).

        The old edit history and measurements go: they described the previous labels.

        Raises:
            ValueError: no scan is open, or the labels do not have the scan's shape.
        """
        if self.volume is None or self.geometry is None:
            raise ValueError("open a scan before setting labels")
        arr = np.array(labels.array, dtype=np.uint8, copy=True)
        if arr.shape[1:] != self.volume.shape:
            raise ValueError(f"label shape {arr.shape} does not match the scan {self.volume.shape}")
        self.labels = Volume(arr, self.volume.affine, modality="SEG", source_paths=(), series_description="")
        self.probabilities = probabilities
        self.agreement = agreement
        self.editor = LabelEditor(self.geometry.view(arr[0]), self.geometry.spacing)
        self.lesions, self.totals = [], []
        self._set_opened(None, "")
        self._emit("labels")

    def set_result(self, result: Any) -> None:
        """Take a ``SegmentationResult``: its labels replace the mask, which is now unsaved."""
        self.last_result = result
        self.set_labels(result.labels, result.probabilities, getattr(result, "agreement", None))
        self.set_dirty(True)

    def ensure_labels(self) -> bool:
        """Start an empty mask when painting on a scan without one; True when there is a mask."""
        if self.labels is None and self.volume is not None:
            self.set_labels(self.volume.with_array(np.zeros((1,) + self.volume.shape, np.uint8)))
        return self.labels is not None

    @property
    def display_labels(self) -> np.ndarray | None:
        """The label array in display axes (a view: writes land in ``labels``)."""
        return self.editor.labels if self.editor is not None else None

    @property
    def display_probability(self) -> np.ndarray | None:
        if self.probabilities is None or self.geometry is None:
            return None
        return self.geometry.view(self.probabilities.array[0])

    @property
    def manually_edited(self) -> bool:
        """True when brush strokes changed the mask (and were not all undone)."""
        return self.editor is not None and self.editor.can_undo

    def mark_edited(self) -> None:
        """A stroke, undo or redo changed the labels."""
        self.set_dirty(True)

    def undo(self) -> bool:
        step = self.editor.next_undo if self.editor is not None else None
        if self.editor is not None and self.editor.undo():
            self._restore_opened(step, 1)
            self.mark_edited()
            return True
        return False

    def redo(self) -> bool:
        step = self.editor.next_redo if self.editor is not None else None
        if self.editor is not None and self.editor.redo():
            self._restore_opened(step, 2)
            self.mark_edited()
            return True
        return False

    def _restore_opened(self, step: Any, which: int) -> None:
        """Undo (``which`` 1: names before) or redo (2: after) of an opened segmentation's names."""
        note = getattr(step, "note", None)
        if isinstance(note, tuple) and len(note) == 3 and note[0] == "opened":
            self._set_opened(*note[which])

    def lesion_values(self, lesion: Any) -> tuple[int, ...]:
        """Label values a lesion is made of (whole-tumour lesions of a sub-region model: all of them)."""
        from seg_app.core.regions import composite_regions

        regions = composite_regions(self.label_names())
        if regions and int(lesion.label) == 0:
            return tuple(int(v) for v in regions["WT"])
        return (int(lesion.label),)

    def delete_lesion(self, lesion: Any) -> bool:
        """Erase every voxel of ``lesion`` (one undo step); False when it is no longer in the mask."""
        from seg_app.gui.calipers import lesion_mask

        if self.labels is None or self.editor is None or self.geometry is None:
            return False
        found = lesion_mask(self.labels.array[0], lesion, self.lesion_values(lesion))
        if found is None:
            return False
        box, mask = found
        g = self.geometry
        full = np.zeros(self.labels.shape, bool)
        full[box] = mask
        corners = [g.from_source_index([s.start if pick else s.stop - 1 for s, pick in zip(box, bits)])
                   for bits in np.ndindex(2, 2, 2)]
        lo, hi = np.min(corners, axis=0), np.max(corners, axis=0) + 1
        dbox = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        if self.editor.fill(dbox, g.view(full)[dbox], 0) is None:
            return False
        self.mark_edited()
        return True

    # ---- measurements
    def measurement_task(self) -> Callable[[], tuple[list, list[dict]]] | None:
        """A function that measures a snapshot of the current labels (run it in a worker); None without labels."""
        if self.labels is None or self.volume is None:
            return None
        labels = self.labels.with_array(self.labels.array.copy())  # snapshot: edits may continue
        image, prob, agreement = self.volume, self.probabilities, self.agreement
        names = self.label_names()
        model_labels = getattr(self.last_result, "labels", None) if prob is not None else None
        predicted = None if model_labels is None or model_labels.shape != labels.shape else model_labels.array[0]

        def measure():
            import dataclasses

            from seg_app.core.measure import label_totals, measure_lesions
            from seg_app.core.regions import composite_regions
            from seg_app.gui.calipers import lesion_mask

            regions = composite_regions(names)
            lesions = measure_lesions(labels, image=image, probabilities=prob, agreement=agreement, label_names=names,
                                      regions=regions)
            whole = tuple(int(v) for v in regions.get("WT", ()))
            if predicted is not None:  # lesions painted by hand where the model found nothing have no confidence
                for n, les in enumerate(lesions):
                    found = lesion_mask(labels.array[0], les, whole if whole and les.label == 0 else None)
                    if found is not None and not np.any(predicted[found[0]][found[1]]):
                        lesions[n] = dataclasses.replace(les, confidence=None, tta_agreement=None)
            return lesions, label_totals(lesions)

        return measure

    def set_measurements(self, lesions: list, totals: list[dict]) -> None:
        self.lesions, self.totals = list(lesions), list(totals)
        self._emit("measurements")

    @property
    def intensity_unit(self) -> str:
        return "HU" if self.volume is not None and self.volume.modality == "CT" else ""

    def domain_warnings(self, result: Any) -> list[str]:
        """The out-of-distribution sentences for this scan and the result's model (shown in the banner)."""
        spec = getattr(result, "spec", None)
        if spec is None or self.volume is None:
            return []
        from seg_app.core.ood import domain_warnings

        return domain_warnings(self.volume, spec)

    # ---- export
    def export_name(self, suffix: str) -> str:
        """Default export file name ``<scan>_<suffix>`` (e.g. ``scan_mask.nii.gz``); ``seg-app_<suffix>`` without a scan."""
        return f"{safe_file_name(self.volume.name) if self.volume is not None else 'seg-app'}_{suffix}"

    def export_refusal(self, path: str | Path) -> str | None:
        """Why the mask cannot be written to ``path`` (one sentence), or None when it can."""
        if self.labels is None or self.volume is None:
            return "There is no mask to save; segment the scan or paint one first."
        p = Path(path)
        if overwrites_source(p, self.volume.source_paths):
            return f"Refusing to save to {p.name}: that would overwrite the source scan."
        return None

    def export_snapshot(self) -> tuple[Volume, Volume]:
        """``(labels copy, reference scan)`` to write in a worker while editing goes on."""
        assert self.labels is not None and self.volume is not None
        return self.labels.with_array(self.labels.array.copy()), self.volume

    def measurements_metadata(self, tta: bool = False) -> dict:
        """Scan, model and result provenance for the measurements JSON."""
        from seg_app.core.export import measurements_metadata

        doc = measurements_metadata(self.volume, self.spec, result=self.last_result,
                                    model_path=getattr(self.checkpoint, "path", ""), tta=tta)
        doc["patient"] = dict(self.shown_patient.header_rows())
        if self.anonymise:  # paths, names and UIDs can identify the patient too
            doc["source"].update(path="", name="anonymised", series_uid="")
        return doc

    def measurements_header(self) -> list[tuple[str, str]]:
        """Patient and scan identifiers for the CSV header (none but "anonymised" when hidden)."""
        return self.shown_patient.header_rows()

    def mark_saved(self) -> None:
        """The mask was exported: nothing is unsaved any more."""
        self.set_dirty(False)


__all__ = ["DEFAULT_LABEL", "Session"]
