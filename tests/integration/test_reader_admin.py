# ruff: noqa: F811
"""Reader studies in the Django admin (issue 16.3/16.6): a draft's design can be changed there and every change
(study, question, reader) is in the audit log with before and after and the acting admin; a reader with another
role is refused in the reader inline; once the study is opened its page is read-only (no field, no inline, no
delete; a forged POST is refused and changes nothing), the seed is not shown until it closes, and the models
themselves refuse design changes of an open study from any path."""

import re
from html.parser import HTMLParser

import pytest
from django.test import Client

from tests.integration.reader_support import open_reader_study, reader_cases  # noqa: F401

pytestmark = pytest.mark.django_db


class _FormFields(HTMLParser):
    """The fields a browser would submit from the admin change form (inputs, textareas, selects)."""

    def __init__(self):
        super().__init__()
        self.fields: list[tuple[str, str]] = []
        self._textarea = None
        self._select = None
        self._select_value = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") in ("checkbox", "radio"):
                if "checked" in a:
                    self.fields.append((name, a.get("value", "on")))
            else:
                self.fields.append((name, a.get("value", "")))
        elif tag == "textarea" and name:
            self._textarea = [name, ""]
        elif tag == "select" and name:
            self._select, self._select_value = name, None
        elif tag == "option" and self._select is not None and ("selected" in a or self._select_value is None):
            if "selected" in a or self._select_value is None:
                self._select_value = a.get("value", "")

    def handle_data(self, data):
        if self._textarea is not None:
            self._textarea[1] += data

    def handle_endtag(self, tag):
        if tag == "textarea" and self._textarea is not None:
            self.fields.append(tuple(self._textarea))
            self._textarea = None
        elif tag == "select" and self._select is not None:
            self.fields.append((self._select, self._select_value or ""))
            self._select = None


def form_of(html: str) -> dict:
    parser = _FormFields()
    parser.feed(html[html.index('id="readerstudy_form"') :])
    return dict(parser.fields)


def admin_client(users):
    client = Client()
    client.force_login(users["admin"])
    return client


def events(rs, prefix="reader_study.admin."):
    from dla_web.models import AuditEvent

    return list(AuditEvent.objects.filter(object_id=str(rs.pk), action__startswith=prefix).order_by("id"))


def test_admin_changes_to_a_draft_are_audited_with_before_and_after(users, make_user):
    from django.contrib.auth.models import Group

    from reader_study import services
    from reader_study.models import Question, ReaderStudy

    rs = ReaderStudy.objects.create(title="Draft", instructions="old", created_by=users["admin"])
    services.add_default_questions(rs)
    question = rs.questions.get(key="residual_bone")
    client = admin_client(users)
    url = f"/admin/reader_study/readerstudy/{rs.pk}/change/"
    page = client.get(url).content.decode()
    assert "randomization_seed" not in page and rs.randomization_seed not in page  # secret while not closed
    data = form_of(page)
    prefix = next(k[: -len("-TOTAL_FORMS")] for k in data if k.endswith("-TOTAL_FORMS") and "question" in k)
    index = next(
        k.split("-")[1]
        for k, v in data.items()
        if k.endswith("-id") and k.startswith(prefix) and v == str(question.pk)
    )
    data.update({"instructions": "Score A and B.", f"{prefix}-{index}-text": "Residual bone present?"})
    r = client.post(url, data)
    assert r.status_code == 302, re.findall(r'class="errorlist[^"]*"[^>]*>(.*?)</ul>', r.content.decode())
    rs.refresh_from_db()
    question.refresh_from_db()
    assert rs.instructions == "Score A and B." and question.text == "Residual bone present?"
    by_action = {e.action: e for e in events(rs)}
    study = by_action["reader_study.admin.study.change"]
    assert study.username == "admin" and study.detail["via"] == "django admin"
    assert (
        study.detail["before"]["instructions"] == "old"
        and study.detail["after"]["instructions"] == "Score A and B."
    )
    changed = by_action["reader_study.admin.question.change"].detail
    assert changed["before"]["text"] == "Residual bone artifact present"
    assert changed["after"]["text"] == "Residual bone present?" and changed["after"]["id"] == question.pk
    assert not any("seed" in str(e.detail) for e in events(rs))

    # a reader with another role is refused in the inline, nothing is saved or audited
    both = make_user("both", "Reader")
    both.groups.add(Group.objects.get(name="Annotator"))
    data = form_of(client.get(url).content.decode())
    reader_prefix = next(
        k[: -len("-TOTAL_FORMS")] for k in data if k.endswith("-TOTAL_FORMS") and "reader" in k
    )
    n = int(data[f"{reader_prefix}-TOTAL_FORMS"])
    data.update({f"{reader_prefix}-TOTAL_FORMS": str(n + 1), f"{reader_prefix}-{n}-user": str(both.pk)})
    r = client.post(url, data)
    assert r.status_code == 200 and "also has the Annotator role" in r.content.decode()
    assert not rs.readers.exists()
    assert "reader_study.admin.reader.add" not in {e.action for e in events(rs)}

    # a plain reader is accepted, and the addition is audited
    data[f"{reader_prefix}-{n}-user"] = str(users["reader"].pk)
    assert client.post(url, data).status_code == 302
    added = next(e for e in events(rs) if e.action == "reader_study.admin.reader.add")
    assert added.detail["before"] is None and added.detail["after"]["username"] == "reader"

    # deleting a question of the draft is audited too; not while another question's condition points at it
    data = form_of(client.get(url).content.decode())

    def index_of(pk):
        return next(
            k.split("-")[1]
            for k, v in data.items()
            if k.endswith("-id") and k.startswith(prefix) and v == str(pk)
        )

    data[f"{prefix}-{index_of(question.pk)}-DELETE"] = "on"
    r = client.post(url, data)
    assert r.status_code == 200 and "no question &#x27;residual_bone&#x27;" in r.content.decode()
    assert Question.objects.filter(pk=question.pk).exists()
    locations = rs.questions.get(key="artifact_locations")
    data[f"{prefix}-{index_of(locations.pk)}-DELETE"] = "on"  # with the question that depends on it: fine
    assert client.post(url, data).status_code == 302
    assert not Question.objects.filter(pk__in=[question.pk, locations.pk]).exists()
    deleted = next(e for e in events(rs) if e.action == "reader_study.admin.question.delete")
    assert deleted.detail["before"]["text"] == "Residual bone present?" and deleted.detail["after"] is None


