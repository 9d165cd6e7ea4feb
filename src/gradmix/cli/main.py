"""``gradmix <command>``: thin layers over library functions; errors become one line and exit code 2."""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import os
import sys
from pathlib import Path

from gradmix import defaults
from gradmix.errors import GradmixError


def _device(args: argparse.Namespace):
    from gradmix.devices import compute_device

    return compute_device(args.device)


def _demo(args: argparse.Namespace) -> None:
    from gradmix.demo import run_demo

    run_demo(args.output, seconds=args.seconds, device=_device(args))


def _mix(args: argparse.Namespace) -> None:
    from gradmix.mix import mix_folder

    r = mix_folder(
        args.stems_dir,
        args.output,
        model_path=args.model,
        console_path=args.console,
        report=args.report,
        strict=args.strict,
        subtype=args.format,
        progress=sys.stdout.isatty(),
        device=_device(args),
    )
    print(
        f"mixed {r.tracks} tracks ({r.seconds:.1f} s) into {r.output}: {r.loudness_lufs:.1f} LUFS, "
        f"peak {r.peak_dbfs:+.1f} dBFS"
    )
    print(f"console: {r.console} (edit it, then: gradmix render {args.stems_dir} {r.console} -o MIX.wav)")
    if r.silent:
        silent = ", ".join(r.silent)
        print(f"note: {len(r.silent)} silent track(s) left neutral (the model does not hear them): {silent}")
    if r.report:
        print(f"report: {r.report}")


def _sample(args: argparse.Namespace) -> None:
    from gradmix.generate import sample_folder

    results = sample_folder(
        args.stems_dir,
        args.output,
        n=args.n,
        seed=args.seed,
        model_path=args.model,
        temperature=args.temperature,
        refine_steps=args.refine,
        progress=sys.stdout.isatty(),
        device=_device(args),
    )
    for r in results:
        print(f"{r.mix}: {r.loudness_lufs:.1f} LUFS, peak {r.peak_dbfs:+.1f} dBFS; console {r.console.name}")
    print(f"compare them: {Path(args.output) / 'index.html'}")


def _match(args: argparse.Namespace) -> None:
    from gradmix.generate import match_folder

    r, d = match_folder(
        args.stems_dir,
        args.reference,
        args.output,
        model_path=args.model,
        refine_steps=args.refine,
        progress=sys.stdout.isatty(),
        device=_device(args),
    )
    dist = ", ".join(f"{k} {v:.3f}" for k, v in d.items())
    print(f"wrote {r.mix} ({r.loudness_lufs:.1f} LUFS) and {r.console}; style distance to the reference: {dist}")


def _fit(args: argparse.Namespace) -> None:
    from gradmix.fit import fit_folder

    path, residual, steps = fit_folder(
        args.stems_dir,
        args.target,
        args.output,
        max_steps=args.steps,
        budget_s=args.budget,
        model_path=args.model,
        progress=sys.stdout.isatty(),
        device=_device(args),
    )
    print(f"wrote {path} after {steps} steps: residual {residual:.1f} dB (error energy relative to the target)")


def _train(args: argparse.Namespace) -> None:
    from gradmix.train import TrainConfig, train

    cfg = TrainConfig.load(args.config)
    for key in ("devices", "num_nodes", "strategy", "accelerator", "max_steps", "out"):
        value = getattr(args, key)
        if value is not None:
            setattr(cfg.run, key, int(value) if key == "devices" and str(value).isdigit() else value)
    path = train(cfg)
    if path.is_file():
        print(f"wrote {path} (use it with: gradmix mix STEMS_DIR -o MIX.wav --model {path})")


def _settings_for_long_renders() -> None:
    """Process settings that make rendering long songs cheaper; each is a no-op where it does not apply.

    A render of 8 tracks x 5 min allocates and frees dozens of buffers of 50-200 MB and runs thousands
    of short parallel loops. By default glibc maps every large buffer afresh and unmaps it when it is
    freed, so each one pays its page faults again; numpy asks for transparent huge pages, whose
    compaction stalls those faults unpredictably; and OpenMP threads spin between parallel loops,
    taking the CPU from the main thread when other work shares the machine. On 2 busy cores these cost
    about 3 s of system time and 1.5 s of user time of such a render; the peak memory is unchanged.
    Environment variables already set are left as they are.
    """
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")  # read when numpy is first imported
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads OpenMP
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):
        return
    mallopt(-4, 0)  # M_MMAP_MAX: large blocks come from the heap, where freed ones are reused
    mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: return memory only when 1 GiB lies free at the heap's top


