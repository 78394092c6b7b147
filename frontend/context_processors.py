"""Template context shared by every page: the tissue class definitions of ``dla.classes``.

``tissue_classes`` is what the browser needs to draw and name labels: ``ids`` (class name -> id, unlabeled
included) and ``labeled`` (one entry per labeled class in ``LABELED_CLASSES`` order: ``id``, ``name``, a display
``label`` and the overlay colour ``rgba`` 0-255). ``frontend/base.html`` hands it to the ES modules with
``json_script`` (id ``tissue-classes``, read by ``js/classes.js``); templates may loop over ``labeled`` too.
"""

from dla.classes import CLASS_COLORS_RGBA, CLASS_NAMES, LABELED_CLASSES

DLA_CLASSES = {
    "ids": {name: class_id for class_id, name in CLASS_NAMES.items()},
    "labeled": [
        {
            "id": class_id,
            "name": CLASS_NAMES[class_id],
            "label": CLASS_NAMES[class_id].replace("_", " "),
            "rgba": list(CLASS_COLORS_RGBA[class_id]),
        }
        for class_id in LABELED_CLASSES
    ],
}


def tissue_classes(request):
    """Template context processor: ``tissue_classes`` (see the module docstring)."""
    return {"tissue_classes": DLA_CLASSES}
