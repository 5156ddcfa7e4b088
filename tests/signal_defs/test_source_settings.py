"""A feature's ordering and dedup key default to its source's time and event id (resolved when it is
compiled); a source's time may be a timestamp, its users strings; what an id is derived from is
checked, and nothing of the demo's names is assumed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from signal_defs import Ordering, Registry
from signal_defs.compile import compile_registry
from signal_defs.validate import DefinitionErrors, validate
from tests.support.own_source import ratings_registry, ratings_source


def _swap(reg: Registry, old_kind: str, new) -> Registry:
    return Registry().add(*[new if d.kind == old_kind else d for d in reg.definitions])


def _feature(reg: Registry):
    return reg.of_kind("feature")[0]


def _refused(reg: Registry) -> str:
    with pytest.raises(DefinitionErrors) as info:
        validate(reg)
    return str(info.value)


def test_ordering_and_dedup_default_to_the_sources_time_and_event_id():
    compiled = compile_registry(ratings_registry())
    f = compiled["feature.liked_movies_v1"]
    assert f["ordering"] == {"by": "event_time", "descending": True, "tie_break": "rating_id"}
    assert f["dedup_key"] == ["rating_id"]


def test_explicit_ordering_and_dedup_are_kept_and_an_empty_key_means_no_dedup():
    reg = ratings_registry()
    mine = replace(_feature(reg), ordering=Ordering(by="event_time", descending=False, tie_break="movie_id"),
                   dedup_key=())
    f = compile_registry(_swap(reg, "feature", mine))["feature.liked_movies_v1"]
    assert f["ordering"] == {"by": "event_time", "descending": False, "tie_break": "movie_id"}
    assert f["dedup_key"] == []
    partial = replace(_feature(reg), ordering=Ordering(tie_break="movie_id"))
    f = compile_registry(_swap(reg, "feature", partial))["feature.liked_movies_v1"]
    assert f["ordering"] == {"by": "event_time", "descending": True, "tie_break": "movie_id"}


def test_resolved_defaults_are_validated_against_what_the_event_types_produce():
    reg = ratings_registry()
    # The defaults need not be among the feature's fields: the build reads them from events/.
    assert validate(_swap(reg, "feature", replace(_feature(reg), fields=("movie_id", "rating")))) is None
    # An event type that drops the time: the default ordering column is not produced.
    liked = replace(reg.of_kind("event_type")[0], fields=("rating_id", "uid", "movie_id"))
    message = _refused(_swap(reg, "event_type", liked))
    assert "ordering.by" in message and "'event_time' is not produced by event type(s) liked" in message


def test_a_timestamp_time_field_is_accepted_and_other_time_types_are_refused():
    assert validate(ratings_registry(time_type="timestamp")) is None
    message = _refused(_swap(ratings_registry(), "source", ratings_source(time_type="float64")))
    assert "time_field" in message and "'event_time'" in message and "timestamp" in message


def test_user_ids_are_int64_or_strings():
    for user_type in ("int64", "string"):
        src = ratings_source()
        assert validate(_swap(ratings_registry(), "source", replace(src, schema={**src.schema, "uid": user_type}))) is None
    src = ratings_source()
    message = _refused(_swap(ratings_registry(), "source", replace(src, schema={**src.schema, "uid": "float64"})))
    assert "user_field" in message and "'uid'" in message


def test_what_an_event_id_is_derived_from():
    src = ratings_source()
    with_float = replace(src, schema={**src.schema, "score": "float64"}, event_id_from=("uid", "score"))
    message = _refused(_swap(ratings_registry(), "source", with_float))
    assert "event_id_from" in message and "'score'" in message
    # The derived id is a column of its own, not also a field of the records.
    clash = replace(src, schema={**src.schema, "rating_id": "string"}, required=(*src.required, "rating_id"))
    message = _refused(_swap(ratings_registry(), "source", clash))
    assert "event_id_field" in message and "'rating_id'" in message


def test_the_sources_user_field_is_a_sequence_column_not_a_feature_field():
    reg = ratings_registry()
    message = _refused(_swap(reg, "feature", replace(_feature(reg), fields=("rating_id", "event_time", "uid"))))
    assert "'uid' is a column of every sequence row" in message
    # user_id means nothing special to this project.
    src = ratings_source()
    renamed = replace(src, schema={**src.schema, "user_id": "string"})
    liked = replace(reg.of_kind("event_type")[0], enrichments=())
    ok = Registry().add(renamed, liked, replace(_feature(reg), fields=("rating_id", "event_time", "user_id")))
    assert validate(ok) is None