def _render(args: argparse.Namespace) -> None:
    _settings_for_long_renders()
    gc.disable()  # importing torch makes ~170 000 objects and no garbage: no collections while it runs,
    from gradmix.render import render_folder

    gc.freeze()  # and none of them is scanned again by the full collections of numba's start-up
    gc.enable()

    report = render_folder(
        args.stems_dir,
        args.console,
        args.output,
        strict=args.strict,
        subtype=args.format,
        stems_out=args.stems_out,
        progress=sys.stdout.isatty(),
        device=_device(args),
    )
    print(
        f"wrote {report.output} ({report.seconds:.1f} s): peak {report.peak_dbfs:+.1f} dBFS, "
        f"{report.loudness_lufs:.1f} LUFS"
    )
    if report.stems_out:
        print(f"wrote {len(report.stems_out)} processed stems to {report.stems_out[0].parent}")
    if args.timings:
        print("timings: " + ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in report.timings.items()))
    if report.clips:
        where = "clips in the 24-bit file" if args.format != "float" else "would clip in a fixed-point file"
        print(
            f"warning: the mix peaks at {report.peak_dbfs:+.1f} dBFS and {where}; lower the master or add a limiter",
            file=sys.stderr,
        )


def _studio(args: argparse.Namespace) -> None:
    from gradmix.studio import run_studio

    if not 0 <= args.port <= 65535:
        raise GradmixError(f"--port: {args.port} is not a port (0..65535)")
    device = _device(args)
    run_studio(
        args.stems_dir,
        console=args.console,
        out_dir=args.out,
        model_path=args.model,
        host=args.host,
        port=args.port,
        strict=args.strict,
        open_browser=args.open,
        device=device,
    )


def _export(args: argparse.Namespace) -> None:
    from gradmix.audio import check_output_path
    from gradmix.console import ConsoleSetting
    from gradmix.daw import export_session

    console = Path(args.console)
    setting = ConsoleSetting.load(console)
    output = check_output_path(args.output, [console])
    stems = Path(args.stems) if args.stems else setting.stems_folder(console)
    path = export_session(setting, args.format, output, stems_dir=stems, embed=args.embed)
    how = "with the stems inside" if args.embed else f"playing the stems in {stems}"
    print(f"wrote {path} ({args.format}, {len(setting.tracks)} tracks, {len(setting.buses)} buses, {how})")


def _normalize(args: argparse.Namespace) -> None:
    from gradmix.data.fxnorm import normalize_dataset

    summary = normalize_dataset(
        args.root,
        args.output,
        layout=args.layout,
        sample_rate=args.sample_rate,
        target_lufs=args.target_lufs,
        workers=args.workers,
        progress=sys.stdout.isatty(),
        shard=args.shard,
        stats_only=args.stats_only,
    )
    classes = ", ".join(f"{k} ({v['count']})" for k, v in summary["classes"].items())
    print(f"normalised {len(summary['done'])} song(s), {summary['skipped']} already done; classes: {classes}")
    print(f"wrote {args.output}")


def _lmms(args: argparse.Namespace) -> None:
    from gradmix.data.lmms import build_dataset

    projects = [Path(p) for p in args.projects] if args.projects else None
    summary = build_dataset(args.output, projects, progress=sys.stdout.isatty(), workers=args.workers, shard=args.shard)
    print(f"rendered {len(summary['done'])} song(s), {summary['skipped']} already done, into {args.output}")
    for project, why in summary["failed"].items():
        print(f"warning: {why}", file=sys.stderr)
    for song, tracks in summary["wet_skipped"].items():
        for track, why in tracks.items():
            print(f"note: {song}: track {track!r} has no wet stem ({why}); it keeps its dry stem", file=sys.stderr)


