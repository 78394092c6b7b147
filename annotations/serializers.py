"""Serializers for studies, volumes and imports."""

from rest_framework import serializers

from .models import Draft, LabelVersion, Study, Volume


class VolumeSerializer(serializers.ModelSerializer):
    class Meta:
        model = Volume
        fields = [
            "id",
            "study",
            "role",
            "dtype",
            "shape",
            "spacing_mm",
            "affine_lps",
            "hu_min",
            "hu_max",
            "sha256",
            "series_uid",
            "series_description",
            "source",
            "model_version_id",
            "created_at",
        ]
        read_only_fields = fields


class StudySerializer(serializers.ModelSerializer):
    volumes = serializers.SerializerMethodField()
    has_dla = serializers.SerializerMethodField()
    label_status = serializers.SerializerMethodField(help_text="review status of the newest label version")

    class Meta:
        model = Study
        fields = [
            "id",
            "pseudonym",
            "patient_pseudonym",
            "cohort",
            "injection_site",
            "source",
            "notes",
            "metadata",
            "created_at",
            "volumes",
            "has_dla",
            "label_status",
        ]
        read_only_fields = ["id", "pseudonym", "patient_pseudonym", "source", "metadata", "created_at"]

    def get_volumes(self, study) -> list[dict]:
        return [{"id": v.pk, "role": v.role, "shape": v.shape} for v in study.volumes.all()]

    def get_label_status(self, study) -> str:
        if hasattr(study, "head_review_status"):
            status = study.head_review_status
        else:
            head = study.label_versions.order_by("-number").first()
            status = head.review_status if head else None
        return {None: "no labels", "none": "labels not submitted"}.get(status, status)

    def get_has_dla(self, study) -> bool:
        return any(v.role == Volume.Role.DLA for v in study.volumes.all())

    def validate(self, attrs):
        cohort = attrs.get("cohort")
        if cohort is not None and self.instance is not None:
            from django.core.exceptions import ValidationError as DjangoValidationError

            try:
                self.instance.check_cohort_assignment(cohort)
            except DjangoValidationError as exc:
                raise serializers.ValidationError({"cohort": exc.messages[0]})
        return attrs


class ImportSerializer(serializers.Serializer):
    files = serializers.ListField(
        child=serializers.FileField(allow_empty_file=False),
        allow_empty=False,
        help_text="DICOM files, a zip of a DICOM series, or NIfTI (.nii/.nii.gz)",
    )
    study = serializers.PrimaryKeyRelatedField(
        queryset=Study.objects.all(), required=False, allow_null=True, help_text="add to this study"
    )
    pseudonym = serializers.RegexField(r"^[A-Za-z0-9_-]{1,64}$", required=False, allow_blank=True)
    role = serializers.ChoiceField(
        choices=[r for r in Volume.Role.values if r not in ("truth", "class_map", "vessel_prob")],
        required=False,
        allow_null=True,
        allow_blank=True,
    )
    cohort = serializers.ChoiceField(choices=Study.Cohort.values, default=Study.Cohort.UNASSIGNED)
    injection_site = serializers.ChoiceField(choices=Study.Injection.values, default=Study.Injection.UNKNOWN)


class LabelVersionSerializer(serializers.ModelSerializer):
    author = serializers.CharField(source="author.username", default=None, read_only=True)
    reviewed_by = serializers.CharField(
        source="reviewed_by.username", default=None, read_only=True, allow_null=True
    )
    parent_number = serializers.IntegerField(
        source="parent.number", default=None, read_only=True, allow_null=True
    )

    class Meta:
        model = LabelVersion
        fields = [
            "id",
            "study",
            "number",
            "parent",
            "parent_number",
            "author",
            "message",
            "recipe",
            "ops",
            "counts",
            "roi_box_zyx",
            "shape",
            "sha256",
            "stored_bytes",
            "created_at",
            "review_status",
            "review_comment",
            "reviewed_by",
            "reviewed_at",
        ]
        read_only_fields = fields


class DraftSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)
    base_number = serializers.IntegerField(source="base_version.number", default=None, read_only=True)
    ops = serializers.SerializerMethodField()
    can_undo = serializers.SerializerMethodField()
    can_redo = serializers.SerializerMethodField()

    class Meta:
        model = Draft
        fields = [
            "id",
            "study",
            "user",
            "base_version",
            "base_number",
            "ops",
            "can_undo",
            "can_redo",
            "revision",
            "counts",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [f for f in fields if f != "study"]

    def get_ops(self, draft) -> list[dict]:
        return [{"op": entry["op"], "result": entry["result"]} for entry in draft.ops]

    def get_can_undo(self, draft) -> bool:
        return bool(draft.ops)

    def get_can_redo(self, draft) -> bool:
        return bool(draft.redo)


class DraftRevisionSerializer(serializers.Serializer):
    revision = serializers.IntegerField(
        required=False,
        min_value=0,
        help_text="the draft revision this request was made on (optional); when the draft has moved on "
        "(another tab or request changed it) the request is refused with 409 and changes nothing",
    )


class EditOpSerializer(DraftRevisionSerializer):
    op = serializers.DictField(
        help_text='an edit operation, e.g. {"op": "remove_island", "at_zyx": [z, y, x]}'
    )


class CommitSerializer(serializers.Serializer):
    message = serializers.CharField(max_length=2000, help_text="what changed and why")


class ReviewSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["approved", "rejected", "submitted"])
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class RevertSerializer(serializers.Serializer):
    message = serializers.CharField(required=False, allow_blank=True, default="")


