"""Drafts and label versions: apply/undo/redo edit ops on a draft, commit it as an immutable version (409 on a
stale parent), rebase, revert, review, diff and training samples.

The numeric work is in ``edit_ops``, ``recipe``, ``label_codec`` and ``samples``; this module loads, locks,
calls and saves.

One writer, many readers. The draft's materialized map (``drafts/<id>/labels.npy``, edited in place through a
memory map) is a cache of "base version + ops"; the revision it holds is stamped beside it (``revision.txt``,
replaced atomically; ``dirty`` while an op is being written). Only a writer changes the map or the stamp, and
every writer holds the draft's row lock (``select_for_update``) from before it reads the stamp until its
transaction ends, so two tabs (or two requests, threads or processes) on one draft apply their ops one after the
other. A writer that finds the stamp behind or ahead of its locked row (a crash, a rolled-back transaction)
rebuilds the map by replaying the ops, which only it may do. Readers (``reading_draft``, ``draft_array``) never
write: they take a shared lock on the row (PostgreSQL ``FOR SHARE``, which waits for a writer's ``FOR UPDATE``
and blocks none of the other readers), so no writer is between its first voxel and its commit while they read;
when the stamp matches the row they read the map, otherwise they replay the row's ops in memory. Either way
they serve the committed revision of the row, never a half-written or stale map.
"""

import os
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from dla.labeling.codec import class_counts, decode_labels, diff_labels, encode_labels, labels_sha256
from dla.labeling.edit_ops import EditOpError, OpResult, VolumeContext, apply_op, canonical_op

from . import volume_store
from .models import Draft, LabelVersion, Study, Volume


class LabelRuleError(ValueError):
    """A request that the labeling rules refuse (the message says why); nothing was changed."""


class DraftMoved(Exception):
    """The request was made on a draft revision that is not the current one; nothing was changed."""

    def __init__(self, draft: Draft, expected_revision: int):
        self.draft, self.expected_revision = draft, expected_revision
        super().__init__(
            f"the draft changed since this edit was made: it was made on revision {expected_revision}, the draft "
            f"is now at revision {draft.revision} (edited in another tab or window?); reload the draft and "
            "repeat the edit if it is still needed"
        )


def check_revision(draft: Draft, expected_revision: int | None) -> None:
    """Raise ``DraftMoved`` when ``expected_revision`` is given and is not ``draft.revision``."""
    if expected_revision is not None and int(expected_revision) != draft.revision:
        raise DraftMoved(draft, int(expected_revision))


class LabelConflict(Exception):
    """The draft's base is not the study's head version any more."""

    def __init__(self, draft: Draft, head: LabelVersion | None):
        self.draft, self.head = draft, head
        base = f"v{draft.base_version.number}" if draft.base_version else "no version"
        super().__init__(
            f"the study's labels moved on: your draft is based on {base} but the head is v{head.number if head else 0} "
            f"by {head.author if head else '-'}; rebase your draft onto the head (your edits are kept) and commit again"
        )


# ------------------------------------------------------------------------------------------------ loading


def newest_approved(study: Study) -> LabelVersion | None:
    """The study's approved label version with the highest number (what training and evaluation use), or None."""
    return study.label_versions.filter(review_status=LabelVersion.Review.APPROVED).order_by("-number").first()


def head_version(study: Study) -> LabelVersion | None:
    return study.label_versions.order_by("-number").first()


def label_grid(study: Study) -> Volume:
    fill = study.volume(Volume.Role.FILL)
    if fill is None:
        raise LabelRuleError(f"study {study.pseudonym} has no fill volume; import one before labeling")
    return fill


def volume_context(study: Study) -> VolumeContext:
    fill = label_grid(study)

    def load():
        subtracted = study.volume(Volume.Role.SUBTRACTED)
        if subtracted is None:
            raise LabelRuleError(
                f"study {study.pseudonym} has no subtracted (DSA) volume; the recipe needs one"
            )
        return np.asarray(fill.array()), np.asarray(subtracted.array())

    def predicted(volume_id: int) -> np.ndarray:
        volume = Volume.objects.filter(pk=volume_id, study=study, role=Volume.Role.CLASS_MAP).first()
        if volume is None:
            raise EditOpError(
                f"model_vessels: volume {volume_id} is not a predicted class map of study {study.pseudonym}; "
                "run inference on this study first and use the class map it stored"
            )
        return np.asarray(volume.array())

    return VolumeContext(tuple(fill.spacing_mm), loader=load, prediction_loader=predicted)