def test_an_open_study_is_read_only_in_the_admin_and_on_the_models(open_reader_study, users):
    from reader_study.models import DesignFrozen, Question, Reader, ReaderStudy

    rs = open_reader_study(n_cases=1)
    question = rs.questions.get(key="residual_bone")
    client = admin_client(users)
    url = f"/admin/reader_study/readerstudy/{rs.pk}/change/"
    page = client.get(url).content.decode()
    assert 'name="_save"' not in page and 'name="instructions"' not in page  # read-only page
    editable = re.findall(
        r'<(?:input|textarea|select)(?![^>]*type="hidden")[^>]*name="(?!csrfmiddlewaretoken)', page
    )
    assert editable == []  # no field of the study or of any inline can be edited
    assert set(re.findall(r'name="\w+-MAX_NUM_FORMS" value="(\d+)"', page)) == {"0"}  # and none added
    assert rs.randomization_seed not in page
    # a forged POST changes nothing and writes no design event
    forged = {
        "title": "x",
        "instructions": "changed",
        "questions-TOTAL_FORMS": "1",
        "questions-INITIAL_FORMS": "1",
        "questions-0-id": str(question.pk),
        "questions-0-text": "changed",
    }
    assert client.post(url, forged).status_code == 403
    assert client.post(f"/admin/reader_study/readerstudy/{rs.pk}/delete/", {"post": "yes"}).status_code == 403
    rs.refresh_from_db()
    question.refresh_from_db()
    assert rs.instructions == "" and question.text == "Residual bone artifact present"
    assert events(rs) == []
    # the models refuse it from any path (shell, another admin page, a bug)
    question.text = "changed"
    with pytest.raises(DesignFrozen, match="only while it is a draft"):
        question.save()
    with pytest.raises(DesignFrozen):
        Question.objects.create(reader_study=rs, key="late", text="Late", type="yes_no")
    with pytest.raises(DesignFrozen):
        Reader.objects.get(reader_study=rs).delete()
    rs.allow_edits = True
    with pytest.raises(DesignFrozen, match="allow_edits"):
        rs.save()
    rs = ReaderStudy.objects.get(pk=rs.pk)
    rs.title = "renamed"  # the title is not part of the design
    rs.save()
    # after close the seed is shown, read-only
    from reader_study import services

    services.close_study(rs)
    page = client.get(url).content.decode()
    assert rs.randomization_seed in page and 'name="randomization_seed"' not in page