# DICOMweb (admin-only): request bodies. UIDs and patient filters travel in POST bodies, never in URLs, so they
# stay out of access logs.
UID_REGEX = r"^[0-9]+(\.[0-9]+)*$"


class DicomWebErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="which server and what failed (no UIDs)")


class DicomWebServerSerializer(serializers.Serializer):
    name = serializers.CharField()
    url = serializers.CharField()
    auth = serializers.ChoiceField(choices=["basic", "token", "none"])
    username = serializers.CharField(allow_blank=True)
    timeout_s = serializers.IntegerField()
    retries = serializers.IntegerField()
    keep_identity = serializers.BooleanField()


class DicomWebStudySearchSerializer(serializers.Serializer):
    patient_id = serializers.CharField(required=False, allow_blank=True, max_length=64)
    patient_name = serializers.CharField(required=False, allow_blank=True, max_length=64, help_text="* and ?")
    study_date = serializers.RegexField(
        r"^(\d{8})?(-(\d{8})?)?$", required=False, allow_blank=True, help_text="YYYYMMDD or a range A-B"
    )
    modality = serializers.RegexField(r"^[A-Z]{1,16}$", required=False, allow_blank=True)
    accession_number = serializers.CharField(required=False, allow_blank=True, max_length=16)
    description = serializers.CharField(required=False, allow_blank=True, max_length=64)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000, default=100)

    QIDO_KEYS = {
        "patient_id": "PatientID",
        "patient_name": "PatientName",
        "study_date": "StudyDate",
        "modality": "ModalitiesInStudy",
        "accession_number": "AccessionNumber",
        "description": "StudyDescription",
    }

    def qido_filters(self) -> dict:
        return {self.QIDO_KEYS[k]: v for k, v in self.validated_data.items() if k in self.QIDO_KEYS and v}


class DicomWebStudySerializer(serializers.Serializer):
    study_uid = serializers.CharField()
    patient_id = serializers.CharField(allow_blank=True)
    patient_name = serializers.CharField(allow_blank=True)
    study_date = serializers.CharField(allow_blank=True)
    description = serializers.CharField(allow_blank=True)
    accession_number = serializers.CharField(allow_blank=True)
    modalities = serializers.ListField(child=serializers.CharField())
    series_count = serializers.IntegerField(allow_null=True)
    instance_count = serializers.IntegerField(allow_null=True)
    imported_as = serializers.CharField(
        allow_null=True, help_text="pseudonym of the study it was imported as"
    )


class DicomWebSeriesSearchSerializer(serializers.Serializer):
    study_uid = serializers.RegexField(UID_REGEX, max_length=64)


class DicomWebSeriesSerializer(serializers.Serializer):
    series_uid = serializers.CharField()
    number = serializers.IntegerField(allow_null=True)
    description = serializers.CharField(allow_blank=True)
    modality = serializers.CharField(allow_blank=True)
    date = serializers.CharField(allow_blank=True)
    body_part = serializers.CharField(allow_blank=True)
    instance_count = serializers.IntegerField(allow_null=True)
    imported_as = serializers.DictField(allow_null=True)


class DicomWebRetrieveSerializer(serializers.Serializer):
    study_uid = serializers.RegexField(UID_REGEX, max_length=64)
    series_uids = serializers.ListField(
        child=serializers.RegexField(UID_REGEX, max_length=64),
        required=False,
        default=list,
        max_length=500,
        help_text="the series to retrieve (empty: all series of the study)",
    )
    study = serializers.PrimaryKeyRelatedField(
        queryset=Study.objects.all(), required=False, allow_null=True, help_text="add to this study"
    )
    pseudonym = serializers.RegexField(r"^[A-Za-z0-9_-]{1,64}$", required=False, allow_blank=True)
    role = serializers.ChoiceField(
        choices=[r for r in Volume.Role.values if r not in ("truth", "class_map", "vessel_prob")],
        required=False,
        allow_null=True,
        allow_blank=True,
    )
    cohort = serializers.ChoiceField(choices=Study.Cohort.values, default=Study.Cohort.UNASSIGNED)
    injection_site = serializers.ChoiceField(choices=Study.Injection.values, default=Study.Injection.UNKNOWN)


class DicomWebSendSerializer(serializers.Serializer):
    study = serializers.PrimaryKeyRelatedField(queryset=Study.objects.all())
    label_version = serializers.PrimaryKeyRelatedField(
        queryset=LabelVersion.objects.all(), required=False, allow_null=True, help_text="an approved version"
    )
    include_dla = serializers.BooleanField(required=False, default=True)

    def validate(self, attrs):
        version = attrs.get("label_version")
        if version is not None and version.study_id != attrs["study"].pk:
            raise serializers.ValidationError({"label_version": "belongs to another study"})
        if version is None and not attrs.get("include_dla", True):
            raise serializers.ValidationError(
                {"include_dla": "nothing to send: no DLA series, no label version"}
            )
        return attrs
