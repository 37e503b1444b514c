"""`statefulrnn export` (ONNX) and `statefulrnn import-keras`: argument parsing only."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import add_command


def add_export_command(commands: argparse._SubParsersAction) -> None:
    """Register `statefulrnn export RUN --format onnx --out model.onnx`."""
    from ..export import OPSET

    p = add_command(
        commands,
        "export",
        "export a run's step model to ONNX, state as explicit inputs and outputs",
        description="Write the run's model as an ONNX graph that takes (inputs, h[, c]) and returns (outputs, "
        "h_out[, c_out]), with any number of streams and steps per call. The run's config, vocabulary, and for "
        "series runs the fitted transforms and interval bands, go into the file's metadata (statefulrnn.*), so a "
        "deployment needs only the .onnx file.",
    )
    p.add_argument("run_dir", type=Path, help="run directory")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format")
    p.add_argument("--out", type=Path, required=True, help="file to write (model.onnx)")
    p.add_argument("--opset", type=int, default=OPSET, help="ONNX opset")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ..export import export_onnx

    out = export_onnx(args.run_dir, args.out, opset=args.opset)
    summary = {"run": str(args.run_dir), "out": str(out), "format": args.format, "bytes": out.stat().st_size}
    print(json.dumps(summary) if args.json else f"wrote {out} ({summary['bytes']:,} bytes, opset {args.opset})")
    return 0


def add_import_keras_command(commands: argparse._SubParsersAction) -> None:
    """Register `statefulrnn import-keras MODEL.keras --out RUN [--vocab vocab.json]`."""
    from ..keras_import import SUPPORTED

    p = add_command(
        commands,
        "import-keras",
        "turn a Keras 3 .keras recurrent model into a statefulrnn run",
        description=f"Read a Keras 3 .keras file (no TensorFlow needed) and write its weights as a run. Supported: "
        f"{SUPPORTED}. Gate orders and bias conventions are mapped (see statefulrnn.keras_import).",
    )
    p.add_argument("model", type=Path, help="the .keras file")
    p.add_argument("--out", type=Path, required=True, help="run directory to write")
    p.add_argument(
        "--vocab",
        type=Path,
        default=None,
        help="statefulrnn vocab.json whose token i is Keras id i: makes an Embedding model a text run",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(run=run_import_keras)


def run_import_keras(args: argparse.Namespace) -> int:
    from ..keras_import import import_keras

    summary = import_keras(args.model, args.out, vocab=args.vocab)
    if args.json:
        print(json.dumps(summary))
        return 0
    m = summary["model"]
    print(
        f"wrote {summary['run']}: {m['num_layers']}-layer {m['cell']} {m['hidden_size']} "
        f"({' -> '.join(summary['layers'])}), task {summary['task']}"
    )
    return 0
