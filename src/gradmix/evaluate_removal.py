"""``gradmix eval DATASET --removal``: how well ``gradmix dry`` finds and undoes effects on held-out stems.

The stems are the held-out songs' (:func:`gradmix.removal.train.held_out`: never trained on), cut into
sounding segments of ``seconds`` at a peak of -1 dBFS. Each case gives every segment a chain drawn as in
training (:func:`gradmix.removal.chains.draw_chains`, seeded): no effect (the dry stem itself), each single
effect, and random chains of two and of three effects. Systems:

- ``identity``: the wet stem as it is;
- ``fxnorm``: FxNorm alone (:func:`gradmix.data.fxnorm.normalize_stem`, statistics of all the case's wet
  stems, one class), what normalisation without removal does;
- ``gradmix``: :func:`gradmix.removal.dry.remove_effects` with the estimator;
- ``oracle``: the true chain undone (:func:`gradmix.removal.dry.undo`): the bound the inverses set.

Measures: SI-SDR of each system's output against the dry stem (at most :data:`SI_SDR_CAP_DB`), and its
improvement over the wet input (mean per case); the F1 of chain detection (over every segment and effect,
per case and overall); the mean absolute error of the EQ gains (dB, where an EQ was applied and found) and
of the compressor's threshold (dB) and ratio (where a compressor was applied and found). Writes
``removal.json``, ``removal.md`` (the tables) and ``removal.html`` (the tables and, per case, the first
segments to listen: wet, each system, dry).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradmix.audio import make_output_folder, write_text_atomically, write_audio
from gradmix.data.fxnorm import class_statistics, normalize_stem, stem_features
from gradmix.models.removal import EffectEstimator
from gradmix.progress import progress as show_progress
from gradmix.removal.chains import REMOVABLE, ChainBatch, draw_chains, render_chains
from gradmix.removal.dry import remove_effects, undo
from gradmix.removal.train import segment_pool

SYSTEMS = ("identity", "fxnorm", "gradmix", "oracle")
"""The systems of the removal evaluation, in table order."""


SI_SDR_CAP_DB = 60.0
"""SI-SDR is reported up to this (an exact copy has an infinite one; above this, rounding decides)."""


def si_sdr_db(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    """Scale-invariant SDR in dB of ``estimate`` against ``reference`` (any equal shapes, flattened), at most
    :data:`SI_SDR_CAP_DB`."""
    r, e = reference.double().flatten(), estimate.double().flatten()
    target = (e @ r) / (r @ r).clamp_min(1e-30) * r
    sdr = 10 * torch.log10(target.square().sum().clamp_min(1e-30) / (target - e).square().sum().clamp_min(1e-30))
    return min(float(sdr), SI_SDR_CAP_DB)


def cases(generator: torch.Generator, n: int) -> dict[str, torch.Tensor]:
    """Which effects each of the ``n`` segments gets in each case: ``{case: (n, effects) bool}``."""
    out = {"none": torch.zeros(n, len(REMOVABLE), dtype=torch.bool)}
    for k, name in enumerate(REMOVABLE):
        present = torch.zeros(n, len(REMOVABLE), dtype=torch.bool)
        present[:, k] = True
        out[name] = present
    for size in (2, 3):
        present = torch.zeros(n, len(REMOVABLE), dtype=torch.bool)
        for i in range(n):
            present[i, torch.randperm(len(REMOVABLE), generator=generator)[:size]] = True
        out[f"chain of {size}"] = present
    return out


def _one(chains: ChainBatch, i: int) -> ChainBatch:
    return ChainBatch(
        chains.present[i : i + 1], {n: {k: v[i : i + 1] for k, v in p.items()} for n, p in chains.params.items()}
    )


def evaluate_removal(
    roots: list[str],
    out: str | Path,
    model: EffectEstimator,
    *,
    segments: int = 24,
    seconds: float = 6.0,
    seed: int = 0,
    listen: int = 2,
    show: bool = True,
    careful: bool = False,
) -> dict[str, Any]:
    """Run the removal evaluation (see the module docstring; ``careful``: ``gradmix dry --careful``); returns what
    ``removal.json`` holds."""
    out = make_output_folder(out)
    sr = model.cfg.sample_rate
    dry = segment_pool(roots, seconds=seconds, sample_rate=sr, limit=segments, seed=seed, held=True, show=show).double()
    n = dry.shape[0]
    g = torch.Generator().manual_seed(seed)
    plan = cases(g, n)
    results: dict[str, Any] = {"segments": n, "seconds": seconds, "sample_rate": sr, "careful": careful, "cases": {}}
    audio_dir = out / "removal_audio"
    for case, present in show_progress(list(plan.items()), "evaluating removal", show):
        chains = draw_chains(n, g, present=present)
        wet = render_chains(dry, chains, sr)
        stats = class_statistics(("all", stem_features(w.float(), sr, False)) for w in wet)["all"]
        sdr: dict[str, list[float]] = {s: [] for s in SYSTEMS}
        found = []
        eq_err, threshold_err, ratio_err = [], [], []
        for i in range(n):
            removal = remove_effects(model, wet[i].float(), sr, careful=careful)
            outputs = {
                "identity": wet[i],
                "fxnorm": normalize_stem(wet[i].float(), sr, False, stats)[0],
                "gradmix": removal.dry,
                "oracle": undo(wet[i : i + 1], _one(chains, i), sr)[0],
            }
            for s, y in outputs.items():
                sdr[s].append(si_sdr_db(y, dry[i]))
            estimated = {e.effect.type_name: e.params for e in removal.chain}
            found.append([name in estimated for name in REMOVABLE])
            if present[i, 0] and "eq" in estimated:
                eq_err.append(
                    float(
                        (torch.as_tensor(estimated["eq"]["gain_db"]) - chains.params["eq"]["gain_db"][i]).abs().mean()
                    )
                )
            if present[i, 1] and "compressor" in estimated:
                c = estimated["compressor"]
                threshold_err.append(
                    abs(float(c["threshold_db"]) - float(chains.params["compressor"]["threshold_db"][i]))
                )
                ratio_err.append(abs(float(c["ratio"]) - float(chains.params["compressor"]["ratio"][i])))
            if i < listen:
                folder = audio_dir / case.replace(" ", "_") / str(i)
                folder.mkdir(parents=True, exist_ok=True)
                write_audio(folder / "wet.wav", wet[i].float(), sr)
                write_audio(folder / "dry.wav", dry[i].float(), sr)
                for s in ("fxnorm", "gradmix", "oracle"):
                    write_audio(folder / f"{s}.wav", outputs[s].float(), sr)
        found_t = torch.tensor(found)
        tp = int((found_t & present).sum())
        fp = int((found_t & ~present).sum())
        fn = int((~found_t & present).sum())
        results["cases"][case] = {
            "si_sdr_db": {s: float(np.mean(v)) for s, v in sdr.items()},
            "si_sdr_improvement_db": {
                s: float(np.mean(np.array(v) - np.array(sdr["identity"]))) for s, v in sdr.items()
            },
            "detection": {"tp": tp, "fp": fp, "fn": fn, "f1": _f1(tp, fp, fn)},
            "eq_gain_error_db": float(np.mean(eq_err)) if eq_err else None,
            "threshold_error_db": float(np.mean(threshold_err)) if threshold_err else None,
            "ratio_error": float(np.mean(ratio_err)) if ratio_err else None,
        }
    totals = [results["cases"][c]["detection"] for c in results["cases"]]
    tp, fp, fn = (sum(t[k] for t in totals) for k in ("tp", "fp", "fn"))
    results["detection_f1"] = _f1(tp, fp, fn)
    singles = [results["cases"][name]["si_sdr_improvement_db"]["gradmix"] for name in REMOVABLE]
    results["single_effect_improvement_db"] = float(np.mean(singles))
    write_text_atomically(out / "removal.json", json.dumps(results, indent=1))
    table = removal_table(results)
    write_text_atomically(out / "removal.md", table)
    _write_page(results, table, out, listen)
    return results


def _f1(tp: int, fp: int, fn: int) -> float | None:
    return None if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def _fmt(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def removal_table(results: dict[str, Any]) -> str:
    """The Markdown tables of :func:`evaluate_removal`'s results."""
    lines = [
        f"SI-SDR improvement over the wet stem (dB; {results['segments']} held-out segments of "
        f"{results['seconds']:g} s per case{'; gradmix dry --careful' if results['careful'] else ''}), chain "
        "detection and parameter errors:",
        "",
        "| case | "
        + " | ".join(SYSTEMS[1:])
        + " | wet SI-SDR | detection F1 | EQ gain err (dB) | threshold err (dB) | ratio err |",
        "|---|" + "---:|" * (len(SYSTEMS) - 1) + "---:|---:|---:|---:|---:|",
    ]
    for case, r in results["cases"].items():
        imp = r["si_sdr_improvement_db"]
        lines.append(
            f"| {case} | "
            + " | ".join(f"{imp[s]:+.2f}" for s in SYSTEMS[1:])
            + f" | {r['si_sdr_db']['identity']:.2f} | {_fmt(r['detection']['f1'])} | {_fmt(r['eq_gain_error_db'])}"
            + f" | {_fmt(r['threshold_error_db'])} | {_fmt(r['ratio_error'])} |"
        )
    lines += [
        "",
        f"Mean improvement over the single effects (gradmix): {results['single_effect_improvement_db']:+.2f} dB; "
        f"chain-detection F1 over every case: {_fmt(results['detection_f1'])}.",
        "",
    ]
    return "\n".join(lines)


def _write_page(results: dict[str, Any], table: str, out: Path, listen: int) -> None:
    parts = [
        "<!doctype html><meta charset='utf-8'><title>gradmix eval --removal</title>",
        "<h1>Effect removal</h1><pre>" + html.escape(table) + "</pre>",
    ]
    for case in results["cases"]:
        folder = case.replace(" ", "_")
        parts.append(f"<h2>{html.escape(case)}</h2><table>")
        for i in range(min(listen, results["segments"])):
            for name in ("wet", "fxnorm", "gradmix", "oracle", "dry"):
                src = f"removal_audio/{folder}/{i}/{name}.wav"
                parts.append(
                    f"<tr><td>{i} {name}</td><td><audio controls preload='none' src='{src}'></audio></td></tr>"
                )
        parts.append("</table>")
    write_text_atomically(out / "removal.html", "\n".join(parts))
