"""The multipart admission rules: what a form may carry, checked part by part."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.errors import InvalidRequest
from policies.uploads import FormTally, admit_part, form_rules
from proxy.catalog_loader import load_catalog

EDIT = form_rules("edit", load_catalog())
VARIATION = form_rules("variation", load_catalog())


def admit_all(rules, names, *, files=()):
    tally = FormTally()
    kinds = []
    for name in names:
        kind, tally = admit_part(rules, tally, name, has_filename=name in files)
        kinds.append(kind)
    return kinds, tally


def test_a_complete_edit_is_admitted():
    names = ["model", "prompt", "size", "svg[model]", "svg[reasoning][effort]"]
    names += ["image[]"] * 16 + ["mask"]
    kinds, tally = admit_all(EDIT, names, files={"image[]", "mask"})
    assert kinds.count("image") == 16
    assert kinds[-1] == "mask"
    assert tally.parts == len(names)


@pytest.mark.parametrize(
    ("rules", "names", "param", "code"),
    [
        (EDIT, ["prompt", "colour"], "colour", "unknown_parameter"),
        (EDIT, ["image[]"] * 17, "image", "invalid_value"),
        (EDIT, ["prompt", "prompt"], "prompt", "invalid_value"),
        (EDIT, [f"svg[k{chr(97 + i)}]" for i in range(9)], "svg", "invalid_value"),
        (VARIATION, ["image", "image"], "image", "invalid_value"),
        (VARIATION, ["prompt"], "prompt", "unknown_parameter"),
        (VARIATION, ["svg[model]"], "svg[model]", "unknown_parameter"),
    ],
)
def test_a_part_past_the_rules_is_refused(rules, names, param, code):
    with pytest.raises(InvalidRequest) as caught:
        admit_all(rules, names, files={"image", "image[]"})
    assert (caught.value.param, caught.value.code) == (param, code)


def test_a_file_under_a_field_name_is_refused():
    with pytest.raises(InvalidRequest) as caught:
        admit_part(EDIT, FormTally(), "prompt", has_filename=True)
    assert caught.value.code == "unknown_parameter"


@given(st.lists(st.sampled_from([*sorted(EDIT.fields | EDIT.files), "svg[a]", "x"])))
def test_no_form_admits_more_parts_than_the_cap(names):
    tally = FormTally()
    for name in names:
        try:
            _, tally = admit_part(EDIT, tally, name, has_filename=name in EDIT.files)
        except InvalidRequest:
            break
    assert tally.parts <= EDIT.parts_max
    assert tally.images <= EDIT.images_max