def _midi(args: argparse.Namespace) -> None:
    from gradmix.data.midi import build_dataset

    summary = build_dataset(
        args.output,
        args.source,
        songs=args.songs,
        seconds=args.seconds,
        shard=args.shard,
        workers=args.workers,
        progress=sys.stdout.isatty(),
    )
    print(f"rendered {len(summary['done'])} song(s), {summary['skipped']} already done, into {args.output}")
    for score, why in summary["failed"].items():
        print(f"warning: {why}", file=sys.stderr)


def _sounds(args: argparse.Namespace) -> None:
    from gradmix.data.sounds import build_dataset

    summary = build_dataset(
        args.output,
        args.library,
        seconds=args.seconds,
        per_folder=args.per_folder,
        shard=args.shard,
        workers=args.workers,
        progress=sys.stdout.isatty(),
    )
    print(f"rendered {len(summary['done'])} folder(s), {summary['skipped']} already done, into {args.output}")
    for folder, why in summary["failed"].items():
        print(f"warning: {why}", file=sys.stderr)
    for sound, why in summary["left_out"].items():
        print(f"note: {sound} left out ({why})", file=sys.stderr)


def _separate(args: argparse.Namespace) -> None:
    from gradmix.data.separate import separate_dataset

    summary = separate_dataset(
        args.mixes_dir,
        args.output,
        model_path=args.model,
        normalize=not args.no_normalize,
        target_lufs=args.target_lufs,
        workers=args.workers,
        progress=sys.stdout.isatty(),
        shard=args.shard,
    )
    print(
        f"separated {len(summary['done'])} mix(es) into {', '.join(summary['sources'])}; "
        f"{summary['skipped']} already done; wrote {args.output}"
    )


def _dry(args: argparse.Namespace) -> None:
    from gradmix.removal.dry import chain_lines, dry_file

    removal, dry, console = dry_file(
        args.wet,
        args.output,
        chain_out=args.chain_out,
        model_path=args.model,
        subtype=args.format,
        careful=args.careful,
    )
    found = ", ".join(e.effect.type_name for e in removal.chain) or "none"
    odds = ", ".join(f"{k} {v:.2f}" for k, v in removal.probabilities.items())
    print(f"effects found: {found} (presence: {odds})")
    for line in chain_lines(removal.chain):
        print(f"  {line}")
    for note in removal.notes:
        print(f"note: {note}")
    print(f"dry stem: {dry}")
    print(f"chain: {console} (edit it; gradmix render {console} -o WET.wav plays the dry stem through it)")


def _dataset_dry(args: argparse.Namespace) -> None:
    from gradmix.removal.dataset import dry_dataset

    s = dry_dataset(
        args.root,
        args.output,
        model_path=args.model,
        normalize=args.normalize,
        progress=sys.stdout.isatty(),
        shard=args.shard,
        careful=args.careful,
    )
    found = ", ".join(f"{k} {v}" for k, v in s["effects_found"].items())
    print(f"removed effects from {len(s['done'])} song(s) ({s['skipped']} already done) into {args.output}/dry")
    print(f"stems with each effect: {found}")
    if "normalized" in s:
        print(f"normalised into {args.output}/normalized")


def _train_removal(args: argparse.Namespace) -> None:
    from gradmix.models.removal import load_estimator
    from gradmix.removal.chains import REMOVABLE
    from gradmix.removal.train import RemovalTraining, train_removal

    caps = {}
    for item in args.stems_per_song or []:
        root, _, n = item.rpartition("=")
        if root not in args.roots or not n.isdigit() or int(n) < 1:
            raise GradmixError(f"--stems-per-song {item}: expected ROOT=N with ROOT one of the roots and N >= 1")
        caps[root] = int(n)
    run = RemovalTraining(
        list(args.roots), args.output, steps=args.steps, lr=args.lr, seed=args.seed, init=args.init, stems_per_song=caps
    )
    path = train_removal(run, show=sys.stdout.isatty(), max_minutes=args.minutes)
    model = load_estimator(path)
    for label, values in (("presence thresholds", model.thresholds), ("careful (--careful)", model.careful_thresholds)):
        print(f"{label}: " + ", ".join(f"{n} {t:.2f}" for n, t in zip(REMOVABLE, values.tolist())))
    print(f"effect estimator: {path} (use it with gradmix dry --model {path})")


