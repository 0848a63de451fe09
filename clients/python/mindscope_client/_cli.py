"""`mindscope-client`: the service from a terminal. Prints tables; writes PNGs with --png."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from mindscope_client._client import Client
from mindscope_client._exceptions import APIError, MindscopeError, NotFound
from mindscope_client._jobs import zip_folder
from mindscope_client._types import Activations, Attribution, Explanation, ImageResult


def _table(rows: list[tuple[Any, ...]], headers: tuple[str, ...]) -> str:
    cells = [tuple(str(c) for c in headers)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def _write(result: Any, path: str) -> None:
    assert isinstance(result, ImageResult)
    print(f"wrote {result.save(path)} ({len(result.data)} bytes)")


def _predict(client: Client, args: argparse.Namespace) -> None:
    for path in args.images:
        prediction = client.predict(path)
        print(f"{path}: {prediction.label} ({prediction.confidence:.1%})")
        if args.all:
            probabilities = [float(p) for p in _flat(prediction.probabilities)]
            rows = sorted(zip(prediction.classes, probabilities, strict=True), key=lambda row: -row[1])
            print(_table([(name, f"{p:.4f}") for name, p in rows], ("class", "probability")))
        if args.png:
            _write(client.predict(path, as_png=True), args.png)


def _flat(values: Any) -> list[Any]:
    return values.tolist() if hasattr(values, "tolist") else list(values.data)


def _explain(client: Client, args: argparse.Namespace) -> None:
    options: dict[str, Any] = {
        "target": int(args.target) if args.target and args.target.isdigit() else args.target,
        "steps": args.steps,
        "baseline": args.baseline,
        "method": args.method,
        "tolerance": args.tolerance,
        "score": args.score,
    }
    result = client.integrated_gradients(args.image, **options)
    assert isinstance(result, Attribution)
    c = result.completeness
    print(
        f"target: {result.label} ({result.target}), its {result.score}; method {result.method}, "
        f"{result.steps} steps, {result.gradient_evaluations} gradient evaluations"
    )
    print(
        _table(
            [
                ("sum of attributions", f"{c.attribution_sum:.6f}"),
                ("F(input)", f"{c.output_at_input:.6f}"),
                ("F(baseline)", f"{c.output_at_baseline:.6f}"),
                ("relative delta", f"{c.relative_delta:.2e}"),
            ],
            ("completeness", "value"),
        )
    )
    if args.png:
        _write(client.integrated_gradients(args.image, **options, as_png=True), args.png)


def _settings(pairs: list[str]) -> dict[str, str]:
    settings = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise MindscopeError(f"--set takes NAME=VALUE, e.g. --set layer=conv6; got {pair!r}")
        settings[name] = value
    return settings


def _attribute(client: Client, args: argparse.Namespace) -> None:
    if args.method and args.method_option and args.method != args.method_option:
        raise MindscopeError(f"two methods given: {args.method} and --with {args.method_option}; give one")
    args.method = args.method or args.method_option or "vanilla-gradients"
    options: dict[str, Any] = {
        "target": int(args.target) if args.target and args.target.isdigit() else args.target,
        "score": args.score,
        "evaluate": args.evaluate.split(",") if args.evaluate else None,
        **_settings(args.set),
    }
    result = client.explain(args.image, args.method, **options)
    assert isinstance(result, Explanation)
    print(
        f"{result.method}: {result.label} ({result.target}), its {result.score}; "
        f"{result.gradient_evaluations} gradient and {result.forward_evaluations} forward rows "
        f"in {result.seconds:.3f} s"
    )
    shown = {k: v for k, v in result.parameters.items() if not isinstance(v, dict)}
    if shown:
        print("parameters: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    if result.evaluation:
        rows = [
            (kind, f"{result.evaluation[kind]['area']:.4f}", better)
            for kind, better in (("deletion", "lower is better"), ("insertion", "higher is better"))
            if result.evaluation.get(kind)
        ]
        if result.evaluation.get("sanity"):
            rows.append(("sanity", f"{result.evaluation['sanity']['rank_correlation']:.4f}", "lower is better"))
        print(_table(rows, ("score", "value", "meaning")))
    if args.png:
        _write(client.explain(args.image, args.method, **{**options, "evaluate": None}, as_png=True), args.png)


def _activations(client: Client, args: argparse.Namespace) -> None:
    result = client.activations(args.image, args.layer)
    assert isinstance(result, Activations)
    print(f"{result.layer} (layer {result.layer_index}), output {list(result.output_shape)}")
    rows = zip(result.channels, _flat(result.mean), _flat(result.max), _flat(result.fraction_positive), strict=True)
    print(
        _table(
            [(c, f"{m:.4f}", f"{x:.4f}", f"{f:.2f}") for c, m, x, f in rows], ("channel", "mean", "max", "fraction>0")
        )
    )
    if args.png:
        _write(client.activations(args.image, args.layer, as_png=True), args.png)


def _histogram(client: Client, args: argparse.Namespace) -> None:
    histograms = client.weight_histograms(stage="both", bins=args.bins)
    assert isinstance(histograms, list)
    rows = []
    for h in histograms:
        change = "-" if h.relative_change is None else f"{h.relative_change:.3f}"
        rows.append(
            (
                h.layer,
                h.parameter,
                "x".join(map(str, h.shape)),
                f"{h.stats['initial']['std']:.4f}",
                f"{h.stats['trained']['std']:.4f}",
                change,
            )
        )
    print(_table(rows, ("layer", "parameter", "shape", "std before", "std after", "relative change")))
    if args.png:
        _write(client.weight_histograms(as_png=True), args.png)


def _methods(client: Client, args: argparse.Namespace) -> None:
    """The server's explanation methods (its registry, through GET /explain), each with its own
    parameters and their defaults: what `attribute --with` and `--set` take."""
    shared = {"target", "score", "sign", "clip_percentile", "evaluate", "evaluate_steps"}
    for method in client.explain_methods():
        print(f"{method['name']}: {method['summary']}")
        for parameter in method["parameters"]:
            if parameter["name"] in shared:
                continue
            schema = parameter["schema"]
            default = schema.get("default")
            print(
                f"  --set {parameter['name']}=...  (default {default})"
                if default is not None
                else f"  --set {parameter['name']}=..."
            )


def _models(client: Client, args: argparse.Namespace) -> None:
    listing = client.models()
    print(
        _table(
            [(m.name, ",".join(map(str, m.versions)), m.default_version) for m in listing.models],
            ("model", "versions", "default"),
        )
    )


def _explain_dir(client: Client, args: argparse.Namespace) -> None:
    """Explain every image of a folder as one job, its results into --out. The job's id is kept in
    --out, and the submission carries an Idempotency-Key made of the folder's files and the options:
    run it again after an interruption and it follows the same job instead of starting another."""
    folder = Path(args.folder)
    out = Path(args.out)
    parameters: dict[str, Any] = dict(_settings(args.set))
    if args.evaluate:
        parameters["evaluate"] = args.evaluate.split(",")
    if args.target:
        parameters["target"] = args.target
    kind = "predict" if args.method == "predict" else "explain"
    method = None if kind == "predict" else args.method
    marker = out / "job-id"
    job = None
    if marker.exists():
        try:
            job = client.jobs.get(marker.read_text().strip())
        except NotFound:
            job = None
        if job is not None and job.state["state"] in ("failed", "cancelled"):
            job = None
    if job is None:
        if args.on_server:
            source: dict[str, Any] = {"folder": args.folder}
            digest = hashlib.sha256(args.folder.encode())
        else:
            if not folder.is_dir():
                raise MindscopeError(f"{folder} is not a folder")
            archive = zip_folder(folder)
            source, digest = {"archive": archive}, hashlib.sha256(archive)
        digest.update(json.dumps([kind, method, parameters, args.model], sort_keys=True).encode())
        job = client.jobs.submit(
            kind,
            method=method,
            parameters=parameters or None,
            model=args.model,
            idempotency_key=f"explain-dir-{digest.hexdigest()[:32]}",
            **source,
        )
        out.mkdir(parents=True, exist_ok=True)
        marker.write_text(job.id + "\n")
        print(f"job {job.id}: {job.state['items']['total']} images", file=sys.stderr)
    else:
        print(f"job {job.id} (started earlier): {job.state['state']}", file=sys.stderr)
    job.wait(progress=not args.quiet)
    job.download(out)
    items = job.state["items"]
    print(f"{job.state['state']}: {items['done']} done, {items['failed']} failed; results in {out}")


def _index_dir(client: Client, args: argparse.Namespace) -> None:
    """Embed every image of a folder as an `index` job, for `examples`: the folder is zipped and
    uploaded, or, with --on-server, named under the server's data root."""
    parameters: dict[str, Any] = {"name": args.name}
    if args.layer:
        parameters["layer"] = args.layer
    if args.on_server:
        source: dict[str, Any] = {"folder": args.folder}
    else:
        if not Path(args.folder).is_dir():
            raise MindscopeError(f"{args.folder} is not a folder")
        source = {"archive": zip_folder(Path(args.folder))}
    job = client.jobs.submit("index", parameters=parameters, model=args.model, **source)
    print(f"job {job.id}: {job.state['items']['total']} images", file=sys.stderr)
    job.wait(progress=not args.quiet)
    items = job.state["items"]
    if job.state["state"] != "succeeded":
        raise MindscopeError(f"job {job.id} {job.state['state']}: {job.state.get('error') or ''}")
    (info,) = [i for i in client.example_indexes(model=args.model) if i["name"] == args.name]
    print(
        f"index {info['name']}: {info['count']} images at {info['layer']} ({info['search']} search); "
        f"{items['failed']} could not be read"
    )


