"""The ``muse-fast`` command line: parse, validate, build a config, call the library."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from functools import partial
from pathlib import Path

from . import __version__
from .errors import ConfigError, MuseError

EXIT_USER_ERROR = 2
ENGINE_ENV = "MUSE_FAST_ENGINE"  # the default --engine of infer, for a site that pins one
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # SIGTERM (128 + SIGTERM), handled like Ctrl-C
PRECISION_HELP = (
    "fp32, bf16, fp16 (CUDA), int8 (--engine onnx on the CPU, ViT models only) or auto (default): bf16 on CPUs "
    "with AMX or AVX512-BF16, fp16 on CUDA GPUs with tensor cores, else fp32; results at another precision are not "
    "resumed"
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same cleanup runs and finished batches are kept."""


EMPTY_PATH = Path(".")  # this very object stands for an empty value (compared by identity: Path("") is ".")


def path_arg(text: str) -> Path:
    """A path option's value; an empty one (``--out ""``, an unset shell variable) is marked, for :func:`_run` to
    refuse in one line: it is not the current folder."""
    return Path(text) if text.strip() else EMPTY_PATH


def _terminate(signum, frame) -> None:
    from .runtime import interrupts

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    interrupts.note(Terminated)
    raise Terminated


def _interrupt(signum, frame) -> None:
    """Ctrl-C: KeyboardInterrupt, noted first, so that one lost in a garbage-collection callback is raised again."""
    from .runtime import interrupts

    interrupts.note(KeyboardInterrupt)
    raise KeyboardInterrupt


def _add_infer(sub) -> None:
    p = sub.add_parser("infer", help="detect and classify nuclei in slides or images")
    p.add_argument(
        "slides",
        nargs="+",
        type=Path,
        help="slides (SVS/TIFF/NDPI/MRXS/...), images (PNG/JPEG/TIFF), folders of them, or CSV lists "
        "with a 'path' column and an optional 'mpp' column",
    )
    p.add_argument("--out", type=path_arg, required=True, help="output folder (<stem>.geojson, .csv, ... per slide)")
    p.add_argument(
        "--engine",
        default=os.environ.get(ENGINE_ENV) or "auto",
        help=f"inference engine (default: ${ENGINE_ENV} if set, else auto): auto (on the CPU the fastest engine and "
        "precision measured on this machine, once, cached; on CUDA trt, onnx, then torch), torch, compiled (CPU; "
        "needs a C++ compiler on first use), onnx or trt",
    )
    p.add_argument("--precision", default="auto", help=PRECISION_HELP)
    p.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped BRCA-M2C model)")
    p.add_argument("--mpp", type=float, default=None, help="microns per pixel at level 0 (overrides the file)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device for the torch engine")
    p.add_argument("--batch-size", type=int, default=16, help="tiles per network batch (default: 16)")
    p.add_argument("--reader", default="auto", help="slide reader: auto, cucim, openslide, tiffslide, image")
    p.add_argument("--threshold", type=float, default=None, help="minimum nucleus score (default: 0.3)")
    p.add_argument("--no-tissue-mask", action="store_true", help="tile the whole slide, not only detected tissue")
    p.add_argument("--workers", type=int, default=2, help="threads reading tiles (default: 2)")
    p.add_argument(
        "--overwrite", action="store_true", help="recompute slides that are done (also those done with other settings)"
    )
    p.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="finish slides whose image data is damaged in places, skipping those tiles (listed in the GeoJSON, "
        "manifest and run summary, crossed out on the overlay); by default such a slide fails",
    )
    p.add_argument(
        "--embeddings",
        action="store_true",
        help="also write <stem>.h5ad (AnnData): the float16 point feature of every nucleus, row for row the CSV "
        "(needs h5py: pip install h5py anndata)",
    )
    p.add_argument(
        "--ray",
        metavar="auto|ADDRESS",
        default=None,
        help="run the slides on a Ray cluster: 'auto' joins the cluster of this machine (RAY_ADDRESS or 'ray start'), "
        "or starts one here; ADDRESS is a head node (host:port or ray://host:10001). --out must be shared storage",
    )
    p.add_argument(
        "--workers-per-node",
        type=int,
        default=None,
        help="with --ray and --device cpu: workers per node, each with the node's CPUs / N threads (default: 1); "
        "with --device cuda there is one worker per GPU",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="flip test-time augmentation: average the network's outputs with horizontal and vertical flips "
        "(3 passes per tile, about 3x slower; results are not mixed with runs without it)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export the network to ONNX or build a TensorRT engine")
    p.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped model)")
    p.add_argument("--format", choices=["onnx", "trt"], default="onnx")
    p.add_argument("--out", type=Path, required=True, help="output file (.onnx or .engine)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file (only a regular file)")
    p.add_argument("--precision", choices=["fp16", "fp32"], default="fp16", help="TensorRT precision")
    p.add_argument("--max-batch", type=int, default=64, help="TensorRT profile: largest batch")
    p.add_argument("--opt-batch", type=int, default=16, help="TensorRT profile: batch to tune for")
    p.add_argument(
        "--fused-post",
        action="store_true",
        help="also put peak finding, the point gather and the classifier in the graph, so it outputs nuclei (custom "
        "op muse_fast::NucleiDecode; TensorRT runs it with libmuse_trt_plugin.so, built by CMake)",
    )


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="end-to-end vs model-only throughput on one slide, as JSON")
    p.add_argument("slide", type=Path)
    p.add_argument("--engine", default="torch")
    p.add_argument("--precision", default="auto", help=PRECISION_HELP)
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--mpp", type=float, default=None)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (3 passes per tile)")
    p.add_argument("--max-batches", type=int, default=0, help="stage breakdown: only the first N batches (0 = all)")
    p.add_argument("--no-tissue-mask", action="store_true", help="tile the whole slide, not only detected tissue")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the slide end to end N times in this process (later_runs: steady state)",
    )


