"""Bad definitions are refused before anything runs, naming the object and the field at fault."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

import signal_defs
from signal_defs import demo
from signal_defs.compile import compile_registry
from signal_defs.model import CounterEnrichment, Lifecycle, Ordering, Registry, Stage, col
from signal_defs.validate import DefinitionError, DefinitionErrors, validate

REPO = Path(__file__).resolve().parents[2]
SEQCTL = REPO / ".venv" / "bin" / "seqctl"


def registry(*swaps, add=()) -> Registry:
    """The shipped demo definitions with ``(old, new)`` swaps applied and ``add`` appended."""
    mapping = {id(old): new for old, new in swaps}
    return Registry().add(*[mapping.get(id(d), d) for d in demo.DEFINITIONS], *add)


def refusal(reg: Registry) -> DefinitionErrors:
    with pytest.raises(DefinitionErrors) as info:
        validate(reg)
    # compile validates first: a bad registry never compiles either.
    with pytest.raises(DefinitionErrors):
        compile_registry(reg)
    return info.value


def assert_names(errors: DefinitionErrors, obj: str, field: str, *also: str) -> DefinitionError:
    """Some error names ``obj`` and ``field`` (in its message), and mentions every ``also``."""
    hits = [e for e in errors.errors
            if obj in e.obj and e.field == field and f"'{field}'" in str(e) and obj in str(e)
            and all(a in str(e) for a in also)]
    assert hits, f"no error naming {obj!r} / {field!r} / {also}: {errors}"
    assert obj in str(errors) and field in str(errors)
    return hits[0]


# ---- the shipped definitions -------------------------------------------------------------------


def test_shipped_definitions_are_valid():
    assert validate(signal_defs.REGISTRY) is None
    assert validate(registry()) is None


def test_seqctl_defs_validate_exits_zero_on_shipped_defs():
    proc = subprocess.run([str(SEQCTL), "defs", "validate"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "definitions are valid" in proc.stdout
    assert "2 feature" in proc.stdout and "3 event_type" in proc.stdout


def test_seqctl_defs_validate_refuses_a_bad_registry(monkeypatch, capsys):
    from seq_assets import cli

    bad = registry((demo.engagements_v1, replace(demo.engagements_v1, max_length=0)))
    monkeypatch.setattr(signal_defs, "REGISTRY", bad)
    assert cli.main(["defs", "validate"]) == 2
    err = capsys.readouterr().err
    assert "engagements" in err and "max_length" in err


# ---- each bad definition, refused by name ------------------------------------------------------


def test_unknown_event_type_in_feature():
    bad = replace(demo.engagements_v1, event_types=("pin_click", "pin_like"))
    errors = refusal(registry((demo.engagements_v1, bad)))
    assert_names(errors, "engagements", "event_types", "pin_like")


def test_unknown_enrichment_in_event_type():
    bad = replace(demo.pin_click, enrichments=(*demo.pin_click.enrichments, "item_colour"))
    errors = refusal(registry((demo.pin_click, bad)))
    assert_names(errors, "pin_click", "enrichments", "item_colour")


def test_unknown_field_in_feature():
    bad = replace(demo.saves_v1, fields=(*demo.saves_v1.fields, "board_id"))
    errors = refusal(registry((demo.saves_v1, bad)))
    assert_names(errors, "saves", "fields", "board_id")


def test_unknown_field_in_event_type_filter():
    bad = replace(demo.pin_save, filter=(col("action") == "save") & (col("board") == "recipes"))
    errors = refusal(registry((demo.pin_save, bad)))
    assert_names(errors, "pin_save", "filter", "board")


def test_unknown_field_in_counter_predicate():
    bad = replace(demo.user_item_count_30d, counts=col("verb").is_in(["click"]))
    errors = refusal(registry((demo.user_item_count_30d, bad)))
    assert_names(errors, "user_item_count_30d", "counts", "verb")


def test_duplicate_feature_name_and_version():
    twin = replace(demo.engagements_v1, description="a second definition of the same feature")
    errors = refusal(registry(add=(twin,)))
    assert_names(errors, "engagements", "name", "duplicate")


def test_duplicate_event_type_name():
    twin = replace(demo.pin_click, filter=col("action") == "click")
    errors = refusal(registry(add=(twin,)))
    assert_names(errors, "pin_click", "name", "duplicate")


def test_same_feature_name_with_a_new_version_is_allowed():
    assert validate(registry(add=(replace(demo.engagements_v1, version=2, max_length=400),))) is None


@pytest.mark.parametrize("n", [0, -1, -500])
def test_max_length_must_be_positive(n):
    errors = refusal(registry((demo.engagements_v1, replace(demo.engagements_v1, max_length=n))))
    assert_names(errors, "engagements", "max_length", str(n))


@pytest.mark.parametrize("days", [0, -30])
def test_window_days_must_be_positive(days):
    errors = refusal(registry((demo.saves_v1, replace(demo.saves_v1, window_days=days))))
    assert_names(errors, "saves", "window_days", str(days))


def test_counter_window_days_must_be_positive():
    bad = replace(demo.user_item_count_30d, window_days=0)
    errors = refusal(registry((demo.user_item_count_30d, bad)))
    assert_names(errors, "user_item_count_30d", "window_days")


def test_lookup_key_type_must_match_source_field():
    bad = replace(demo.item_category, key_type="string")  # item_id is an int64 in the source
    errors = refusal(registry((demo.item_category, bad)))
    assert_names(errors, "item_category", "key_type", "item_id", "int64")


def test_feature_reading_serving_enrichment_without_serving_enricher():
    live = CounterEnrichment(
        name="user_item_count_live", source="user_engagements", keys=("user_id", "item_id"),
        window_days=1, counts=col("action") == "click", stage=Stage.SERVING,
    )
    feature = replace(demo.engagements_v1, fields=(*demo.engagements_v1.fields, "user_item_count_live"))
    errors = refusal(registry((demo.engagements_v1, feature), add=(live,)))
    assert_names(errors, "engagements", "fields", "user_item_count_live")
    assert_names(errors, "user_item_count_live", "stage")


def test_serving_lookup_is_accepted():
    # item_popularity is a serving-time lookup read by both shipped features: that is fine.
    assert demo.item_popularity.stage is Stage.SERVING
    assert "item_popularity" in demo.engagements_v1.fields
    validate(registry())


def test_every_error_is_reported_at_once():
    errors = refusal(registry(
        (demo.engagements_v1, replace(demo.engagements_v1, max_length=0, window_days=0)),
        (demo.saves_v1, replace(demo.saves_v1, event_types=("pin_pin",), lifecycle=Lifecycle.EXPERIMENTAL)),
    ))
    fields = {(e.obj, e.field) for e in errors.errors}
    assert any("engagements" in o and f == "max_length" for o, f in fields)
    assert any("engagements" in o and f == "window_days" for o, f in fields)
    assert any("saves" in o and f == "event_types" for o, f in fields)


def test_definition_errors_are_value_errors_with_parts():
    errors = refusal(registry((demo.saves_v1, replace(demo.saves_v1, max_length=-1))))
    e = assert_names(errors, "saves", "max_length")
    assert isinstance(e, ValueError) and e.message and str(e).startswith(e.obj)


# ---- sources: identity, time and retention ------------------------------------------------------


@pytest.mark.parametrize("attr", ["event_id_field", "user_field", "time_field"])
def test_source_identity_fields_must_be_in_the_schema(attr):
    bad = replace(demo.user_engagements, **{attr: "member"})
    errors = refusal(registry((demo.user_engagements, bad)))
    assert_names(errors, "user_engagements", attr, "member", "schema")


@pytest.mark.parametrize("unit", ["ns", "msec", "", "MS"])
def test_source_time_unit_is_ms_s_or_us(unit):
    bad = replace(demo.user_engagements, time_unit=unit)
    errors = refusal(registry((demo.user_engagements, bad)))
    assert_names(errors, "user_engagements", "time_unit", repr(unit), "ms")


@pytest.mark.parametrize("unit", ["ms", "s", "us"])
def test_source_time_units_accepted(unit):
    assert validate(registry((demo.user_engagements, replace(demo.user_engagements, time_unit=unit)))) is None


@pytest.mark.parametrize("days", [0, -1])
def test_source_retention_days_must_be_positive(days):
    bad = replace(demo.user_engagements, retention_days=days)
    errors = refusal(registry((demo.user_engagements, bad)))
    assert_names(errors, "user_engagements", "retention_days", str(days))


def test_two_sources_may_not_share_a_topic():
    twin = replace(demo.user_engagements, name="engagements_copy", batch_location="engagements_copy")
    errors = refusal(registry(add=(twin,)))
    assert_names(errors, "engagements_copy", "topic", "user_engagements")
    assert validate(registry(add=(replace(twin, topic="engagements_copy"),))) is None


def test_event_id_from_fields_must_be_in_the_schema():
    bad = replace(demo.user_engagements, event_id_from=("user_id", "pin_id"))
    errors = refusal(registry((demo.user_engagements, bad)))
    assert_names(errors, "user_engagements", "event_id_from", "pin_id")


def test_a_derived_event_id_need_not_be_in_the_schema():
    """Records without an id: the id is derived from event_id_from and event types keep it by name."""
    schema = {k: v for k, v in demo.user_engagements.schema.items() if k != "event_id"}
    derived = replace(demo.user_engagements, schema=schema, event_id_from=("user_id", "item_id", "ts", "action"),
                      required=tuple(r for r in demo.user_engagements.required if r != "event_id"))
    reg = registry((demo.user_engagements, derived))
    assert validate(reg) is None
    compiled = compile_registry(reg)
    assert compiled["source.user_engagements"]["event_id_from"] == ["user_id", "item_id", "ts", "action"]
    # Without event_id_from the missing id is refused.
    errors = refusal(registry((demo.user_engagements, replace(derived, event_id_from=()))))
    assert_names(errors, "user_engagements", "event_id_field", "event_id")


# ---- features: fields, ordering and dedup produced by the event types --------------------------


@pytest.mark.parametrize("attr, ordering", [
    ("ordering.by", Ordering(by="item_popularity")),
    ("ordering.tie_break", Ordering(tie_break="item_popularity")),
])
def test_ordering_field_must_be_produced_by_the_event_types(attr, ordering):
    # item_popularity is one of the feature's fields, but joined when served: no event type writes it.
    bad = replace(demo.engagements_v1, ordering=ordering)
    errors = refusal(registry((demo.engagements_v1, bad)))
    assert_names(errors, "engagements", attr, "item_popularity", "not produced", "pin_click", "pin_closeup")


def test_dedup_key_must_be_produced_by_the_event_types():
    bad = replace(demo.saves_v1, dedup_key=("item_popularity",))
    errors = refusal(registry((demo.saves_v1, bad)))
    assert_names(errors, "saves", "dedup_key", "item_popularity", "not produced", "pin_save")


def test_dedup_key_and_ordering_unknown_everywhere_are_refused_by_name():
    bad = replace(demo.saves_v1, dedup_key=("board_id",), ordering=Ordering(by="saved_at", tie_break="board_id"))
    errors = refusal(registry((demo.saves_v1, bad)))
    assert_names(errors, "saves", "dedup_key", "board_id", "not produced")
    assert_names(errors, "saves", "ordering.by", "saved_at", "not produced")
    assert_names(errors, "saves", "ordering.tie_break", "board_id", "not produced")


def test_feature_field_from_another_event_types_enrichment_is_refused():
    # item_category is written by the demo's event types; an event type without that enrichment
    # does not produce it, and the feature reading it over both is refused for the bare one.
    bare = replace(demo.pin_click, name="pin_click_bare", enrichments=())
    feature = replace(demo.saves_v1, event_types=("pin_save", "pin_click_bare"), fields=("event_id", "ts", "item_category"))
    errors = refusal(registry((demo.saves_v1, feature), add=(bare,)))
    assert_names(errors, "saves", "fields", "item_category", "pin_click_bare")
    assert all("pin_save" not in e.message for e in errors.errors if e.field == "fields")
