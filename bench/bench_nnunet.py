"""Benchmark (issue 18.3): nnU-Net v2's own predictor vs DLA on the same whole-head volume, measured in one run.

nnU-Net is planned by itself: a small nnU-Net raw dataset of ``--cases`` phantoms at the paper's grid
(400 x 512 x 512 voxels at 0.46 mm, ``dla.phantoms.make_subject``; the fill CT as channel 0 "CT" in NIfTI,
the phantom truth as labels 0 background (air, metal, unlabeled), 1 vessel, 2 bone, 3 soft tissue) goes through
nnU-Net's own fingerprint extraction and experiment planning (``plan_and_preprocess_api.extract_fingerprints`` /
``plan_experiments``, default planner, the 3d_fullres target spacing set to the head's) in a temporary
nnUNet_raw / nnUNet_preprocessed / nnUNet_results. The planned 3d_fullres network is built by
``nnUNetTrainer.build_network_architecture`` with random weights (no training: speed does not depend on the
weights) and handed to ``nnUNetPredictor.manual_initialization`` (CPU, step size 0.5, gaussian weighting, as
nnU-Net predicts). The head (phantom seed 0, as ``bench_full_head.py``) is read with the plan's reader and
preprocessed by the plan's preprocessor (measured, whole head); the predictor's own
``predict_logits_from_preprocessed_data`` then runs on the whole preprocessed head with its sliding-window patch
list cut to one warm-up patch + ``--patches`` patches without mirroring and ``--mirrored-patches`` with nnU-Net's
default test-time mirroring (8 forward passes per patch for 3D), spread evenly over the head; every patch is
timed inside the predictor. The whole-head time is extrapolated: measured preprocessing + measured fixed cost of
the sliding-window call (result arrays, gaussian, division; the call's time minus its patches) + the number of
patches the sliding window needs for the whole head x the mean measured patch time + the measured export
(logits to segmentation). On 2 cores the full sliding window would take hours (the issue: ~7,300 s without,
~50,000 s with mirroring).

DLA in the same run: the ``cpu`` preset (and ``paper`` with ``--paper``), random weights, the inference task's
numeric path on the same fill (intensity candidates, dense prediction of the candidates, 3D-DLA volume), whole
head measured, once before and once after nnU-Net (the ratio uses their mean: the load of a shared machine
drifts; ``--no-dla-repeat``: before only); ``--quick``: a ``--slab``-slice slab in the middle of the head,
extrapolated by slices.
torch threads = ``--threads`` for both (and nnUNet_def_n_proc); the load average is recorded before and after
each step, and besides wall time the process CPU seconds (both threads; less sensitive to other processes on a
shared machine). Prints the plan and a table with the ratios nnU-Net / DLA; writes bench/results/nnunet_vs_dla.json.
Needs the optional ``bench`` extra (nnunetv2); without it the script says how to install it and exits with 2.
About 15 minutes on 2 cores with the defaults.

    .venv/bin/pip install -e '.[bench]'          # once: nnunetv2 (torch stays as pinned)
    .venv/bin/python bench/bench_nnunet.py                       # 3 cases, 3 patches + 1 mirrored, DLA whole head
    .venv/bin/python bench/bench_nnunet.py --quick --patches 1   # DLA on a 40-slice slab, extrapolated
    .venv/bin/python bench/bench_nnunet.py --paper --patches 5 --mirrored-patches 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dla.classes import BONE, CLASS_NAMES, SOFT_TISSUE, UNLABELED, VESSEL  # noqa: E402
from dla.model.dense import (  # noqa: E402
    DEFAULT_CANDIDATE_MIN_HU,
    dla_volume,
    intensity_candidates,
    predict_volume,
)
from dla.model.network import build_model, count_parameters  # noqa: E402
from dla.phantoms import default_spacing_mm, make_subject  # noqa: E402

SHAPE_ZYX = (400, 512, 512)
DATASET_ID = 901
DATASET_NAME = f"Dataset{DATASET_ID:03d}_DLAPhantomHead"
NNUNET_VERSION = "2.8.1"  # the version pinned in pyproject's bench extra
INSTALL_HELP = f"""nnU-Net v2 is not installed: this benchmark needs the package nnunetv2 (only for this bench; the
test suite and the application do not use it). Install the optional 'bench' extra into the project's venv
(it pins nnunetv2=={NNUNET_VERSION} and keeps torch at the project's pin):

    .venv/bin/pip install -e '.[bench]'

or, equivalently,

    .venv/bin/pip install "nnunetv2=={NNUNET_VERSION}" "torch==2.13.0"

then run again: .venv/bin/python bench/bench_nnunet.py"""


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def load() -> float:
    return round(os.getloadavg()[0], 2)


def nnunet_available() -> bool:
    try:
        return importlib.util.find_spec("nnunetv2") is not None
    except (ImportError, ValueError):
        return False


def nnunet_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nnunetv2")
    except PackageNotFoundError:
        return "?"


def set_nnunet_env(root: Path, threads: int) -> None:
    """nnU-Net reads its folders (and its process count) from the environment when first imported."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (root / name).mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(root / name)
    os.environ["nnUNet_def_n_proc"] = str(threads)
    os.environ.setdefault("nnUNet_compile", "f")


def write_nifti(path: Path, volume_zyx: np.ndarray, spacing_zyx) -> None:
    """NIfTI as nnU-Net's NibabelIO reads it back: stored (x, y, z), voxel sizes (dx, dy, dz)."""
    import nibabel as nib

    dz, dy, dx = spacing_zyx
    nib.save(
        nib.Nifti1Image(np.ascontiguousarray(volume_zyx.transpose(2, 1, 0)), np.diag([dx, dy, dz, 1.0])), path
    )


def make_dataset(raw_root: Path, cases: int, shape, spacing) -> tuple[np.ndarray, Path, float]:
    """nnU-Net raw dataset of ``cases`` whole-head phantoms; returns the fill of seed 0, its image file and the
    mean phantom build time."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    folder = raw_root / DATASET_NAME
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir(parents=True)
    head = None
    build_s = []
    for seed in range(cases):
        subject, t = timed(lambda s=seed: make_subject(shape, spacing, seed=s))
        build_s.append(t)
        fill, truth = subject.fill_hu, subject.truth
        del subject
        case = f"phantom_{seed:03d}"
        write_nifti(folder / "imagesTr" / f"{case}_0000.nii", fill, spacing)
        write_nifti(folder / "labelsTr" / f"{case}.nii", truth, spacing)
        print(
            f"  case {case}: phantom {t:.1f} s, {np.count_nonzero(truth == VESSEL):,} vessel voxels",
            flush=True,
        )
        if seed == 0:
            head = fill
        del truth
    generate_dataset_json(
        str(folder),
        channel_names={0: "CT"},
        labels={
            "background": UNLABELED,  # truth 0: air, metal, unlabeled
            CLASS_NAMES[VESSEL]: VESSEL,
            CLASS_NAMES[BONE]: BONE,
            CLASS_NAMES[SOFT_TISSUE]: SOFT_TISSUE,
        },
        num_training_cases=cases,
        file_ending=".nii",
        dataset_name=DATASET_NAME,
        description="DLA phantom heads (dla.phantoms.make_subject), fill CT and exact truth; bench only",
        overwrite_image_reader_writer="NibabelIO",
    )
    return head, folder / "imagesTr" / "phantom_000_0000.nii", float(np.mean(build_s))


def plan_nnunet(threads: int, spacing, planner: str) -> dict:
    """nnU-Net's own fingerprint + experiment planning; returns the timings and the plans file."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments
    from nnunetv2.paths import nnUNet_preprocessed

    _, t_fp = timed(
        lambda: extract_fingerprints(
            [DATASET_ID], num_processes=threads, check_dataset_integrity=True, show_progress_bar=False
        )
    )
    plans_identifier, t_plan = timed(
        lambda: plan_experiments(
            [DATASET_ID], experiment_planner_class_name=planner, overwrite_target_spacing=tuple(spacing)
        )
    )
    folder = Path(nnUNet_preprocessed) / DATASET_NAME
    return {
        "fingerprint_s": t_fp,
        "planning_s": t_plan,
        "plans_identifier": plans_identifier,
        "plans_file": folder / f"{plans_identifier}.json",
        "fingerprint": json.loads((folder / "dataset_fingerprint.json").read_text()),
    }


def describe_plan(plans_manager, cm, network, fingerprint) -> dict:
    kw = cm.network_arch_init_kwargs
    return {
        "configuration": "3d_fullres",
        "patch_size": list(cm.patch_size),
        "spacing_mm": list(cm.spacing),
        "batch_size": cm.batch_size,
        "median_image_size_in_voxels": list(cm.median_image_size_in_voxels),
        "fingerprint_shapes_after_crop": fingerprint.get("shapes_after_crop"),
        "fingerprint_spacings_mm": fingerprint.get("spacings"),
        "transpose_forward": list(plans_manager.transpose_forward),
        "normalization_schemes": list(cm.normalization_schemes),
        "network_class": cm.network_arch_class_name,
        "n_stages": kw.get("n_stages"),
        "features_per_stage": kw.get("features_per_stage"),
        "kernel_sizes": kw.get("kernel_sizes"),
        "strides": kw.get("strides"),
        "parameters": count_parameters(network),
        "configurations_planned": list(plans_manager.available_configurations),
    }


def time_nnunet(plans_file: Path, head_file: Path, args) -> dict:
    """The predictor on the whole preprocessed head, its sliding-window patch list cut to the measured patches."""
    from nnunetv2.inference.export_prediction import (
        convert_predicted_logits_to_segmentation_with_correct_shape,
    )
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.paths import nnUNet_raw
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset_json = json.loads((Path(nnUNet_raw) / DATASET_NAME / "dataset.json").read_text())
    plans_manager = PlansManager(str(plans_file))
    cm = plans_manager.get_configuration("3d_fullres")
    label_manager = plans_manager.get_label_manager(dataset_json)
    torch.manual_seed(0)
    network = nnUNetTrainer.build_network_architecture(
        plans_manager,
        cm,
        determine_num_input_channels(plans_manager, cm, dataset_json),
        label_manager.num_segmentation_heads,
        enable_deep_supervision=False,
    )
    plan = describe_plan(
        plans_manager, cm, network, json.loads((plans_file.parent / "dataset_fingerprint.json").read_text())
    )
    print(
        f"nnU-Net plan (3d_fullres, its own planner): patch {'x'.join(map(str, plan['patch_size']))} at "
        f"{'/'.join(f'{s:.2f}' for s in plan['spacing_mm'])} mm, batch {plan['batch_size']}, "
        f"{plan['network_class'].rsplit('.', 1)[-1]} {plan['n_stages']} stages {plan['features_per_stage']}, "
        f"{plan['parameters'] / 1e6:.1f} M parameters (random weights: no training, timing only), "
        f"normalization {plan['normalization_schemes']}, configurations {plan['configurations_planned']}",
        flush=True,
    )
    # nnUNetTrainer's inference mirroring axes for 3D (configure_rotation_dummyDA_mirroring_and_initial_patch_size)
    mirror_axes = (0, 1, 2)
    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=False,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        verbose=False,
        allow_tqdm=False,
    )
    predictor.manual_initialization(
        network, plans_manager, cm, [network.state_dict()], dataset_json, "nnUNetTrainer", mirror_axes
    )

    reader = plans_manager.image_reader_writer_class()
    (image, props), t_read = timed(lambda: reader.read_images([str(head_file)]))
    preprocessor = cm.preprocessor_class(verbose=False)
    t0, c0 = time.perf_counter(), time.process_time()
    data, _, props = preprocessor.run_case_npy(image, None, props, plans_manager, cm, dataset_json)
    t_pre, cpu_pre = time.perf_counter() - t0, time.process_time() - c0
    del image
    data = torch.from_numpy(data)
    print(
        f"  read {t_read:.1f} s, preprocessed {tuple(data.shape[1:])} in {t_pre:.1f} s (load {load()})",
        flush=True,
    )

    # every patch the sliding window visits: the predictor's own slicers; each timed run keeps an even subset
    full = {}
    keep = {"n": 0}
    own_slicers = predictor._internal_get_sliding_window_slicers

    def cut_slicers(image_size):
        slicers = own_slicers(image_size)
        full["n"] = len(slicers)
        idx = np.linspace(0, len(slicers) - 1, keep["n"]).round().astype(int)  # repeats if the head is small
        return [slicers[i] for i in idx]

    patch_s, patch_cpu_s = [], []  # wall and process CPU seconds (all threads) of each patch
    own_predict = predictor._internal_maybe_mirror_and_predict

    def timed_patch(x):
        t, c = time.perf_counter(), time.process_time()
        out = own_predict(x)
        patch_s.append(time.perf_counter() - t)
        patch_cpu_s.append(time.process_time() - c)
        return out

    predictor._internal_get_sliding_window_slicers = cut_slicers
    predictor._internal_maybe_mirror_and_predict = timed_patch

    cpu = {}

    def run(n, mirroring):
        predictor.use_mirroring = mirroring
        keep["n"] = n
        patch_s.clear()
        patch_cpu_s.clear()
        l0 = load()
        c0 = time.process_time()
        logits, t = timed(lambda: predictor.predict_logits_from_preprocessed_data(data))
        cpu["call"] = time.process_time() - c0
        cpu["patches"] = list(patch_cpu_s)
        times = list(patch_s)
        print(
            f"  {'mirrored' if mirroring else 'plain'}: {len(times)} patches in {t:.1f} s: "
            + ", ".join(f"{s:.1f}" for s in times)
            + f" s (load {l0} -> {load()})",
            flush=True,
        )
        return logits, t, times, (l0, load())

    logits, t_plain_call, plain_times, load_plain = run(1 + args.patches, False)
    warmup_s, plain = plain_times[0], plain_times[1:]
    overhead_s = max(0.0, t_plain_call - sum(plain_times))
    plain_cpu = cpu["patches"][1:]
    overhead_cpu = max(0.0, cpu["call"] - sum(cpu["patches"]))
    t0, c0 = time.perf_counter(), time.process_time()
    convert_predicted_logits_to_segmentation_with_correct_shape(
        logits, plans_manager, cm, label_manager, props
    )
    t_export, cpu_export = time.perf_counter() - t0, time.process_time() - c0
    del logits
    mirrored, mirrored_cpu, load_mirrored = [], [], None
    if args.mirrored_patches > 0:
        _, _, mirrored, load_mirrored = run(args.mirrored_patches, True)
        mirrored_cpu = cpu["patches"]
    n_patches = full["n"]
    per_patch = float(np.mean(plain))
    per_mirrored = float(np.mean(mirrored)) if mirrored else None
    code_factor = 2 ** len(mirror_axes)  # the network on x and on each of the 7 flip combinations of 3 axes
    mirror_factor = per_mirrored / per_patch if mirrored else float(code_factor)
    fixed = t_pre + overhead_s + t_export
    total_plain = fixed + n_patches * per_patch
    total_mirrored = fixed + n_patches * per_patch * mirror_factor
    # process CPU seconds (both threads): less sensitive than wall time to other processes on the cores
    fixed_cpu = cpu_pre + overhead_cpu + cpu_export
    per_patch_cpu = float(np.mean(plain_cpu))
    per_mirrored_cpu = float(np.mean(mirrored_cpu)) if mirrored_cpu else per_patch_cpu * code_factor
    return {
        "plan": plan,
        "predictor": {
            "class": "nnunetv2.inference.predict_from_raw_data.nnUNetPredictor",
            "tile_step_size": 0.5,
            "use_gaussian": True,
            "device": "cpu",
            "perform_everything_on_device": False,
            "inference_allowed_mirroring_axes": list(mirror_axes),
            "forward_passes_per_mirrored_patch": code_factor,
        },
        "preprocessed_shape": list(data.shape[1:]),
        "read_s": t_read,
        "preprocess_s": t_pre,
        "sliding_window_patches_whole_head": n_patches,
        "warmup_patch_s": warmup_s,
        "patch_s": plain,
        "mean_patch_s": per_patch,
        "sliding_window_fixed_s": overhead_s,
        "export_s": t_export,
        "mirrored_patch_s": mirrored,
        "mean_mirrored_patch_s": per_mirrored,
        "mirror_factor": mirror_factor,
        "mirror_factor_source": "measured" if mirrored else f"predictor code ({code_factor} forward passes)",
        "patch_cpu_s": plain_cpu,
        "mean_patch_cpu_s": per_patch_cpu,
        "mirrored_patch_cpu_s": mirrored_cpu,
        "mean_mirrored_patch_cpu_s": per_mirrored_cpu,
        "fixed_cpu_s": fixed_cpu,
        "whole_head_no_mirroring_cpu_s": fixed_cpu + n_patches * per_patch_cpu,
        "whole_head_mirroring_cpu_s": fixed_cpu + n_patches * per_mirrored_cpu,
        "whole_head_no_mirroring_s": total_plain,
        "whole_head_mirroring_s": total_mirrored,
        "load_average_plain": load_plain,
        "load_average_mirrored": load_mirrored,
        "measured": "reading, preprocessing and export of the whole head; one sliding-window call of the "
        "predictor over the whole head with 1 warm-up + the timed patches (and one with the mirrored patches)",
        "extrapolated": f"the other {max(0, n_patches - len(plain))} of {n_patches} patches at the mean measured patch "
        "time (x the mirror factor with mirroring)",
    }