def _eval(args: argparse.Namespace) -> None:
    device = _device(args)
    if args.careful and not args.removal:
        raise GradmixError("--careful applies to --removal only")
    if args.removal:
        _eval_removal(args)
        return
    if len(args.dataset) > 1:
        raise GradmixError("give one dataset (several are for --removal)")
    args.dataset = args.dataset[0]
    if args.generative:
        if args.tracks or args.model_as:
            raise GradmixError("--tracks and --model-as evaluate systems; they do not apply to --generative")
        from gradmix.evaluate_generative import check_seeds, evaluate_generative, generative_table

        if not args.seconds:
            raise GradmixError("--seconds 0 (whole songs) does not apply to --generative; give the seconds to sample")
        seeds = None if args.seeds is None else check_seeds(args.seeds, "--seeds")
        songs = [s for s in args.songs.split(",") if s] if args.songs else None
        summary = evaluate_generative(
            args.dataset,
            args.output,
            songs=songs,
            held_out=args.held_out,
            model_path=args.model,
            n=args.n,
            seconds=args.seconds,
            seed=args.seed,
            seeds=seeds,
            refine_steps=args.refine,
            temperature=args.temperature,
            progress=sys.stdout.isatty(),
            device=device,
        )
        print(generative_table(summary))
        return
    if args.seeds is not None:
        raise GradmixError("--seeds: the seeds of the samples apply to --generative only")
    from gradmix.evaluate import evaluate

    models: dict[str, str] = {}
    for item in args.model_as or []:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise GradmixError(f"--model-as: expected NAME=PATH, got {item!r}")
        if name.strip() in models:
            raise GradmixError(f"--model-as: {name.strip()!r} is given twice")
        models[name.strip()] = path.strip()
    summary = evaluate(
        args.dataset,
        args.output,
        systems=[s.strip() for s in args.systems.split(",") if s.strip()],
        seconds=args.seconds or None,
        seed=args.seed,
        progress=sys.stdout.isatty(),
        model_path=args.model,
        songs=[s for s in args.songs.split(",") if s] if args.songs else None,
        held_out=args.held_out,
        tracks=args.tracks,
        models=models,
        device=device,
    )
    print((Path(args.output) / "results.md").read_text())
    line = f"evaluated {summary['songs']} song(s)"
    if args.tracks:
        t = summary["tracks"]
        print((Path(args.output) / "tracks.md").read_text())
        if t["skipped"]:
            print(
                f"note: --tracks: {len(t['skipped'])} song(s) without wet stems skipped: {', '.join(t['skipped'])}",
                file=sys.stderr,
            )
        line += f"; measured {t['measured']} track(s) in {t['songs']} song(s), {t['off_centre']} off-centre"
    print(f"{line}; see {args.output}/index.html")


def _eval_removal(args: argparse.Namespace) -> None:
    if args.tracks or args.model_as or args.generative or args.held_out:
        raise GradmixError(
            "--removal measures effect removal on held-out stems; --tracks, --model-as, --generative "
            "and --held-out do not apply"
        )
    from gradmix.evaluate_removal import evaluate_removal, removal_table
    from gradmix.models.removal import load_estimator

    results = evaluate_removal(
        list(args.dataset),
        args.output,
        load_estimator(args.model),
        seed=args.seed,
        show=sys.stdout.isatty(),
        careful=args.careful,
    )
    print(removal_table(results))
    print(f"see {args.output}/removal.html")


def _effects(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from gradmix.effects import REGISTRY

    table = Table(title="gradmix effects (type, parameter, unit, range, default, scale)")
    for col in ("type", "parameter", "unit", "min", "max", "default", "scale"):
        table.add_column(col)
    for name in sorted(REGISTRY):
        effect = REGISTRY[name]()
        for i, s in enumerate(effect.specs):
            table.add_row(
                name if i == 0 else "", s.label, s.unit, f"{s.min:g}", f"{s.max:g}", f"{s.default:g}", s.scale
            )
    Console().print(table)


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N (e.g. 3/16)") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= I < N")
    return i, n


def _careful_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--careful",
        action="store_true",
        help="remove only effects the estimator is surer of (its careful thresholds): for stems that may be dry",
    )