def version_labels(version: LabelVersion) -> np.ndarray:
    """The uint8 [z, y, x] labels of a version (decoded from its compressed file)."""
    with default_storage.open(version.file, "rb") as handle:
        return decode_labels(handle.read(), tuple(version.shape))


def _save_blob(data: bytes, prefix: str) -> str:
    return default_storage.save(f"{prefix}/{uuid.uuid4().hex}.bin", ContentFile(data))


def _draft_paths(draft: Draft) -> tuple[Path, Path]:
    path = volume_store.local_path(f"drafts/{draft.pk}/labels.npy")
    return path, path.with_name("revision.txt")


DIRTY = "dirty"


def _read_stamp(draft: Draft) -> str | None:
    try:
        return _draft_paths(draft)[1].read_text().strip()
    except FileNotFoundError:
        return None


def _write_stamp(draft: Draft, text: str) -> None:
    """Replace the revision stamp atomically (a reader never sees a half-written or empty stamp)."""
    revision_file = _draft_paths(draft)[1]
    revision_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=revision_file.parent, suffix=".stamp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, revision_file)


def _cache_is_fresh(draft: Draft) -> bool:
    """The map on disk holds ``draft.revision`` (``draft`` must be the row as seen under its lock)."""
    return _draft_paths(draft)[0].exists() and _read_stamp(draft) == str(draft.revision)


def _write_draft_array(draft: Draft, labels: np.ndarray) -> None:
    """Replace the cached map with ``labels`` (a new file: memory maps of the old one keep the old voxels) and
    stamp it with ``draft.revision``. Writers only, under the row lock."""
    path, _ = _draft_paths(draft)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_stamp(draft, DIRTY)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        np.save(handle, labels, allow_pickle=False)
    os.replace(tmp, path)
    _write_stamp(draft, str(draft.revision))
    draft.file = f"drafts/{draft.pk}/labels.npy"


def _base_labels(draft: Draft) -> np.ndarray:
    if draft.base_version is not None:
        return version_labels(draft.base_version)
    return np.zeros(tuple(label_grid(draft.study).shape), dtype=np.uint8)


def _replayed(draft: Draft) -> np.ndarray:
    """Base version + the draft's recorded ops, in memory (nothing written)."""
    labels = _base_labels(draft)
    ctx = volume_context(draft.study)
    for entry in draft.ops:
        apply_op(labels, entry["op"], ctx, recorded=True)
    return labels


def _writable_array(draft: Draft) -> np.ndarray:
    """The cached map as a writable memory map for a writer holding the row lock; rebuilt first by replaying
    the ops when its stamp is not the locked row's revision (behind, ahead, dirty or missing)."""
    if not _cache_is_fresh(draft):
        _write_draft_array(draft, _replayed(draft))
    return np.load(_draft_paths(draft)[0], mmap_mode="r+", allow_pickle=False)


def _share_locked(draft_id: int) -> Draft:
    """The draft's row under a shared lock (inside a transaction): waits while a writer holds the row lock,
    lets other readers in. PostgreSQL ``FOR SHARE``; elsewhere the exclusive lock (SQLite's immediate
    transactions serialize anyway)."""
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(Draft._meta.db_table)
        rows = list(Draft.objects.raw(f"SELECT * FROM {table} WHERE id = %s FOR SHARE", [draft_id]))
        if not rows:
            raise Draft.DoesNotExist(f"draft {draft_id} does not exist")
        return rows[0]
    return Draft.objects.select_for_update().get(pk=draft_id)


@contextmanager
def _reading(draft_id: int) -> Iterator[tuple[Draft, np.ndarray]]:
    with transaction.atomic():
        row = _share_locked(draft_id)
        if _cache_is_fresh(row):
            labels = np.load(_draft_paths(row)[0], mmap_mode="r", allow_pickle=False)
        else:
            labels = _replayed(row)
            labels.flags.writeable = False
        yield row, labels


@contextmanager
def reading_draft(draft: Draft) -> Iterator[np.ndarray]:
    """Read-only uint8 [z, y, x] labels of ``draft``'s committed revision, valid inside the ``with`` block.

    Holds the row's shared lock for the block: a writer busy with this draft is waited for, and none can start
    until the block ends, so slicing the yielded map is consistent (and copies nothing). The revision served is
    the row's as of the lock (the caller's ``draft`` may be older: then a newer committed revision is served,
    never an older one). Never writes: a cache whose stamp differs from the row is replayed in memory instead.
    """
    with _reading(draft.pk) as (_, labels):
        yield labels


_SNAPSHOTS: OrderedDict[tuple, np.ndarray] = OrderedDict()
_SNAPSHOTS_LOCK = threading.Lock()
SNAPSHOTS_KEPT = 2  # per process: the workspace asks for several slices and a MIP of each revision