def _add_adapt(sub) -> None:
    p = sub.add_parser(
        "adapt",
        help="adapt the classifier (and on complete regions the detector) to your classes from QuPath annotations",
    )
    p.add_argument("inputs", nargs="+", type=Path, help="slides or images that were annotated")
    p.add_argument(
        "--annotations",
        type=Path,
        required=True,
        help="folder with <stem>.geojson per input (QuPath: File > Export objects as GeoJSON), or <stem>.csv "
        "with x,y,class",
    )
    p.add_argument("--out", type=path_arg, required=True, help="weights file to write (adapted.pt; a report beside)")
    p.add_argument("--mpp", type=float, default=None, help="microns per pixel at level 0 (overrides the files)")
    p.add_argument(
        "--mode",
        default="auto",
        help="classes: a new classifier on the point features (seconds); full: also fine-tune on complete regions "
        "(minutes); auto (default): full when there are 2 or more complete regions, else classes",
    )
    p.add_argument("--weights", type=Path, default=None, help="base weights (default: the shipped model)")
    p.add_argument(
        "--engine",
        default=os.environ.get(ENGINE_ENV) or "auto",
        help=f"engine of the network pass over the annotated areas, as infer's --engine (default: ${ENGINE_ENV} if "
        "set, else auto)",
    )
    p.add_argument("--precision", default="auto", help="precision of that pass, as infer's --precision")
    p.add_argument("--overwrite", action="store_true", help="replace --out and its report if they exist")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table")


def _adapt(args) -> int:
    from dataclasses import replace

    from .adapt.run import AdaptConfig, adapt

    cfg = AdaptConfig(
        tuple(args.inputs), args.annotations, args.out, args.mpp, args.mode, args.weights, args.overwrite, args.quiet
    )
    cfg = replace(cfg, engine=args.engine, precision=args.precision)
    try:
        adapt(cfg)
    except OSError as exc:  # a path that cannot be read or written (full disk, no permission): one line
        from .errors import OutputError

        raise OutputError(
            f"cannot access {exc.filename or args.out}: {exc.strerror or exc}; free space or choose another --out"
        ) from None
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="what a weights file is: model, classes and colours, mpp, provenance (JSON)")
    p.add_argument("weights", type=Path, nargs="?", default=None, help="weights file (default: the shipped model)")


