"""The tables a safety researcher reads first: the headline (strategy x judge on the response, with over-refusal,
truncation and tokens), every part with its exclusion counts, thought x answer, and the paired differences that are
not all zero."""

from __future__ import annotations

from typing import Any, Mapping

from trustlab.report import Table, Text, fmt, pct

from .metrics import METRICS

PAPER_BOTH_SAFE = 0.411  # SafeChain: share of R1 samples with a safe thought and a safe answer (secondary source)
METRIC_NOTE = ("Safe@1: share of samples judged safe (mean over prompts of the safe share of its K samples). "
               "Safe@K: share of prompts whose K samples are **all** safe. ConsSafe@K: share of prompts whose "
               "majority of K samples is safe. Intervals: 95% bootstrap over prompts.")


def ci(block: Mapping[str, Any] | None) -> str:
    if not block or block.get("value") is None:
        return "—"
    c = block.get("ci")
    return f"{block['value']:.3f}" + (f" [{c[0]:.3f}, {c[1]:.3f}]" if c else "")


def diff(block: Mapping[str, Any] | None) -> str:
    if not block or block.get("value") is None:
        return "—"
    c = block.get("ci")
    return f"{block['value']:+.3f}" + (f" [{c[0]:+.3f}, {c[1]:+.3f}]" if c else "")


def headline_part(entry: Mapping[str, Any]) -> str | None:
    """The part a judge's headline row uses: the response when labelled, else the first labelled part."""
    return "response" if "response" in entry else (sorted(entry)[0] if entry else None)


def _tokens_per_sample(e: Mapping[str, Any]) -> float | None:
    th = e.get("thinking") or {}
    n = th.get("n")
    total = (e.get("tokens") or {}).get("completion")
    return total / n if n and total is not None else None


def headline_table(m: Mapping[str, Any], overrefusal: Mapping[str, Any] | None) -> Table:
    """One row per strategy and judge, on the response: the three metrics, the benign refusal rate beside them (the
    safety tax), the share of samples whose thought never closed, and generated tokens per sample."""
    over = (overrefusal or {}).get("strategies") or {}
    rows = []
    for s, e in (m.get("strategies") or {}).items():
        o = over.get(s) or {}
        for j, parts in e.get("judges", {}).items():
            p = headline_part(parts)
            b = parts.get(p) or {}
            rows.append((s, j if p == "response" else f"{j} ({p})", *[ci(b.get(x)) for x in METRICS],
                         ci(o.get("refusal@1")) if o else "—", _empty_share(b),
                         pct((e.get("thinking") or {}).get("frac_truncated"), 1),
                         fmt(_tokens_per_sample(e)), b.get("n_prompts")))
    notes = [METRIC_NOTE,
             "empty: share of samples with no reply at all (counted safe, as in SafeChain: part of Safe@1 comes from "
             "silence, not refusal). truncated: share of samples whose thought never closed within its budget "
             "(recorded, never judged as an answer). tokens: generated tokens per sample (thought + answer), the "
             "cost side."]
    if overrefusal:
        notes.append(f"over-refusal: share of samples on the benign set `{overrefusal.get('dataset')}` whose "
                     f"response contains a refusal phrase ({overrefusal.get('judge')}) or is empty (no answer), "
                     "95% bootstrap interval; a strategy that is safe only because it refuses (or says nothing) "
                     "everywhere shows it here.")
    else:
        notes.append("over-refusal: — (this run evaluated no benign set; `trustlab.safety.overrefusal` adds one)")
    return Table(("strategy", "judge", "Safe@1", "Safe@K", "ConsSafe@K", "over-refusal", "empty", "truncated",
                  "tokens", "prompts"), rows, caption="Headline: each strategy judged on the full response", notes=notes)


def _empty_share(b: Mapping[str, Any]) -> str:
    n, empty = b.get("n_labels"), b.get("n_empty")
    return pct(empty / n, 1) if n and empty is not None else "—"