def draft_array(draft: Draft) -> np.ndarray:
    """A read-only in-memory copy of the draft's labels at its committed revision (see ``reading_draft``).

    The copies of the last ``SNAPSHOTS_KEPT`` (draft, revision) pairs are kept per process: a committed
    revision's voxels never change, so the slices and MIPs of one revision share one copy. The shared row
    lock is held only while copying.
    """
    with _reading(draft.pk) as (row, labels):
        key = (row.pk, row.created_at, row.revision)
        with _SNAPSHOTS_LOCK:
            snapshot = _SNAPSHOTS.get(key)
            if snapshot is not None:
                _SNAPSHOTS.move_to_end(key)
                return snapshot
        snapshot = np.array(labels, copy=True)
    snapshot.flags.writeable = False
    with _SNAPSHOTS_LOCK:
        _SNAPSHOTS[key] = snapshot
        while len(_SNAPSHOTS) > SNAPSHOTS_KEPT:
            _SNAPSHOTS.popitem(last=False)
    return snapshot


def _mark_revision(draft: Draft) -> None:
    _write_stamp(draft, str(draft.revision))


def _locked(draft_id: int) -> Draft:
    return (
        Draft.objects.select_for_update(of=("self",)).select_related("study", "base_version").get(pk=draft_id)
    )


# ------------------------------------------------------------------------------------------------ drafts


def get_or_create_draft(study: Study, user) -> Draft:
    label_grid(study)
    draft, created = Draft.objects.get_or_create(
        study=study, user=user, defaults={"base_version": head_version(study)}
    )
    if created:
        with transaction.atomic():
            draft = _locked(draft.pk)
            labels = _writable_array(draft)
            draft.counts = {str(k): v for k, v in class_counts(np.asarray(labels)).items()}
            draft.save(update_fields=["counts", "file"])
    return draft


def checked_op(draft: Draft, op: dict) -> dict:
    """``op`` validated against the draft's grid, in the form it will be recorded (``canonical_op``); raises
    ``EditOpError`` (a 400) naming the problem. For ops that run later as a task (the recipe): refused before
    anything is queued."""
    grid = label_grid(draft.study)
    return canonical_op(op, tuple(grid.shape), tuple(grid.spacing_mm))


def _delete_on_commit(entries) -> None:
    """Delete the undo patches of ``entries`` once the transaction commits (a rollback keeps them usable)."""
    names = [entry["undo"]["file"] for entry in entries if entry.get("undo")]
    if names:
        transaction.on_commit(lambda: [volume_store.delete_file(name) for name in names])


def _apply_and_record(
    draft: Draft, labels: np.ndarray, op: dict, ctx: VolumeContext, *, recorded: bool = False
) -> tuple[dict, OpResult]:
    """Apply ``op`` in place and store its undo patch. The op reports the previous voxels of its bounding box, so
    no whole-volume copy is made. A refused op changes nothing; a crash mid-op leaves the cache marked dirty and
    the next load rebuilds it by replaying the recorded ops. ``recorded``: ``op`` comes from the draft's own
    ops or redo stack (redo, rebase), else it is a new edit. The op is recorded in ``canonical_op`` form (a
    recipe with all its parameters), so its replay never depends on defaults."""
    op = canonical_op(op, labels.shape, ctx.spacing_mm, recorded=recorded)
    in_place = isinstance(labels, np.memmap)  # the cached map (rebase works on a copy in memory)
    if in_place:
        _write_stamp(draft, DIRTY)
    try:
        result = apply_op(labels, op, ctx, recorded=recorded)
    except EditOpError:
        if in_place:
            _mark_revision(draft)  # validated before any voxel changed
        raise
    if in_place:
        labels.flush()
    undo = None
    if result.bbox_zyx is not None:
        undo = {
            "file": _save_blob(encode_labels(result.previous), f"drafts/{draft.pk}/undo"),
            "bbox_zyx": list(result.bbox_zyx),
        }
    return {"op": op, "result": result.to_dict(), "undo": undo}, result


def _finish_change(draft: Draft, labels: np.ndarray, delta_counts: dict | None = None) -> None:
    """Bump the revision and update the per-class counts (from the op's delta when given: no full recount)."""
    draft.revision += 1
    if delta_counts is not None and draft.counts:
        draft.counts = {
            k: int(v) + int(delta_counts.get(k, delta_counts.get(int(k), 0))) for k, v in draft.counts.items()
        }
    else:
        draft.counts = {str(k): v for k, v in class_counts(np.asarray(labels)).items()}
    draft.save()
    _mark_revision(draft)