def _info(args) -> int:
    from .model.weights import file_sha256, load_weights, resolve_weights

    _, meta = load_weights(args.weights)
    path = resolve_weights(args.weights)
    info = {
        "file": str(path),
        "sha256": file_sha256(path),
        "model": meta.model,
        "classes": [{"name": str(n), "colour": list(c)} for n, c in zip(meta.classes, _colours(meta.classes))],
        "mpp": meta.mpp,
        "tile_size": meta.tile_size,
        "provenance": meta.config.get("adapt") or {k: v for k, v in meta.config.items() if k != "calibration"},
    }
    from .console import emit

    emit(json.dumps(info, indent=2, default=str))
    return 0


def _colours(classes) -> list:
    from .post.classes import class_colours

    return class_colours(classes)


def _build_engine(
    name: str, weights: Path | None, device: str, batch_size: int, precision: str = "auto", tta: bool = False
):
    from .model.weights import file_sha256, load_weights, resolve_weights
    from .runtime.budget import check_batch_size
    from .runtime.engines import EngineInputs, create_engine
    from .runtime.precision import check_precision

    check_precision(precision)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}; the default is 16")
    model, meta = load_weights(weights)  # checks the metadata, mpp included
    note = check_batch_size(batch_size, meta.tile_size, device)
    if note:
        logging.getLogger(__name__).warning(note)
    sha = file_sha256(resolve_weights(weights))
    engine = create_engine(name, EngineInputs(model, meta, sha, device, batch_size, precision))
    if tta:
        from .runtime.tta import FlipTTAEngine

        engine = FlipTTAEngine(engine)
    return engine, meta, sha


def _infer(args) -> int:
    from dataclasses import replace

    from .config import InferConfig
    from .output.folder import out_dir_for_run
    from .post.decode import DecodeConfig
    from .runtime.cohort import (
        check_inputs_not_outputs,
        collect_jobs,
        engine_fingerprint,
        finish_cohort,
        retry_busy,
        run_job,
    )
    from .runtime.pipeline import output_stem

    if args.ray is not None and not args.ray.strip():
        raise ConfigError("--ray needs 'auto' or a head address (host:port); drop it to run here without Ray")
    if args.workers_per_node is not None and not args.ray:
        raise ConfigError("--workers-per-node applies to --ray runs only; add --ray auto or drop it")
    jobs = collect_jobs(args.slides)
    stems = [output_stem(j.path) for j in jobs]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise ConfigError(
            f"several inputs would write the same outputs ({', '.join(clash)}); run them into separate --out folders"
        )
    check_inputs_not_outputs(jobs, args.out, stems)
    decode = DecodeConfig() if args.threshold is None else DecodeConfig(threshold=args.threshold)
    cfg = InferConfig(
        out_dir=args.out,
        engine=args.engine,
        precision=args.precision,
        device=args.device,
        weights=args.weights,
        mpp=args.mpp,
        reader=args.reader,
        batch_size=args.batch_size,
        decode=decode,
        quiet=args.quiet,
        tissue_mask=not args.no_tissue_mask,
        workers=args.workers,
        overwrite=args.overwrite,
        skip_unreadable=args.skip_unreadable,
        embeddings=args.embeddings,
        tta=args.tta,
    )
    if len(jobs) > 1:
        from .runtime.summary import check_summary_path

        check_summary_path(cfg.out_dir, cfg.overwrite)  # before any work: run_summary.json is ours to replace
    if args.ray:  # each worker builds its engine with the same call as below
        from .runtime.ray_cohort import RayOptions, run_cohort_on_ray

        build = partial(_build_engine, cfg.engine, cfg.weights, cfg.device, cfg.batch_size, cfg.precision, cfg.tta)
        return run_cohort_on_ray(
            jobs, cfg, build, RayOptions(args.ray, 1 if args.workers_per_node is None else args.workers_per_node)
        )
    engine, meta, sha = _build_engine(cfg.engine, cfg.weights, cfg.device, cfg.batch_size, cfg.precision, cfg.tta)
    fingerprint = engine_fingerprint(engine, sha)  # run_slide adds the file's identity and the settings
    summaries = []
    with out_dir_for_run(cfg.out_dir):  # a refused slide leaves no empty --out behind
        for job in jobs:
            summary = run_job(job, engine, meta, cfg, fingerprint, single=len(jobs) == 1)
            summaries.append(summary)
            print(summary.line(), file=sys.stderr)
        for i in retry_busy(summaries):  # slides another run held: it may have finished them meanwhile (then kept)
            summaries[i] = run_job(jobs[i], engine, meta, replace(cfg, overwrite=False), fingerprint)
            print(summaries[i].line(), file=sys.stderr)
        return finish_cohort(cfg, summaries, fingerprint) if len(jobs) > 1 else 0


