"""The DLA science without Django, as a notebook would use it: phantoms -> the paper's label recipe -> a tiny
voxel classifier trained densely -> a 3D-DLA volume -> metrics against the recipe labels and the exact truth.

Run it as a script (``python examples/notebook_walkthrough.py``, from any folder once ``pip install -e .`` has
run) or open it as a notebook: the ``# %%`` markers are cells for Jupyter (jupytext), VS Code and PyCharm. It
takes about half a minute on two CPU cores; the test suite runs it so it stays true. Nothing here imports Django,
Celery or a database.
"""

# %% Imports: only the `dla` package, numpy and torch.
import sys
import time

import numpy as np
import torch

from dla.classes import CLASS_NAMES, LABELED_CLASSES, VESSEL
from dla.labeling.recipe import run_recipe
from dla.model.dense import dla_volume, intensity_candidates, predict_volume
from dla.model.network import build_model
from dla.model.train import TrainConfig, TrainingData, train
from dla.phantoms import make_subject
from dla.stats.metrics import study_metrics

torch.manual_seed(0)
torch.set_num_threads(2)
SHAPE_ZYX = (64, 96, 96)  # the demo studies' grid
SPACING_MM = 1.4
RECIPE = {"vessel_threshold_hu": 600, "min_vessel_component_voxels": 30}
started = time.perf_counter()

# %% Phantoms: three synthetic heads (fill, mask, subtracted DSA and the exact truth map), no motion.
subjects = [make_subject(SHAPE_ZYX, spacing_mm=SPACING_MM, seed=seed, motion=False) for seed in (1, 2, 3)]
train_subjects, test_subject = subjects[:2], subjects[2]
print(f"phantoms: {len(subjects)} x {SHAPE_ZYX} voxels at {SPACING_MM} mm")

# %% Labels: the paper's recipe (threshold the DSA, keep vessel trees; bone and soft tissue from the fill).
labels = []
for subject in train_subjects:
    result = run_recipe(subject.fill_hu, subject.subtracted_hu, subject.spacing_mm, RECIPE)
    counts = np.bincount(result.labels.ravel(), minlength=4)
    print("recipe labels:", {CLASS_NAMES[c]: int(counts[c]) for c in LABELED_CLASSES})
    labels.append(result.labels)

# %% Train the `tiny` preset densely on the recipe labels: the paper's SGD with momentum, but a constant, larger
# learning rate and 150 iterations so that it fits in a cell. The figures below show the path working end to end,
# not the method's quality: `manage.py reproduce_paper` trains the real thing (docs/REPRODUCTION.md).
model = build_model("tiny")
data = TrainingData([(s.fill_hu, y) for s, y in zip(train_subjects, labels, strict=True)], name="training")
config = TrainConfig(
    preset="tiny",
    max_iterations=150,
    val_every=50,
    val_samples_per_class=200,
    dense_slabs_per_batch=4,
    lr_values=(1e-2,),
    lr_boundaries_epochs=(),
)
trained = train(model, data, data, config)
print(
    f"trained {trained.iterations} iterations in {trained.elapsed_s:.1f} s, "
    f"balanced validation error {trained.best_val_error:.3f}"
)

# %% Infer: dense classification of the unseen subject's fill volume, then the 3D-DLA angiogram.
model.eval()
prediction = predict_volume(
    model, test_subject.fill_hu, candidate_mask=intensity_candidates(test_subject.fill_hu, 100)
)
angiogram_hu = dla_volume(test_subject.fill_hu, prediction.class_map)
print(
    f"inference: {prediction.voxels_per_s:,.0f} voxels/s; DLA volume {angiogram_hu.shape} {angiogram_hu.dtype}"
)

# %% Metrics: against the recipe's labels of the test subject (the paper's Table 1 reference) and the truth.
test_labels = run_recipe(
    test_subject.fill_hu, test_subject.subtracted_hu, test_subject.spacing_mm, RECIPE
).labels
for reference_name, reference in (("recipe labels", test_labels), ("exact truth", test_subject.truth)):
    m = study_metrics(reference, prediction.class_map)
    print(
        f"vs {reference_name}: vessel Dice {m.dice:.3f}, sensitivity {m.sensitivity:.3f}, "
        f"PPV {m.ppv:.3f}, accuracy {m.accuracy:.3f}"
    )
vessel_voxels = int(np.count_nonzero(prediction.class_map == VESSEL))
print(f"done in {time.perf_counter() - started:.1f} s; {vessel_voxels} voxels called vessel")
if vessel_voxels == 0 or "django" in sys.modules:
    raise SystemExit("the walkthrough went wrong: no vessel predicted, or Django was imported")