def apply_draft_op(
    draft_id: int, op: dict, *, expected_revision: int | None = None
) -> tuple[Draft, OpResult]:
    """Apply one edit op (validated by ``edit_ops``) to the draft; clears its redo stack. ``expected_revision``:
    the revision the edit was made on (``DraftMoved`` if the draft is elsewhere now)."""
    with transaction.atomic():
        draft = _locked(draft_id)
        check_revision(draft, expected_revision)
        labels = _writable_array(draft)
        entry, result = _apply_and_record(draft, labels, op, volume_context(draft.study))
        draft.ops = [*draft.ops, entry]
        _delete_on_commit(draft.redo)
        draft.redo = []
        _finish_change(draft, labels, result.delta_counts)
    return draft, result


def undo(draft_id: int, *, expected_revision: int | None = None) -> Draft:
    with transaction.atomic():
        draft = _locked(draft_id)
        check_revision(draft, expected_revision)
        if not draft.ops:
            raise LabelRuleError("nothing to undo: the draft has no edits")
        labels = _writable_array(draft)
        entry = draft.ops[-1]
        if entry.get("undo"):
            z0, z1, y0, y1, x0, x1 = entry["undo"]["bbox_zyx"]
            with default_storage.open(entry["undo"]["file"], "rb") as handle:
                patch = decode_labels(handle.read(), (z1 - z0, y1 - y0, x1 - x0))
            _write_stamp(draft, DIRTY)  # until the new revision is stamped (a crash leaves it to be rebuilt)
            labels[z0:z1, y0:y1, x0:x1] = patch
            labels.flush()
            _delete_on_commit([entry])
        draft.ops = draft.ops[:-1]
        draft.redo = [*draft.redo, {"op": entry["op"]}]
        _finish_change(
            draft, labels, {k: -int(v) for k, v in (entry["result"] or {}).get("delta_counts", {}).items()}
        )
    return draft


def redo(draft_id: int, *, expected_revision: int | None = None) -> Draft:
    with transaction.atomic():
        draft = _locked(draft_id)
        check_revision(draft, expected_revision)
        if not draft.redo:
            raise LabelRuleError("nothing to redo")
        labels = _writable_array(draft)
        entry, _ = _apply_and_record(
            draft, labels, draft.redo[-1]["op"], volume_context(draft.study), recorded=True
        )
        draft.ops = [*draft.ops, entry]
        draft.redo = draft.redo[:-1]
        _finish_change(draft, labels, entry["result"]["delta_counts"])
    return draft


def discard(draft_id: int) -> Draft:
    """Drop all edits; the draft starts again from the study's head version."""
    with transaction.atomic():
        draft = _locked(draft_id)
        _delete_on_commit([*draft.ops, *draft.redo])
        draft.ops, draft.redo = [], []
        draft.base_version = head_version(draft.study)
        draft.revision += 1
        labels = _base_labels(draft)
        _write_draft_array(draft, labels)
        draft.counts = {str(k): v for k, v in class_counts(labels).items()}
        draft.save()
    return draft


def rebase(draft_id: int) -> Draft:
    """Replay the draft's ops on the study's head version (the way out of a 409)."""
    with transaction.atomic():
        draft = _locked(draft_id)
        head = head_version(draft.study)
        if head is None or draft.base_version_id == head.pk:
            raise LabelRuleError("the draft is already based on the head version; nothing to rebase")
        ops = [entry["op"] for entry in draft.ops]
        _delete_on_commit([*draft.ops, *draft.redo])
        draft.base_version = head
        draft.ops, draft.redo = [], []
        labels = version_labels(head)  # in memory: the cached map keeps the row's revision until the end
        ctx = volume_context(draft.study)
        draft.ops = [_apply_and_record(draft, labels, op, ctx, recorded=True)[0] for op in ops]
        draft.revision += 1
        draft.counts = {str(k): v for k, v in class_counts(labels).items()}
        _write_draft_array(draft, labels)
        draft.save()
    return draft


# ------------------------------------------------------------------------------------------------ versions


def _last_op_value(ops: list[dict], op_type: str, key: str):
    for entry in reversed(ops):
        if entry["op"].get("op") == op_type:
            return entry["op"].get(key)
    return None


def _create_version(
    study: Study, *, labels: np.ndarray, parent, author, message, recipe, ops, roi
) -> LabelVersion:
    blob = encode_labels(np.ascontiguousarray(labels))
    name = _save_blob(blob, f"labels/{study.pk}")
    head = head_version(study)
    try:
        with transaction.atomic():
            return LabelVersion.objects.create(
                study=study,
                number=(head.number if head else 0) + 1,
                parent=parent,
                author=author,
                message=message,
                recipe=recipe or {},
                ops=ops,
                counts={str(k): v for k, v in class_counts(labels).items()},
                roi_box_zyx=roi,
                shape=list(labels.shape),
                sha256=labels_sha256(labels),
                file=name,
                stored_bytes=len(blob),
            )
    except BaseException:
        volume_store.delete_file(name)
        raise