def _export(args) -> int:
    from muse_fast.export.onnx import INPUT_NAME, export_onnx
    from muse_fast.export.out_file import check_export_out

    from .model.weights import resolve_weights

    source = (resolve_weights(args.weights),)  # never replaced, --overwrite or not
    check_export_out(args.out, overwrite=args.overwrite, inputs=source)  # before minutes of work
    if args.format == "trt":  # it also writes the ONNX beside the engine
        if args.out.suffix.lower() == ".onnx":
            raise ConfigError(f"--out {args.out}: a TensorRT engine is written beside its ONNX; name it *.engine")
        if not 1 <= args.opt_batch <= args.max_batch:
            raise ConfigError(
                f"--opt-batch {args.opt_batch} and --max-batch {args.max_batch}: need 1 <= opt <= max (defaults 16, 64)"
            )
        check_export_out(args.out.with_suffix(".onnx"), "--out (its .onnx beside it)", args.overwrite, source)
    if args.fused_post:
        return _export_fused(args)
    if args.format == "onnx":
        result = export_onnx(args.weights, args.out)
        print(f"wrote {result.path} (ONNX Runtime parity max |diff|: {result.max_abs_diff})", file=sys.stderr)
        return 0
    from muse_fast.export.cache import write_atomic
    from muse_fast.export.tensorrt import BuildSpec, build_engine, tensorrt_unavailable_reason

    from .errors import BackendUnavailable

    reason = tensorrt_unavailable_reason()
    if reason:
        raise BackendUnavailable(reason)
    onnx_path = args.out.with_suffix(".onnx")
    result = export_onnx(args.weights, onnx_path, precision=args.precision)  # strongly typed: the ONNX sets it
    size = result.meta.tile_size
    spec = BuildSpec(1, args.opt_batch, args.max_batch, args.precision)
    data = build_engine(onnx_path, spec, INPUT_NAME, (size, size, 3))
    write_atomic(args.out, data)
    print(f"wrote {args.out} (TensorRT {args.precision}, batch profile {spec.profile})", file=sys.stderr)
    return 0


def _export_fused(args) -> int:
    from muse_fast.export.fused import build_fused_engine, export_fused
    from muse_fast.export.tensorrt import BuildSpec

    if args.format == "onnx":
        result = export_fused(args.weights, args.out)
        rows = result.params.max_points
        print(f"wrote {result.path} (nuclei out, {rows} rows per tile; op muse_fast::NucleiDecode)", file=sys.stderr)
        return 0
    spec = BuildSpec(1, args.opt_batch, args.max_batch, args.precision)
    build_fused_engine(args.weights, args.out, spec)
    print(f"wrote {args.out} (TensorRT {args.precision}, nuclei out, batch profile {spec.profile})", file=sys.stderr)
    return 0


