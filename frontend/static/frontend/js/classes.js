// Tissue class ids, names and overlay colours as defined once in the science package (classes.py). The page hands them over with
// json_script (id "tissue-classes", from frontend.context_processors.tissue_classes in frontend/base.html); this module
// only reads them, it never repeats a number or a colour.

const node = document.getElementById("tissue-classes");
if (!node) throw new Error("the page has no #tissue-classes data (frontend/base.html renders it)");
const data = JSON.parse(node.textContent);

// class name -> id, e.g. CLASS_IDS.vessel
export const CLASS_IDS = Object.freeze({ ...data.ids });
export const UNLABELED = CLASS_IDS.unlabeled;
export const VESSEL = CLASS_IDS.vessel;
export const BONE = CLASS_IDS.bone;
export const SOFT_TISSUE = CLASS_IDS.soft_tissue;

// labeled class ids in LABELED_CLASSES order
export const LABELED_CLASSES = Object.freeze(data.labeled.map((c) => c.id));
// id -> display name ("soft tissue")
export const CLASS_LABELS = Object.freeze(Object.fromEntries(data.labeled.map((c) => [c.id, c.label])));
// id -> [r, g, b, a], 0-255 (CLASS_COLORS_RGBA)
export const CLASS_COLORS = Object.freeze(Object.fromEntries(data.labeled.map((c) => [c.id, Object.freeze([...c.rgba])])));