def commit(draft_id: int, user, message: str) -> LabelVersion:
    """Commit the draft as the next version; ``LabelConflict`` when its base is not the head."""
    if not message or not message.strip():
        raise LabelRuleError("a commit needs a message saying what changed")
    with transaction.atomic():
        draft = _locked(draft_id)
        Study.objects.select_for_update().get(pk=draft.study_id)  # one commit per study at a time
        if draft.user_id != user.pk:
            raise LabelRuleError(f"this draft belongs to {draft.user}; only its owner can commit it")
        head = head_version(draft.study)
        if (head.pk if head else None) != draft.base_version_id:
            raise LabelConflict(draft, head)
        if not draft.ops:
            raise LabelRuleError("the draft has no edits; there is nothing to commit")
        labels = np.asarray(_writable_array(draft))
        base = draft.base_version
        try:
            version = _create_version(
                draft.study,
                labels=labels,
                parent=base,
                author=user,
                message=message.strip(),
                recipe=_last_op_value(draft.ops, "recipe", "params") or (base.recipe if base else {}),
                ops=[{"op": e["op"], "result": e["result"]} for e in draft.ops],
                roi=_last_op_value(draft.ops, "set_roi", "box_zyx") or (base.roi_box_zyx if base else None),
            )
        except IntegrityError:
            raise LabelConflict(draft, head_version(draft.study))
        _delete_on_commit(draft.ops)
        draft.base_version = version
        draft.ops, draft.redo = [], []
        draft.revision += 1
        draft.save()
        _mark_revision(draft)
    return version


def revert(version: LabelVersion, user, message: str = "") -> LabelVersion:
    """A new head version whose labels equal ``version``'s (history is never rewritten)."""
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=version.study_id)
        head = head_version(study)
        if head.pk == version.pk:
            raise LabelRuleError(f"v{version.number} is already the head version")
        return _create_version(
            study,
            labels=version_labels(version),
            parent=head,
            author=user,
            message=message.strip() or f"Revert to v{version.number}",
            recipe=version.recipe,
            ops=[{"op": {"op": "revert", "to_version": version.number}, "result": None}],
            roi=version.roi_box_zyx,
        )


def submit_for_review(version: LabelVersion) -> LabelVersion:
    if version.review_status == LabelVersion.Review.APPROVED:
        raise LabelRuleError(f"v{version.number} is already approved")
    version.review_status = LabelVersion.Review.SUBMITTED
    version.save(update_fields=["review_status"])
    return version


def review(version: LabelVersion, user, status: str, comment: str) -> LabelVersion:
    """Approve or reject ``version`` (under its row lock). A decision stands: an approved or rejected version is
    not reviewed again (commit a new version instead), except that an approval may be withdrawn by a rejection
    with a comment (an approved version found wrong must stop feeding training)."""
    if status == LabelVersion.Review.REJECTED and not comment.strip():
        raise LabelRuleError("a rejection needs a comment telling the annotator what to fix")
    with transaction.atomic():
        current = LabelVersion.objects.select_for_update().get(pk=version.pk)
        decided = current.review_status in (LabelVersion.Review.APPROVED, LabelVersion.Review.REJECTED)
        withdrawal = (
            current.review_status == LabelVersion.Review.APPROVED and status == LabelVersion.Review.REJECTED
        )
        if decided and not withdrawal:
            who = f" by {current.reviewed_by.username}" if current.reviewed_by else ""
            raise LabelRuleError(
                f"v{current.number} was already {current.review_status}{who}; "
                "it cannot be reviewed again (commit a new version, or reject an approved one with a comment)"
            )
        return _record_review(current, user, status, comment)


def _record_review(version: LabelVersion, user, status: str, comment: str) -> LabelVersion:
    version.review_status = status
    version.review_comment = comment.strip()
    version.reviewed_by = user
    version.reviewed_at = timezone.now()
    version.save(update_fields=["review_status", "review_comment", "reviewed_by", "reviewed_at"])
    return version


def diff_versions(a: LabelVersion, b: LabelVersion) -> dict:
    if a.study_id != b.study_id:
        raise LabelRuleError("versions of different studies cannot be compared")
    return {"from": a.number, "to": b.number, **diff_labels(version_labels(a), version_labels(b)).to_dict()}