def _bench(args) -> int:
    from .console import emit
    from .runtime.bench import bench_slide

    if args.max_batches < 0:
        raise ConfigError(f"--max-batches must be 0 (all) or more, got {args.max_batches}")
    if args.repeat < 1:
        raise ConfigError(f"--repeat must be 1 or more, got {args.repeat}")
    engine, meta, _ = _build_engine(args.engine, args.weights, args.device, args.batch_size, args.precision, args.tta)
    result = bench_slide(
        args.slide, engine, meta, args.batch_size, args.mpp, args.max_batches, not args.no_tissue_mask, args.repeat
    )
    emit(json.dumps(result, indent=2))
    return 0


def _add_view(sub) -> None:
    p = sub.add_parser("view", help="look at a run's slides, nuclei and density maps in a browser (local server)")
    p.add_argument("out_dir", type=path_arg, help="the --out folder of a muse-fast infer run")
    p.add_argument("slide", type=Path, nargs="?", default=None, help="the slide (or its folder) if it has moved")
    p.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0 picks a free one)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; any other shows the data to the network)",
    )


def _view(args) -> int:
    from .view import view

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {args.port}")
    if args.out_dir is EMPTY_PATH:
        raise ConfigError("the output folder is empty; pass the --out folder of a muse-fast infer run")
    return view(args.out_dir, args.slide, args.host, args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="muse-fast", description="MUSE nucleus detection and classification on WSIs")
    parser.add_argument("--version", action="version", version=f"muse-fast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_infer(sub)
    _add_export(sub)
    _add_bench(sub)
    _add_view(sub)
    _add_adapt(sub)
    _add_info(sub)
    sub.add_parser("models", help="list the registered model architectures and the weights shipped for each (JSON)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .io.native_output import capture_native_output

    # native libraries (libjpeg, libtiff, OpenSlide, cuCIM) print straight to fds 1/2: keep that off the terminal;
    # what matters comes back as one line (e.g. the damaged-tile error)
    with capture_native_output():
        from .output.text import PrintableFormatter  # slide and class names: control characters escaped

        handler = logging.StreamHandler()
        handler.setFormatter(PrintableFormatter("muse-fast: %(message)s"))
        logging.basicConfig(level=logging.WARNING, handlers=[handler])
        logging.getLogger("tifffile").setLevel(logging.ERROR)  # its warnings repeat what our one-line errors say
        # run-level notes (saved batches discarded, engine fallbacks) show unless --quiet
        quiet = getattr(args, "quiet", False)
        logging.getLogger("muse_fast.runtime").setLevel(logging.WARNING if quiet else logging.INFO)
        from .console import quiet_libraries

        with quiet_libraries(quiet):  # nor Python warnings or torch's log lines
            return _run(args)


# what an interrupted command leaves, said when it stops (adapt and export do not resume: they start again)
RERUN = {
    "infer": "a rerun with the same --out continues from any finished batches",
    "bench": "nothing was written under a final name",
}


def _run(args) -> int:
    commands = {"infer": _infer, "export": _export, "bench": _bench, "view": _view, "adapt": _adapt, "info": _info}
    from .runtime import interrupts

    in_main = threading.current_thread() is threading.main_thread()
    previous = None
    if in_main:
        ctrl_c = signal.getsignal(signal.SIGINT)
        if ctrl_c is signal.default_int_handler:  # not where the job was started with SIGINT ignored (nohup, &)
            ctrl_c = _interrupt
        previous = signal.signal(signal.SIGTERM, _terminate), signal.signal(signal.SIGINT, ctrl_c)
    try:
        if getattr(args, "out", None) is EMPTY_PATH:
            raise ConfigError("--out is empty; give a file or folder name")
        if args.command in commands:
            code = commands[args.command](args)
            interrupts.raise_if_lost()  # lost after the last slide's last step: still an interrupted command
            return code
        from .console import emit
        from .model.catalog import model_catalog

        emit(json.dumps(model_catalog(), indent=2))
        return 0
    except MuseError as exc:
        from .output.text import printable

        print(f"muse-fast: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        interrupts.clear()
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        after = RERUN.get(args.command, "nothing was written under a final name")
        print(f"muse-fast: {how}; {after}", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])


if __name__ == "__main__":
    raise SystemExit(main())
