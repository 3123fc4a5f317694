"""``bitspike import MODEL.nir -o MODEL.bsm``: a NIR graph (snnTorch, …) to a manifest, compared with the float network."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from bitspike.cli import add_common

    p = subparsers.add_parser(
        "import",
        help="import a NIR graph (e.g. from snnTorch) as a manifest (.bsm)",
        description=(
            "Read a NIR graph (Affine/Linear, Conv2d, SumPool2d/AvgPool2d, Flatten, IF, LIF), quantize it to "
            "bitspike's time-stepped integer neurons, write the manifest, and report how often the integer "
            "network's classes agree with the float network's (docs/NIR.md)."
        ),
    )
    p.add_argument("model", metavar="MODEL.nir", help="the NIR graph (nir.write's HDF5 file)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="manifest to write")
    p.add_argument("--source", choices=["snntorch"], default=None,
                   help="what wrote the graph: snntorch = subtract reset, dt 1e-4, snnTorch's beta recovered exactly")
    p.add_argument("--reset", choices=["subtract", "zero"], default=None,
                   help="the reset rule the network was trained with (NIR does not record it; overrides --source)")
    p.add_argument("--bits", default=None, metavar="SPEC",
                   help="weight bits: one W (or W/1) for every synapse, or NODE=W entries by NIR node name, "
                        "comma-separated (default 8)")
    p.add_argument("--timesteps", type=int, default=8, metavar="T", help="steps per image (default 8)")
    p.add_argument("--input-scale", type=float, default=1.0 / 255.0, metavar="S",
                   help="real value of one pixel unit as the float network was fed (default 1/255; 1 for integers)")
    p.add_argument("--calib", choices=["digits", "fashion-mnist"], default=None,
                   help="compare float and integer networks on this data set's test split")
    p.add_argument("--inputs", metavar="FILE", default=None,
                   help="compare on these images instead: .npy (uint8 [N, ...]) or .npz with 'images' (and 'labels')")
    p.add_argument("--samples", type=int, default=None, metavar="N", help="compare on the first N images only")
    p.add_argument("--name", default=None, help="network name in the manifest (default: the file's stem)")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bitspike.errors import BitspikeError
    from bitspike.host.nir_import import import_file
    from bitspike.io import write_json

    if args.calib is not None and args.inputs is not None:
        raise BitspikeError("give --calib or --inputs, not both")
    if args.samples is not None and args.samples < 1:
        raise BitspikeError(f"--samples must be a positive integer, not {args.samples}")
    summary = import_file(
        args.model, args.output, source=args.source, reset=args.reset, bits=args.bits, timesteps=args.timesteps,
        input_scale=args.input_scale, calib=args.calib, inputs=args.inputs, samples=args.samples,
        name=args.name or Path(args.model).stem,
    )
    if not args.quiet:
        for note in summary["assumptions"]:
            print(f"assumed: {note}")
        for layer in summary["layers"]:
            extra = "" if layer["threshold"] is None else (
                f" → neuron node {layer['neuron_node']}: threshold {layer['threshold']}, leak "
                f"{layer['leak'][0]}/2**{layer['leak'][1]}, current ×2**{layer['current_shift']}")
            exact = "integers already" if layer["exact_weights"] else f"scale {layer['weight_scale']:.4g}"
            print(f"  {layer['name']} (node {layer['node']}): {layer['w_bits']}-bit weights ({exact}){extra}")
    print(f"wrote {summary['output']} ({summary['manifest_layers']} layers, T = {summary['timesteps']}, "
          f"reset {summary['reset']})")
    c = summary.get("comparison")
    if c is None:
        print("no comparison (give --calib DATASET or --inputs FILE)")
    else:
        line = (f"on {c['samples']} images of {c['data']}: integer and float classes agree on {c['classes_agree']}/"
                f"{c['samples']} ({100 * c['class_agreement']:.2f}%), outputs equal on {c['outputs_equal_samples']}")
        if "float_accuracy" in c:
            line += (f"; accuracy float {100 * c['float_accuracy']:.2f}%, integer {100 * c['int_accuracy']:.2f}%")
        print(line)
    write_json(args.json, summary)
    return 0
