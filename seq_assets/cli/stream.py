"""``seqctl broker`` and ``seqctl produce``: a development broker and live demo events."""

from __future__ import annotations

import json
import signal
import threading
import time

from seq_assets import settings
from seq_assets.cli.common import progress as _say
from seq_assets.devtools.broker import BrokerError, EmbeddedBroker
from seq_assets.kafka.client import create_topics, ensure_source_topics, kafka_answers

# ---- seqctl broker -------------------------------------------------------------------------------

def _ensure_topics_report(bootstrap: str) -> None:
    res = ensure_source_topics(bootstrap, settings.load_compiled())
    if res["created"]:
        _say(f"created topics: {', '.join(res['created'])}")
    if res["existing"]:
        _say(f"topics already there: {', '.join(res['existing'])}")


def cmd_broker(args) -> int:
    bootstrap = f"{args.host}:{args.port}"
    if kafka_answers(bootstrap, timeout=1.0):
        _say(f"a Kafka broker already answers on {bootstrap}; not starting another")
        _ensure_topics_report(bootstrap)
        print(bootstrap, flush=True)
        return 0
    stop = threading.Event()

    def _on_signal(signum, _frame):
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    broker = EmbeddedBroker(args.host, args.port, log_path=args.log)
    try:
        broker.start(timeout=args.timeout)
        _say(f"Tansu broker pid {broker.pid} ready in {broker.startup_seconds:.2f}s, log {broker.log_path} "
             "(in-memory storage: a restart starts empty)")
        _ensure_topics_report(broker.bootstrap)
        print(broker.bootstrap, flush=True)
        _say("running; Ctrl-C or SIGTERM stops it")
        while not stop.wait(1.0):
            if not broker.is_running():
                _say(f"broker exited with code {broker.wait()}; log tail:\n{broker.log_tail()}")
                return 1
        _say("stopping")
        return 0
    except BrokerError as e:
        _say(str(e))
        return 1
    finally:
        broker.stop()
        for s, h in previous.items():
            signal.signal(s, h)


def add_broker_commands(sub) -> None:
    """Register ``seqctl broker`` and ``seqctl produce``."""
    b = sub.add_parser("broker", help="run a Kafka-compatible (Tansu, in-memory) broker in the foreground, "
                                      "with the topics of the compiled sources")
    b.add_argument("--host", default="127.0.0.1")
    b.add_argument("--port", type=int, default=9092)
    b.add_argument("--log", default=None, help="broker log file (default: a temp dir)")
    b.add_argument("--timeout", type=float, default=30, help="seconds to wait for the broker to answer")
    b.set_defaults(fn=cmd_broker)

    add_produce_command(sub)


# ---- seqctl produce ------------------------------------------------------------------------------

def cmd_produce(args) -> int:
    from seq_assets.devtools.demo_data import SOURCE_DIR
    from seq_assets.devtools.produce import LiveEvents, produce_events

    compiled = settings.load_compiled()
    if args.source not in compiled.sources:
        _say(f"unknown source {args.source!r} (known: {', '.join(sorted(compiled.sources))})")
        return 2
    if args.source != SOURCE_DIR:
        _say(f"demo events exist only for {SOURCE_DIR!r}")
        return 2
    source = compiled.sources[args.source]
    bootstrap = args.bootstrap or settings.kafka_bootstrap()
    deadline = time.monotonic() + args.wait
    while not kafka_answers(bootstrap, timeout=1.0):  # `make dev` starts the broker alongside
        if time.monotonic() >= deadline:
            _say(f"no Kafka broker answers on {bootstrap} (waited {args.wait:g}s); start one with "
                 "`seqctl broker` or set SEQ_KAFKA_BOOTSTRAP / --bootstrap")
            return 1
        time.sleep(0.25)
    create_topics(bootstrap, {source["topic"]: int(source.get("kafka_partitions") or 1)})
    live = LiveEvents(args.rate, args.duration, seed=args.seed, users=args.users, items=args.items)
    _say(f"producing {live.events:,} events (+~2% duplicates) to {source['topic']} on {bootstrap}: "
         f"{args.rate:g}/s for {args.duration:g}s, seed {args.seed}, {len(live.segments)} segment(s)")
    def _interrupt(signum, _frame):  # SIGTERM (how `make dev` stops it) flushes like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        # The stream releases records on its own clock; the cap (25% above the rate) only spreads
        # the records a segment delivers after its window (late ones, day-later duplicates) and
        # leaves room for the ~2% duplicates, so sending never drifts behind the clock.
        result = produce_events(bootstrap, source, live, rate=args.rate * 1.25, progress=_say)
    finally:
        signal.signal(signal.SIGTERM, previous)
    result["events"] = live.events
    result["records_generated"] = live.records
    result["faults"] = dict(sorted(live.fault_counts.items()))
    print(json.dumps(result, indent=2))
    if result["failed"] or result["stopped_by"] == "error":
        return 1
    return 130 if result["stopped_by"] == "interrupted" else 0


def add_produce_command(sub) -> None:
    p = sub.add_parser("produce", help="publish live demo events (same shape and faults as demo-data, "
                                       "event times around now) to a source's topic")
    p.add_argument("--source", default="user_engagements")
    p.add_argument("--rate", type=float, default=200.0, help="events per second")
    p.add_argument("--duration", type=float, default=60.0, help="seconds; rate * duration events in total")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--users", type=int, default=2000, help="user ids 1..users (as demo-data)")
    p.add_argument("--items", type=int, default=10_000, help="item ids 1..items (demo-data's default spec has 10,000)")
    p.add_argument("--bootstrap", default=None, help="HOST:PORT (default: SEQ_KAFKA_BOOTSTRAP, 127.0.0.1:9092)")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the broker to answer")
    p.set_defaults(fn=cmd_produce)
