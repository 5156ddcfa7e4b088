"""Online serving: "sequence X for user U" in milliseconds, fresh to the second.

A request runs five stages, each its own module: ``fetch`` (the closed snapshot plus everything
indexed since, from storage and from the stream tail), ``filter`` (dedup, window, event types),
``enrich`` (serving-time enrichments), ``size`` (n) and ``featurize`` (json or arrays).
"""