def _shard_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shard", type=_shard, help="I/N: this job does items I, I+N, ... (cluster runs; see docs/datasets.md)"
    )


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line, ``gradmix: error: ... (see PROG --help)``, exit status 2; its
    subcommands' parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"gradmix: error: {message} (see {self.prog} --help)\n")


class _IntermixedParser(_Parser):
    """Options and positionals in any order. argparse alone gives an optional first positional the first token
    and then refuses a second one after an option (``render STEMS -o MIX.wav CONSOLE``)."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:  # parse_known_intermixed_args calls back here
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def _device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default=defaults.DEVICE,
        help="where to compute: cpu, cuda, cuda:N or auto (CUDA where torch sees it; default %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gradmix", description="Automatic mixing through a differentiable console.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="mix the built-in example multitrack with the default model")
    p.add_argument("-o", "--output", default=defaults.DEMO_OUT, help="output folder (default: %(default)s)")
    p.add_argument(
        "--seconds",
        type=float,
        default=defaults.DEMO_SECONDS,
        help="length of the example in seconds (default %(default)s)",
    )
    _device_option(p)
    p.set_defaults(func=_demo)
    p = sub.add_parser("mix", help="mix a folder of stems with the mixing model; writes the mix and its console file")
    p.add_argument("stems_dir", help="folder of stems (wav, flac, aiff, ogg; .stem.mp4 with ffmpeg)")
    p.add_argument("-o", "--output", required=True, help="mix file to write (.wav or .flac)")
    p.add_argument("--model", help="model file from gradmix train (default: the shipped model)")
    p.add_argument("--console", help="console file to write (default: OUTPUT with .console.json)")
    p.add_argument("--report", action="store_true", help="also write OUTPUT.report.html: the console drawn")
    p.add_argument("--format", choices=["float", "24"], default="float", help="sample format (default float)")
    p.add_argument("--strict", action="store_true", help="refuse stems at different sample rates")
    _device_option(p)
    p.set_defaults(func=_mix)
    p = sub.add_parser("sample", help="several distinct mixes of the same stems, each with its console file")
    p.add_argument("stems_dir")
    p.add_argument("-n", type=int, default=defaults.SAMPLE_COUNT, help="number of mixes (default %(default)s)")
    p.add_argument("-o", "--output", required=True, help="output folder: mix_NN.wav, mix_NN.console.json, index.html")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--temperature",
        type=float,
        default=defaults.SAMPLE_TEMPERATURE,
        help="how far each mix moves from the automatic mix towards its drawn human style (0: not at all, "
        "1: as far as a human engineer was from the model; default %(default)s)",
    )
    p.add_argument(
        "--refine",
        type=int,
        metavar="STEPS",
        default=defaults.SAMPLE_REFINE_STEPS,
        help="steps optimising each mix's pans, sends, buses and master towards its style "
        "(default %(default)s; 0: the model's console alone)",
    )
    p.add_argument("--model", help="model file (default: the shipped model)")
    _device_option(p)
    p.set_defaults(func=_sample)
    p = sub.add_parser("match", help="mix the stems in the style of a reference song")
    p.add_argument("stems_dir")
    p.add_argument("--reference", required=True, help="any mixed song (other content and length are fine)")
    p.add_argument("-o", "--output", required=True, help="mix file; its console file goes beside it")
    p.add_argument(
        "--refine",
        type=int,
        metavar="STEPS",
        default=defaults.MATCH_REFINE_STEPS,
        help="steps optimising the console against the reference's features (default %(default)s; 0: "
        "the style encoder and decoder alone)",
    )
    p.add_argument("--model", help="model file (default: the shipped model)")
    _device_option(p)
    p.set_defaults(func=_match)
    p = sub.add_parser("fit", help="reverse-engineer a mix of these stems: the console that renders it")
    p.add_argument("stems_dir")
    p.add_argument("--target", required=True, help="a mix made from these stems")
    p.add_argument("-o", "--output", required=True, help="console file to write")
    p.add_argument(
        "--steps", type=int, default=defaults.FIT_MAX_STEPS, help="most optimisation steps (default %(default)s)"
    )
    p.add_argument(
        "--budget", type=float, default=defaults.FIT_BUDGET_S, help="most seconds of optimisation (default %(default)s)"
    )
    p.add_argument("--model", help="model file for the starting guess (default: the shipped model)")
    _device_option(p)
    p.set_defaults(func=_fit)
    p = sub.add_parser("train", help="train a mixing model from a YAML config (Lightning; CPU, GPUs, DDP)")
    p.add_argument("config", help="YAML config (see configs/default.yaml)")
    p.add_argument("--devices", help="devices per node (number or 'auto')")
    p.add_argument("--num-nodes", type=int, help="nodes (DDP)")
    p.add_argument("--strategy", help="Lightning strategy, e.g. ddp")
    p.add_argument("--accelerator", help="cpu, gpu, auto")
    p.add_argument("--max-steps", type=int, help="override run.max_steps")
    p.add_argument("--out", help="override run.out (the run folder; training resumes from it)")
    p.set_defaults(func=_train)
    sub._parser_class = _IntermixedParser
    p = sub.add_parser("render", help="render a folder of stems through a console file")
    sub._parser_class = _Parser
    p.add_argument(
        "stems_dir",
        nargs="?",
        help="folder holding the files the console names (default: the folder "
        "the console file records, else its own folder)",
    )
    p.add_argument("console", help="console file (JSON, see console.schema.json)")
    p.add_argument("-o", "--output", required=True, help="mix file to write (.wav or .flac)")
    p.add_argument("--format", choices=["float", "24"], default="float", help="sample format (default float)")
    p.add_argument("--strict", action="store_true", help="refuse stems whose sample rate differs from the console's")
    p.add_argument("--stems-out", help="also write each processed track (post-fader, post-pan) to this folder")
    p.add_argument("--timings", action="store_true", help="print how long reading, rendering, measuring, writing took")
    _device_option(p)
    p.set_defaults(func=_render)
    p = sub.add_parser("studio", help="a local web page to hear, compare, tweak and save the mix (studio extra)")
    p.add_argument("stems_dir", help="folder of stems (never modified)")
    p.add_argument("--console", help="open this console file (default: the model's automatic mix)")
    p.add_argument(
        "--port", type=int, default=defaults.STUDIO_PORT, help="port (default %(default)s; 0 picks a free one)"
    )
    p.add_argument(
        "--host",
        default=defaults.STUDIO_HOST,
        help="address to listen on (default %(default)s; any other needs the token printed at start-up)",
    )
    p.add_argument("--out", help="folder for saved files (default: STEMS_DIR.studio beside the stems folder)")
    p.add_argument("--model", help="mixing model file (default: the shipped model)")
    p.add_argument("--strict", action="store_true", help="refuse stems at another sample rate than the console's")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    _device_option(p)
    p.set_defaults(func=_studio)
    p = sub.add_parser("export", help="write a console file as a DAW session (DAWproject or REAPER) playing the stems")
    p.add_argument("console", help="console file (JSON)")
    p.add_argument(
        "--format",
        choices=["dawproject", "reaper"],
        required=True,
        help="dawproject: a .dawproject (Bitwig Studio, Studio One, Cubase); reaper: a REAPER .RPP",
    )
    p.add_argument("-o", "--output", required=True, help="session file to write (.dawproject or .RPP)")
    p.add_argument(
        "--stems",
        help="folder holding the files the console names (default: the folder the console "
        "file records, else its own folder)",
    )
    p.add_argument("--embed", action="store_true", help="dawproject: copy the stems into the file")
    p.set_defaults(func=_export)
    p = sub.add_parser("dataset", help="build training data")
    dsub = p.add_subparsers(dest="dataset_command", required=True)
    p = dsub.add_parser("normalize", help="effect-normalise every stem of a dataset (FxNorm), with labels")
    p.add_argument("root", help="dataset folder (folder of songs, MUSDB18, MUSDB18-HQ, MedleyDB-like) or .csv")
    p.add_argument("-o", "--output", required=True, help="output folder (folder-of-stems layout)")
    p.add_argument("--layout", choices=["folder", "musdb", "musdb-hq", "medleydb", "csv"], help="default: detect")
    p.add_argument("--sample-rate", type=int, default=defaults.DATASET_SAMPLE_RATE, help="Hz (default %(default)s)")
    p.add_argument(
        "--target-lufs",
        type=float,
        default=defaults.STEM_LUFS,
        help="loudness of every normalised stem (default %(default)s)",
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: every core)")
    p.add_argument("--stats-only", action="store_true", help="pass 1 only: write classes.json (before sharded jobs)")
    _shard_option(p)
    p.set_defaults(func=_normalize)
    p = dsub.add_parser(
        "lmms", help="render LMMS projects (default: Debian's lmms-common demos) into dry and wet stems + mix"
    )
    p.add_argument("output", help="output folder (folder-of-stems layout)")
    p.add_argument("--projects", nargs="+", help="your own .mmp/.mmpz projects instead of the shipped demos")
    p.add_argument("--workers", type=int, default=None, help="songs rendered at once (default: every core)")
    _shard_option(p)
    p.set_defaults(func=_lmms)
    p = dsub.add_parser("midi", help="render scores part by part into dry stems (5 or more sources a song)")
    p.add_argument("output", help="output folder (folder-of-stems layout)")
    p.add_argument("--source", default="music21", help="music21 (its corpus) or a folder of MIDI/MusicXML files")
    p.add_argument("--songs", type=int, default=None, help="at most this many songs (default: every score)")
    p.add_argument(
        "--seconds", type=float, default=defaults.MIDI_SONG_SECONDS, help="length of every song (default %(default)s)"
    )
    p.add_argument("--workers", type=int, default=None, help="songs rendered at once (default: every core)")
    _shard_option(p)
    p.set_defaults(func=_midi)
    p = dsub.add_parser("sounds", help="play every sample and preset LMMS ships into a dry stem (effect-removal data)")
    p.add_argument("output", help="output folder (folder-of-stems layout, one folder per library folder)")
    p.add_argument("--library", default="/usr/share/lmms", help="LMMS's data folder (default %(default)s)")
    p.add_argument("--seconds", type=float, default=8.0, help="length of every stem (default %(default)s)")
    p.add_argument("--per-folder", type=int, default=None, help="at most this many sounds of a folder (default all)")
    p.add_argument("--workers", type=int, default=None, help="folders rendered at once (default: every core)")
    _shard_option(p)
    p.set_defaults(func=_sounds)
    p = dsub.add_parser("dry", help="remove the effects of every stem of a dataset (gradmix dry), then normalise")
    p.add_argument("root", help="dataset (any layout gradmix reads)")
    p.add_argument("-o", "--output", required=True, help="output folder: dry/ (and normalized/)")
    p.add_argument("--model", help="effect estimator (default: the shipped one)")
    p.add_argument("--normalize", action="store_true", help="FxNorm the dry stems into OUTPUT/normalized")
    _careful_option(p)
    _shard_option(p)
    p.set_defaults(func=_dataset_dry)
    p = dsub.add_parser("separate", help="split full mixes into stems with a local Demucs model, then normalise")
    p.add_argument("mixes_dir", help="folder of full mixes")
    p.add_argument("-o", "--output", required=True, help="output folder: stems/ and normalized/")
    p.add_argument("--model", required=True, help="local Demucs checkpoint (nothing is downloaded)")
    p.add_argument("--no-normalize", action="store_true", help="only separate")
    p.add_argument(
        "--target-lufs",
        type=float,
        default=defaults.STEM_LUFS,
        help="loudness of every normalised stem (default %(default)s)",
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: every core)")
    _shard_option(p)
    p.set_defaults(func=_separate)
    p = sub.add_parser("dry", help="estimate the effects of a stem as an editable chain, and undo them")
    p.add_argument("wet", help="the stem (mono or stereo, any rate)")
    p.add_argument("-o", "--output", required=True, help="the dry stem to write (.wav or .flac)")
    p.add_argument(
        "--chain-out", help="console file of the chain (default: OUTPUT with .console.json): renders the wet stem back"
    )
    p.add_argument("--model", help="effect estimator (default: the shipped one)")
    p.add_argument("--format", choices=["float", "24"], default="float", help="sample format (default float)")
    _careful_option(p)
    p.set_defaults(func=_dry)
    p = sub.add_parser("train-removal", help="train the effect estimator of gradmix dry on dry stems")
    p.add_argument("roots", nargs="+", help="datasets of dry stems (e.g. data/lmms data/midi)")
    p.add_argument("-o", "--output", required=True, help="run folder (resumes from it; model.pt at the end)")
    p.add_argument("--steps", type=int, default=defaults.REMOVAL_STEPS, help="training steps (default %(default)s)")
    p.add_argument("--minutes", type=float, help="stop (resumably) after this many minutes")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default %(default)s)")
    p.add_argument("--init", help="a model.pt to start from (a new run only; default: random weights)")
    p.add_argument(
        "--stems-per-song",
        action="append",
        metavar="ROOT=N",
        help="each song of the root ROOT gives at most N stems (the same ones every time), so that a dataset of "
        "many stems takes a set share of the training pool (e.g. data/sounds=8)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_train_removal)
    p = sub.add_parser("eval", help="compare systems with the human mixes of a dataset")
    p.add_argument(
        "dataset",
        nargs="+",
        help="dataset (any layout) whose songs have a mix; with --removal, one or more datasets of dry stems",
    )
    p.add_argument(
        "--systems",
        default=",".join(defaults.EVAL_SYSTEMS),
        help="default %(default)s; comma-separated: plain_sum, peak_normalized, equal_loudness, rules, "
        "random_console, gradmix, target",
    )
    p.add_argument("--model", help="model file for the gradmix system (default: the shipped model)")
    p.add_argument(
        "--model-as",
        action="append",
        metavar="NAME=PATH",
        help="add a system NAME that is the mixing model at PATH (repeatable; e.g. previous=old.pt)",
    )
    p.add_argument(
        "--tracks",
        action="store_true",
        help="also measure each track's part against the authors' wet stems (songs with <song>/wet/)",
    )
    p.add_argument("--songs", help="comma-separated song names to evaluate (default: every song with a mix)")
    p.add_argument("--held-out", action="store_true", help="evaluate the songs the model's training left out")
    p.add_argument(
        "--generative",
        action="store_true",
        help="evaluate sampling (diversity, plausibility) and match instead of the systems",
    )
    p.add_argument(
        "-n", type=int, default=defaults.SAMPLE_COUNT, help="--generative: samples per song (default %(default)s)"
    )
    p.add_argument(
        "--refine",
        type=int,
        default=defaults.SAMPLE_REFINE_STEPS,
        help="--generative: refine steps of each sample and of match (default %(default)s)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=defaults.SAMPLE_TEMPERATURE,
        help="--generative: as gradmix sample's (default %(default)s)",
    )
    p.add_argument("-o", "--output", required=True, help="results folder")
    p.add_argument(
        "--seconds",
        type=float,
        default=defaults.EVAL_SECONDS,
        help="evaluate the first S seconds (default %(default)s; 0: whole songs)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random console (--generative: of the random consoles, and of the samples without --seeds)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="S",
        help="--generative: draw the samples once per seed (distinct, >= 0) and report each figure as "
        "mean ± std over them and per seed (default: --seed alone)",
    )
    p.add_argument(
        "--removal",
        action="store_true",
        help="measure effect removal (gradmix dry) on the datasets' held-out stems; --model: the effect estimator",
    )
    _careful_option(p)
    _device_option(p)
    p.set_defaults(func=_eval)
    p = sub.add_parser("effects", help="list every effect with its parameters, units and ranges")
    p.set_defaults(func=_effects)
    return parser


NUMBER_RANGES = {
    "n": (1, 100),
    "refine": (0, None),
    "workers": (1, None),
    "per_folder": (1, None),
    "sample_rate": (1, None),
    "seconds": (0, None),
    "target_lufs": (-70, 0),
}
"""Ranges of numeric options that argparse checks only for type (``None``: no upper bound); NaN is outside."""


def _check_numbers(args: argparse.Namespace) -> None:
    for name, (low, high) in NUMBER_RANGES.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if not (value >= low and (high is None or value <= high) and math.isfinite(value)):
            flag = "-n" if name == "n" else "--" + name.replace("_", "-")
            raise GradmixError(f"{flag}: {value:g} is outside {low}..{high if high is not None else 'inf'}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_numbers(args)
        args.func(args)
    except GradmixError as exc:
        print(f"gradmix: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