def _examples(client: Client, args: argparse.Namespace) -> None:
    found = client.examples(args.image, args.index, args.k, model=args.model)
    assert isinstance(found, dict)
    prediction = found["prediction"]
    print(f"{args.image}: {prediction['label']} ({prediction['confidence']:.1%}); nearest in {args.index}:")
    rows = [(n["rank"], n["source"], n["label"] or "", f"{n['distance']:.4f}") for n in found["neighbours"]]
    print(_table(rows, ("rank", "source", "label", "distance")))
    if args.png:
        _write(client.examples(args.image, args.index, args.k, model=args.model, as_png=True), args.png)


def _tcav(client: Client, args: argparse.Namespace) -> None:
    """Test a concept on a class's images (FOLDER) as a tcav job; registers the concept from
    --concept-from first when given."""
    if args.concept_from:
        info = client.concepts.create(args.concept, archive=args.concept_from)
        print(f"concept {info['name']}: {info['count']} images", file=sys.stderr)
    parameters: dict[str, Any] = {
        "concept": args.concept,
        "target": args.target,
        "random_folder": args.random_folder,
        "runs": args.runs,
        "seed": args.seed,
    }
    if args.layers:
        parameters["layers"] = args.layers.split(",")
    if args.size:
        parameters["size"] = args.size
    source: dict[str, Any] = {"folder": args.folder} if args.on_server else {"archive": zip_folder(Path(args.folder))}
    job = client.jobs.submit("tcav", parameters=parameters, model=args.model, **source)
    job.wait(progress=not args.quiet)
    if job.state["state"] != "succeeded":
        raise MindscopeError(f"job {job.id} {job.state['state']}: {job.state.get('error') or ''}")
    report = job.report()
    assert isinstance(report, dict)
    print(f"TCAV of {report['concept']} for {report['target']} over {report['images']} images:")
    rows = [
        (
            layer["layer"],
            f"{layer['mean']:.2f} ± {layer['std']:.2f}",
            f"{layer['random_mean']:.2f}",
            f"{layer['p_value']:.3g}",
            "yes" if layer["significant"] else "no",
        )
        for layer in report["layers"]
    ]
    print(_table(rows, ("layer", "score", "random", "p", "significant")))
    if args.png:
        chart = job.report(as_png=True)
        assert isinstance(chart, bytes)
        Path(args.png).write_bytes(chart)
        print(f"wrote {args.png} ({len(chart)} bytes)")