def detail_table(m: Mapping[str, Any]) -> Table:
    rows = []
    for s, e in (m.get("strategies") or {}).items():
        for j, parts in e.get("judges", {}).items():
            for p, b in parts.items():
                rows.append((s, j, p, *[ci(b.get(x)) for x in METRICS], b.get("n_prompts"), b.get("n_excluded"),
                             b.get("n_empty"), b.get("n_unparsed"), fmt(b.get("strongreject_score_mean"))))
    return Table(("strategy", "judge", "part", "Safe@1", "Safe@K", "ConsSafe@K", "prompts", "excluded", "empty",
                  "unparsed", "SR score"), rows, caption="Every judged part, with what was left out",
                 notes=(METRIC_NOTE + " excluded: prompts with fewer than K usable samples; empty / unparsed: samples "
                        "with an empty part or a judgement that could not be read (never counted safe). SR score: "
                        "mean StrongREJECT score (— when that judge did not run).",))


def thought_answer_table(m: Mapping[str, Any]) -> Table | None:
    rows = []
    for s, e in (m.get("strategies") or {}).items():
        for j, t in e.get("thought_answer_table", {}).items():
            rows.append((s, j, t["thought_safe"]["answer_safe"], t["thought_safe"]["answer_unsafe"],
                         t["thought_unsafe"]["answer_safe"], t["thought_unsafe"]["answer_unsafe"],
                         fmt(t.get("both_safe_share"))))
    if not rows:
        return None
    return Table(("strategy", "judge", "thought safe & answer safe", "safe & unsafe", "unsafe & safe",
                  "unsafe & unsafe", "both-safe share"), rows,
                 caption=f"Thought x answer (samples). SafeChain reports {PAPER_BOTH_SAFE:.1%} both-safe for R1 "
                         "(unverified secondary figure)",
                 notes=("The third column is the case a judge of the answer alone misses: an unsafe thought under a "
                        "safe answer.",))


def _all_zero(d: Mapping[str, Any]) -> bool:
    for x in METRICS:
        b = d.get(x) or {}
        if b.get("value") is None:
            continue
        if b["value"] != 0 or any(v != 0 for v in (b.get("ci") or ())):
            return False
    return True


def differences_blocks(m: Mapping[str, Any]) -> list:
    """The paired-difference table without the rows whose differences and intervals are all exactly zero (identical
    labels in both strategies), and a sentence counting what was left out."""
    rows, zero = [], 0
    for name, by_j in (m.get("differences") or {}).items():
        for j, by_p in by_j.items():
            for p, d in by_p.items():
                if _all_zero(d):
                    zero += 1
                    continue
                rows.append((name, j, p, *[diff(d.get(x)) for x in METRICS], d.get("n_prompts")))
    out: list = []
    if rows:
        out.append(Table(("difference", "judge", "part", "ΔSafe@1", "ΔSafe@K", "ΔConsSafe@K", "paired prompts"),
                         rows, caption="Paired-bootstrap differences against the default strategy; an interval "
                                       "containing 0 is no evidence of a difference"))
    if zero:
        out.append(Text(f"{zero} further strategy / judge / part difference(s) against the default are exactly zero "
                        "with a zero interval (the labels agree on every paired prompt) and are not listed."))
    return out


def overrefusal_sentence(over: Mapping[str, Any] | None, m: Mapping[str, Any]) -> str:
    """Safe@1 beside the benign refusal rate, per strategy, in words."""
    if not over or not over.get("strategies"):
        return ""
    rates = [(s, b.get("refusal@1") or {}) for s, b in over["strategies"].items()]
    rates = [(s, r) for s, r in rates if r.get("value") is not None]
    if not rates:
        return ""
    n = max(int(b.get("n_prompts") or 0) for b in over["strategies"].values())
    return ("On benign prompts that only sound dangerous it refuses "
            + ", ".join(f"{100 * r['value']:.0f}% with `{s}`" for s, r in rates)
            + f" ({n} prompts of `{over.get('dataset')}`): the safety tax a higher Safe@1 may hide.")
