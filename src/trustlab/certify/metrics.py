"""Per-model certification summaries, attack and defence effects, aggregation over seeds."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .stats import cp_interval


def abstained(rec: dict) -> bool:
    """A record abstains (goes to the fallback): smoothing pred == -1, bounds not certified."""
    return not rec["certified"] if "certified" in rec else rec["pred"] == -1


def summarize(records: Sequence[dict], clean_acc: float, grid: Sequence[float], kind: str) -> dict:
    """{n, clean_acc, abstain_rate, abstain_ci (95% exact), certified_acc{r or eps}, mean_radius}.

    Smoothing: certified_acc[r] = P(pred == label and radius >= r); mean_radius averages over all inputs (0 when
    abstaining). Bounds: certified_acc[eps] = P(pred == label and certified at eps)."""
    n = len(records)
    k = sum(abstained(r) for r in records)
    out: dict[str, Any] = {"n": n, "clean_acc": clean_acc, "abstain_rate": k / n if n else None,
                           "abstain_ci": list(cp_interval(k, n))}
    if kind == "smoothing":
        out["certified_acc"] = {str(r): float(np.mean([x["pred"] == x["label"] and x["radius"] >= r and x["pred"] >= 0
                                                        for x in records])) for r in grid}
        out["mean_radius"] = float(np.mean([x["radius"] for x in records]))
        if records and "predict" in records[0]:
            out["predict_abstain_rate"] = float(np.mean([x["predict"] == -1 for x in records]))
    else:
        out["certified_acc"] = {str(e): float(np.mean([x["pred"] == x["label"] and x["cert_grid"][i]
                                                        for x in records])) for i, e in enumerate(grid)}
        out["mean_radius"] = None
    return out


def attack_effect(clean: dict, attacked: dict, clean_recs_trig: Sequence[dict], att_recs_trig: Sequence[dict]) -> dict:
    """Effect of an attack on one certifier; ``clean``/``attacked`` = {clean_inputs, triggered_inputs} summaries."""
    cert_clean = {r["idx"] for r in clean_recs_trig if not abstained(r)}
    flips = [abstained(r) for r in att_recs_trig if r["idx"] in cert_clean]
    c, a = clean, attacked
    out = {
        "triggered_abstain_delta": a["triggered_inputs"]["abstain_rate"] - c["triggered_inputs"]["abstain_rate"],
        "trigger_only_effect": c["triggered_inputs"]["abstain_rate"] - c["clean_inputs"]["abstain_rate"],
        "clean_abstain_delta": a["clean_inputs"]["abstain_rate"] - c["clean_inputs"]["abstain_rate"],
        "clean_acc_delta": a["clean_inputs"]["clean_acc"] - c["clean_inputs"]["clean_acc"],
        "flip_rate": float(np.mean(flips)) if flips else None,
    }
    inflation = cost_inflation(c["triggered_inputs"].get("cost"), a["triggered_inputs"].get("cost"))
    if inflation is not None:
        out["cost_inflation"] = inflation
    return out


def cost_inflation(clean_cost: dict | None, attacked_cost: dict | None) -> dict | None:
    """The attack's second availability cost (issue 11 item 3): the attacked model's forwards per triggered input over
    the clean model's on the same inputs, {mean, p95}; None when the certifier's cost is fixed (no ``cost``)."""
    if not clean_cost or not attacked_cost or not clean_cost.get("n") or not attacked_cost.get("n"):
        return None
    return {k: attacked_cost[f"forwards_{k}"] / clean_cost[f"forwards_{k}"] for k in ("mean", "p95")}


def defence_effect(before: dict, after: dict, trig_clean_ref: float) -> dict:
    """mitigated = (trig_before - trig_after) / (trig_before - trig_clean_ref); verdict ``insufficient`` if
    mitigated < 0.5, the clean-accuracy cost > 2 pp or the clean fallback rises > 5 pp."""
    gap = before["triggered_fallback"] - trig_clean_ref
    mitigated = (before["triggered_fallback"] - after["triggered_fallback"]) / gap if gap > 1e-12 else None
    acc_cost = before["clean_acc"] - after["clean_acc"]
    fb_rise = after["clean_fallback"] - before["clean_fallback"]
    if mitigated is None:
        verdict = "no attack effect to mitigate"
    else:
        verdict = "insufficient" if (mitigated < 0.5 or acc_cost > 0.02 or fb_rise > 0.05) else "effective"
    return {**{f"{k}_before": v for k, v in before.items()}, **{f"{k}_after": v for k, v in after.items()},
            "mitigated": mitigated, "clean_acc_cost": acc_cost, "clean_fallback_rise": fb_rise, "verdict": verdict}


def aggregate(items: Sequence[Any]) -> Any:
    """Same nesting as the items; each numeric leaf becomes {mean, min, max, std} over seeds."""
    first = items[0]
    if isinstance(first, dict):
        keys = [k for k in first if all(isinstance(i, dict) and k in i for i in items)]
        return {k: aggregate([i[k] for i in items]) for k in keys}
    vals = [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None]
    if len(vals) == len(items) and vals:
        a = np.asarray(vals, dtype=float)
        with np.errstate(invalid="ignore"):
            return {"mean": float(a.mean()), "min": float(a.min()), "max": float(a.max()), "std": float(a.std())}
    if isinstance(first, list) and all(isinstance(i, list) and len(i) == len(first) for i in items) and first and \
            all(isinstance(v, (int, float)) for i in items for v in i):
        return [aggregate([i[j] for i in items]) for j in range(len(first))]
    return first if all(i == first for i in items) else list(items)


def means(summary: Any) -> Any:
    """The mean view of an ``aggregate`` result (same nesting, numbers)."""
    if isinstance(summary, dict):
        if set(summary) == {"mean", "min", "max", "std"}:
            return summary["mean"]
        return {k: means(v) for k, v in summary.items()}
    if isinstance(summary, list):
        return [means(v) for v in summary]
    return summary