def _audit(client: Client, args: argparse.Namespace) -> None:
    """Audit a labelled folder as a job; write report.html and report.json into --out."""
    parameters: dict[str, Any] = {}
    if args.methods:
        parameters["methods"] = args.methods.split(",")
    if args.layers:
        parameters["layers"] = args.layers.split(",")
    if args.explain_per_class is not None:
        parameters["explain_per_class"] = args.explain_per_class
    source: dict[str, Any] = {"folder": args.folder} if args.on_server else {"archive": zip_folder(Path(args.folder))}
    job = client.jobs.submit("audit", parameters=parameters or None, model=args.model, **source)
    job.wait(progress=not args.quiet)
    if job.state["state"] != "succeeded":
        raise MindscopeError(f"job {job.id} {job.state['state']}: {job.state.get('error') or ''}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.html").write_text(job.report_html())
    report = job.report()
    assert isinstance(report, dict)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(
        f"{report['images']} images: accuracy {report['accuracy']:.3f}, expected calibration error "
        f"{report['calibration']['ece']:.4f}; {out / 'report.html'}"
    )


# The service's quadrature rules for integrated gradients (tests check this against the server's list).
QUADRATURE_RULES = ("gauss_legendre", "riemann_trapezoid", "riemann_midpoint", "riemann_left", "riemann_right")
BASELINES = ("black", "white", "blur", "uniform-noise")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mindscope-client", description=__doc__)
    parser.add_argument(
        "--url",
        default=os.environ.get("MINDSCOPE_URL", "http://127.0.0.1:8000"),
        help="the service's base URL (default: $MINDSCOPE_URL or http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("MINDSCOPE_API_KEY"), help="API key (default: $MINDSCOPE_API_KEY)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser("predict", help="classify images")
    predict.add_argument("images", nargs="+", help="image files (PNG, JPEG or WebP)")
    predict.add_argument("--all", action="store_true", help="print every class's probability")
    predict.add_argument("--png", help="write the probability chart of the (last) image here")
    predict.set_defaults(run=_predict)

    explain = commands.add_parser("explain", help="integrated gradients of one image")
    explain.add_argument("image", help="image file (PNG, JPEG or WebP)")
    explain.add_argument("--target", help="class index or name (default: the predicted class)")
    explain.add_argument(
        "--steps", type=int, default=50, help="quadrature points, 2 to the server's cap (default: %(default)s)"
    )
    explain.add_argument(
        "--baseline", default="black", choices=BASELINES, help="the reference image (default: %(default)s)"
    )
    explain.add_argument(
        "--method", default="gauss_legendre", choices=QUADRATURE_RULES, help="quadrature rule (default: %(default)s)"
    )
    explain.add_argument(
        "--tolerance", type=float, help="double the steps until the relative completeness error is at most this"
    )
    explain.add_argument(
        "--score",
        default="probability",
        choices=("probability", "logit"),
        help="attribute the target's probability or its logit (default: %(default)s)",
    )
    explain.add_argument("--png", help="write input | heatmap | overlay here")
    explain.set_defaults(run=_explain)

    attribute = commands.add_parser(
        "attribute", help="any explanation method the server lists (GET /explain), with its trust scores"
    )
    attribute.add_argument("image", help="image file (PNG, JPEG or WebP)")
    methods = (
        "vanilla-gradients, gradient-x-input, grad-cam, occlusion, blur-ig, guided-ig, xrai, shap, or any other "
        "GET /explain lists "
        "(integrated gradients: the explain command)"
    )
    attribute.add_argument(
        "method",
        nargs="?",
        help=f"the method, as `attribute cat.jpg grad-cam` or with --with: {methods} (default: vanilla-gradients)",
    )
    attribute.add_argument("--with", dest="method_option", metavar="METHOD", help="the method, as a flag")
    attribute.add_argument("--target", help="class index or name (default: the predicted class)")
    attribute.add_argument(
        "--score",
        default="probability",
        choices=("probability", "logit"),
        help="what to attribute (default: %(default)s)",
    )
    attribute.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a parameter of the method, e.g. layer=conv6"
    )
    attribute.add_argument("--evaluate", help="trust scores, comma-separated: deletion,insertion,sanity")
    attribute.add_argument("--png", help="write input | map | overlay here")
    attribute.set_defaults(run=_attribute)

    activations = commands.add_parser("activations", help="a layer's channel statistics")
    activations.add_argument("image", help="image file (PNG, JPEG or WebP)")
    activations.add_argument("--layer", default="conv3", help="layer name or 1-based index (default: %(default)s)")
    activations.add_argument("--png", help="write the channel grid here")
    activations.set_defaults(run=_activations)

    histogram = commands.add_parser("histogram", help="weight statistics before and after training")
    histogram.add_argument("--bins", type=int, default=50, help="bins per histogram (default: %(default)s)")
    histogram.add_argument("--png", help="write the before/after figure here")
    histogram.set_defaults(run=_histogram)

    explain_dir = commands.add_parser(
        "explain-dir", help="explain (or predict) every image of a folder as a job; rerun to resume it"
    )
    explain_dir.add_argument("folder", help="a local folder of images (class-named subfolders give labels)")
    explain_dir.add_argument(
        "--method", default="integrated-gradients", help="any method of GET /explain, or predict (default: %(default)s)"
    )
    explain_dir.add_argument("--evaluate", help="trust scores, comma-separated: deletion,insertion,sanity")
    explain_dir.add_argument("--target", help="class index or name (default: each image's predicted class)")
    explain_dir.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a parameter of the method, e.g. steps=32"
    )
    explain_dir.add_argument("--model", help="model name (default: the server's)")
    explain_dir.add_argument("--out", required=True, help="results.parquet, results.csv and maps/ go here")
    explain_dir.add_argument(
        "--on-server", action="store_true", help="FOLDER is under the server's data root: nothing is uploaded"
    )
    explain_dir.add_argument("--quiet", action="store_true", help="no progress bar")
    explain_dir.set_defaults(run=_explain_dir)

    index_dir = commands.add_parser("index-dir", help="index a folder's images for examples (a job)")
    index_dir.add_argument("folder", help="a local folder of images (class-named subfolders give labels)")
    index_dir.add_argument("--name", required=True, help="the index's name, for examples --index")
    index_dir.add_argument("--layer", help="layer to embed at (default: the one feeding the classifier)")
    index_dir.add_argument("--model", help="model name (default: the server's)")
    index_dir.add_argument(
        "--on-server", action="store_true", help="FOLDER is under the server's data root: nothing is uploaded"
    )
    index_dir.add_argument("--quiet", action="store_true", help="no progress bar")
    index_dir.set_defaults(run=_index_dir)

    examples = commands.add_parser("examples", help="the indexed images the model thinks an image is like")
    examples.add_argument("image", help="image file (PNG, JPEG or WebP)")
    examples.add_argument("--index", required=True, help="an index (index-dir builds one)")
    examples.add_argument("--k", type=int, default=9, help="how many (default: %(default)s)")
    examples.add_argument("--model", help="model name (default: the server's)")
    examples.add_argument("--png", help="write the grid here")
    examples.set_defaults(run=_examples)

    tcav = commands.add_parser("tcav", help="does a concept raise a class's score? (TCAV, a job)")
    tcav.add_argument("folder", help="the class's images: a local folder (or under the data root, --on-server)")
    tcav.add_argument("--concept", required=True, help="a concept's name (GET /concepts)")
    tcav.add_argument("--concept-from", help="register the concept first from this local folder or archive")
    tcav.add_argument("--target", required=True, help="the class: index or name")
    tcav.add_argument("--random-folder", required=True, help="a data-root folder to draw random sets from")
    tcav.add_argument("--layers", help="comma-separated (default: the server's choice)")
    tcav.add_argument("--runs", type=int, default=10, help="random sets, at least 10 (default: %(default)s)")
    tcav.add_argument("--size", type=int, help="images in each random set (default: the concept's)")
    tcav.add_argument("--seed", type=int, default=0)
    tcav.add_argument("--model", help="model name (default: the server's)")
    tcav.add_argument("--on-server", action="store_true", help="FOLDER is under the server's data root")
    tcav.add_argument("--png", help="write the chart here")
    tcav.add_argument("--quiet", action="store_true", help="no progress bar")
    tcav.set_defaults(run=_tcav)

    audit_command = commands.add_parser("audit", help="audit a labelled folder: report.html and report.json (a job)")
    audit_command.add_argument("folder", help="class-named subfolders of images (or under the data root, --on-server)")
    audit_command.add_argument("--out", required=True, help="report.html and report.json go here")
    audit_command.add_argument("--methods", help="comma-separated (default: grad-cam,integrated-gradients)")
    audit_command.add_argument("--layers", help="comma-separated layers whose channels are shown")
    audit_command.add_argument("--explain-per-class", type=int, help="images of each class explained (default 10)")
    audit_command.add_argument("--model", help="model name (default: the server's)")
    audit_command.add_argument("--on-server", action="store_true", help="FOLDER is under the server's data root")
    audit_command.add_argument("--quiet", action="store_true", help="no progress bar")
    audit_command.set_defaults(run=_audit)

    models = commands.add_parser("models", help="list stored models")
    models.set_defaults(run=_models)

    methods_command = commands.add_parser(
        "methods", help="the server's explanation methods and their parameters (GET /explain), for attribute"
    )
    methods_command.set_defaults(run=_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with Client(args.url, api_key=args.api_key) as client:
            args.run(client, args)
    except APIError as exc:
        print(f"error: {exc}{_listed(exc.details)}", file=sys.stderr)
        return 1
    except MindscopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # an image file that is missing or unreadable
        print(f"error: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return 1
    return 0


def _listed(details: dict[str, Any]) -> str:
    """The lists an error carries (valid layers, classes, accepted types), for the same line."""
    lists = [
        f"{key.replace('_', ' ')}: {', '.join(map(str, value))}"
        for key, value in details.items()
        if isinstance(value, list) and value and not isinstance(value[0], dict)
    ]
    return "".join(f"; {item}" for item in lists)


if __name__ == "__main__":
    sys.exit(main())