def time_dla(fill: np.ndarray, preset: str, quick: bool, slab: int) -> dict:
    torch.manual_seed(0)
    model = build_model(preset)
    if quick:
        z0 = max(0, fill.shape[0] // 2 - slab // 2)
        volume = np.ascontiguousarray(fill[z0 : z0 + slab])
    else:
        volume = fill
    scale = fill.shape[0] / volume.shape[0]
    l0 = load()
    c0 = time.process_time()
    candidates, t_cand = timed(lambda: intensity_candidates(volume, DEFAULT_CANDIDATE_MIN_HU))
    prediction, t_pred = timed(lambda: predict_volume(model, volume, candidate_mask=candidates))
    _, t_dla = timed(lambda: dla_volume(volume, prediction.class_map))
    measured = t_cand + t_pred + t_dla
    measured_cpu = time.process_time() - c0
    out = {
        "preset": preset,
        "parameters": count_parameters(model),
        "measured_shape_zyx": list(volume.shape),
        "extrapolated_by_slices": quick,
        "candidates_fraction": float(candidates.mean()),
        "candidates_s": t_cand,
        "predict_s": t_pred,
        "dla_volume_s": t_dla,
        "measured_total_s": measured,
        "measured_total_cpu_s": measured_cpu,
        "whole_head_s": measured * scale,
        "whole_head_cpu_s": measured_cpu * scale,
        "whole_head_predict_s": t_pred * scale,
        "load_average": (l0, load()),
    }
    print(
        f"  DLA {preset}: {out['parameters']:,} parameters, {'x'.join(map(str, volume.shape))} in {measured:.1f} s "
        f"(predict {t_pred:.1f} s){f', x{scale:.0f} -> {measured * scale:.0f} s' if quick else ''} "
        f"(load {l0} -> {load()})",
        flush=True,
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cases", type=int, default=3, help="phantoms in nnU-Net's raw dataset (for its planner)"
    )
    ap.add_argument(
        "--patches", type=int, default=3, help="timed patches without mirroring (after one warm-up)"
    )
    ap.add_argument("--mirrored-patches", type=int, default=1, help="timed patches with test-time mirroring")
    ap.add_argument("--planner", default="ExperimentPlanner", help="nnU-Net experiment planner class")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (and nnUNet_def_n_proc)")
    ap.add_argument("--quick", action="store_true", help="DLA on a slab, extrapolated by slices")
    ap.add_argument("--slab", type=int, default=40, help="slices of the --quick slab")
    ap.add_argument("--paper", action="store_true", help="also time DLA's paper preset")
    ap.add_argument(
        "--no-dla-repeat",
        action="store_true",
        help="time DLA only before nnU-Net (default: before and after)",
    )
    ap.add_argument(
        "--shape", type=int, nargs=3, default=SHAPE_ZYX, metavar=("Z", "Y", "X"), help="grid (smoke tests)"
    )
    ap.add_argument(
        "--keep", type=Path, default=None, help="keep nnU-Net's folders here (default: a temp dir)"
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "nnunet_vs_dla.json")
    args = ap.parse_args()
    if not nnunet_available():
        print(INSTALL_HELP, file=sys.stderr)
        return 2
    if args.patches < 1 or args.cases < 1 or args.mirrored_patches < 0:
        ap.error("--patches and --cases must be >= 1, --mirrored-patches >= 0")
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    shape = tuple(args.shape)
    spacing = default_spacing_mm(shape)
    with tempfile.TemporaryDirectory(prefix="nnunet_bench_") as tmp:
        root = args.keep if args.keep is not None else Path(tmp)
        set_nnunet_env(root, args.threads)
        try:
            from nnunetv2.experiment_planning import plan_and_preprocess_api  # noqa: F401
            from nnunetv2.inference import predict_from_raw_data  # noqa: F401
        except ImportError as exc:
            print(f"{INSTALL_HELP}\n\n(import failed: {exc})", file=sys.stderr)
            return 2
        print(
            f"nnU-Net v2 {nnunet_version()} vs DLA: {'x'.join(map(str, shape))} at "
            f"{spacing[0]} mm, {args.cases} cases for the planner, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, load {load_start[0]:.2f}",
            flush=True,
        )
        head, head_file, phantom_s = make_dataset(Path(os.environ["nnUNet_raw"]), args.cases, shape, spacing)
        planned = plan_nnunet(args.threads, spacing, args.planner)
        print(
            f"  fingerprint {planned['fingerprint_s']:.1f} s, planning {planned['planning_s']:.1f} s "
            f"({planned['plans_identifier']}, load {load()})",
            flush=True,
        )
        presets = ["cpu", "paper"] if args.paper else ["cpu"]
        # DLA before and (unless --no-dla-repeat) after nnU-Net: on a shared machine the load drifts
        dla_runs = {p: [time_dla(head, p, args.quick, args.slab)] for p in presets}
        nn = time_nnunet(planned["plans_file"], head_file, args)
        if not args.no_dla_repeat:
            for p in presets:
                dla_runs[p].append(time_dla(head, p, args.quick, args.slab))
        del head
        plans_json = json.loads(planned["plans_file"].read_text())
    dla = {
        p: {
            "preset": p,
            "runs": r,
            "measured_shape_zyx": r[0]["measured_shape_zyx"],
            "extrapolated_by_slices": args.quick,
            "whole_head_s": float(np.mean([x["whole_head_s"] for x in r])),
            "whole_head_predict_s": float(np.mean([x["whole_head_predict_s"] for x in r])),
            "whole_head_s_each_run": [x["whole_head_s"] for x in r],
            "whole_head_cpu_s": float(np.mean([x["whole_head_cpu_s"] for x in r])),
        }
        for p, r in dla_runs.items()
    }

    ratios = {
        preset: {
            "no_mirroring": nn["whole_head_no_mirroring_s"] / d["whole_head_s"],
            "mirroring": nn["whole_head_mirroring_s"] / d["whole_head_s"],
            "no_mirroring_cpu_s": nn["whole_head_no_mirroring_cpu_s"] / d["whole_head_cpu_s"],
            "mirroring_cpu_s": nn["whole_head_mirroring_cpu_s"] / d["whole_head_cpu_s"],
        }
        for preset, d in dla.items()
    }
    plan = nn["plan"]
    n = nn["sliding_window_patches_whole_head"]
    rows = [
        (
            "nnU-Net plan (3d_fullres)",
            f"patch {'x'.join(map(str, plan['patch_size']))}, {plan['spacing_mm'][0]:.2f} mm, "
            f"{plan['network_class'].rsplit('.', 1)[-1]} {plan['parameters'] / 1e6:.1f} M parameters",
        ),
        ("sliding-window patches, whole head", f"{n} (step 0.5)"),
        ("nnU-Net preprocessing (measured)", f"{nn['preprocess_s']:.1f} s"),
        (
            f"nnU-Net patch, no mirroring ({len(nn['patch_s'])} measured)",
            f"{nn['mean_patch_s']:.1f} s each ("
            + ", ".join(f"{x:.1f}" for x in nn["patch_s"])
            + f"; warm-up {nn['warmup_patch_s']:.1f} s), {nn['mean_patch_cpu_s']:.1f} CPU s",
        ),
        (
            f"nnU-Net patch, mirroring ({len(nn['mirrored_patch_s'])} measured)",
            f"{nn['mean_mirrored_patch_s']:.1f} s ({nn['mirror_factor']:.2f}x; 8 forward passes), "
            f"{nn['mean_mirrored_patch_cpu_s']:.1f} CPU s"
            if nn["mirrored_patch_s"]
            else f"not measured: {nn['mirror_factor']:.0f}x from the predictor's code",
        ),
        (
            "nnU-Net fixed cost + export (measured)",
            f"{nn['sliding_window_fixed_s']:.1f} s + {nn['export_s']:.1f} s",
        ),
        (
            "nnU-Net whole head, no mirroring",
            f"{nn['whole_head_no_mirroring_s']:,.0f} s ({nn['whole_head_no_mirroring_s'] / 3600:.2f} h, "
            f"extrapolated from {len(nn['patch_s'])} of {n} patches)",
        ),
        (
            "nnU-Net whole head, mirroring (default)",
            f"{nn['whole_head_mirroring_s']:,.0f} s ({nn['whole_head_mirroring_s'] / 3600:.2f} h)",
        ),
    ]
    for preset, d in dla.items():
        rows.append(
            (
                f"DLA {preset}, whole head",
                f"{d['whole_head_s']:.1f} s ("
                + (
                    f"extrapolated from {d['measured_shape_zyx'][0]} slices"
                    if d["extrapolated_by_slices"]
                    else "measured"
                )
                + f"; predict {d['whole_head_predict_s']:.1f} s; "
                + (
                    "mean of before / after nnU-Net: "
                    + " / ".join(f"{x:.1f}" for x in d["whole_head_s_each_run"])
                    if len(d["runs"]) > 1
                    else "before nnU-Net only"
                )
                + " s)",
            )
        )
        rows.append(
            (
                f"ratio nnU-Net / DLA {preset}",
                f"{ratios[preset]['no_mirroring']:.0f}x without mirroring, {ratios[preset]['mirroring']:.0f}x with",
            )
        )
        rows.append(
            (
                f"same, by process CPU seconds ({preset})",
                f"{ratios[preset]['no_mirroring_cpu_s']:.0f}x without, {ratios[preset]['mirroring_cpu_s']:.0f}x with "
                f"(nnU-Net {nn['whole_head_no_mirroring_cpu_s']:,.0f} / {nn['whole_head_mirroring_cpu_s']:,.0f} "
                f"CPU s, DLA {d['whole_head_cpu_s']:.0f} CPU s)",
            )
        )
    width = max(len(r[0]) for r in rows)
    table = "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
    print(table, flush=True)
    out = {
        "what": "nnU-Net v2's own predictor (its own plan for the phantom heads, random weights) vs DLA on the "
        "same 400x512x512 phantom head at 0.46 mm, one run; nnU-Net patches measured, whole head extrapolated",
        "command": " ".join([".venv/bin/python", "bench/bench_nnunet.py", *sys.argv[1:]]),
        "shape_zyx": list(shape),
        "spacing_mm": list(spacing),
        "cases_for_planning": args.cases,
        "phantom_s_per_case": phantom_s,
        "planner": args.planner,
        "fingerprint_s": planned["fingerprint_s"],
        "planning_s": planned["planning_s"],
        "plans_3d_fullres": plans_json["configurations"]["3d_fullres"],
        "nnunet": nn,
        "dla": dla,
        "ratio_nnunet_over_dla": ratios,
        "table": table,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "nnunetv2": nnunet_version(),
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "load_average_start": list(load_start),
            "load_average_end": list(os.getloadavg()),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        },
        "wall_s": time.perf_counter() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=str))
    print(f"\nwrote {args.out} ({out['wall_s']:.0f} s, load {load()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
