"""`mindscope train ...` and `mindscope serve ...`."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from mindscope.training.data import load_cifar10_download, load_image_folder
    from mindscope.training.train import TrainConfig, train

    config = TrainConfig(
        epochs=args.epochs,
        widths=args.widths,
        batch_size=args.batch_size,
        val_size=args.val_size,
        seed=args.seed,
        peak_learning_rate=args.learning_rate,
        augment=not args.no_augment,
        batch_norm=not args.no_batch_norm,
        optimizer=args.optimizer,
    )
    out = Path(args.out)
    work_dir = Path(args.work_dir) if args.work_dir else out.with_name(out.name + ".partial")
    if args.data:
        data = load_image_folder(Path(args.data), per_class_limit=args.per_class_limit)
    else:
        data = load_cifar10_download()
    print(f"{data.description}; training {config.epochs} epochs, checkpoints in {work_dir}", flush=True)
    entry = train(data, out, config, work_dir, resume=args.resume, verbose=args.verbose)
    print(f"wrote {entry}", flush=True)
    return 0


def _listen(host: str, port: int, what: str = "HTTP", option: str = "--port") -> socket.socket | None:
    """The listening socket, bound before anything loads; None (and one line on stderr) when the
    address is taken or not ours, so a busy port never gets as far as loading models.

    No SO_REUSEPORT: a second server on a taken port must fail, not share its calls."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        print(
            f"mindscope serve: cannot listen for {what} on {host}:{port}: {exc.strerror}; choose another {option}",
            file=sys.stderr,
        )
        return None
    return sock


def grpc_port_for(http_port: int, given: int | None) -> int:
    """The gRPC port: the one given (--grpc-port, else MINDSCOPE_GRPC_PORT; 0 is off), else the
    HTTP port + 1 (8001 beside 8000, Triton's pair), so two servers on one machine never collide."""
    if given is not None:
        return given
    return http_port + 1 if http_port < 65535 else 0


def _serve(args: argparse.Namespace) -> int:
    sock = _listen(args.host, args.port)
    if sock is None:
        return 1
    from mindscope.config import Settings  # light: TensorFlow loads only once both ports are ours

    settings = Settings()
    if args.model_store:
        settings = settings.model_copy(update={"model_store_dir": Path(args.model_store)})
    grpc_port = grpc_port_for(args.port, args.grpc_port if args.grpc_port is not None else settings.grpc_port)
    if grpc_port:
        # Checked here, like the HTTP port, so a taken gRPC port stops the start with one line; the
        # gRPC server itself binds without SO_REUSEPORT, so a port taken in between fails it too.
        probe = _listen(args.host, grpc_port, "gRPC", "--grpc-port (0 turns gRPC off)")
        if probe is None:
            sock.close()
            return 1
        probe.close()
    settings = settings.model_copy(update={"grpc_port": grpc_port, "grpc_host": args.host})
    import uvicorn

    from mindscope.api.http_protocol import header_timeout_protocol
    from mindscope.app import create_app

    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler that
    # was installed before it; a handler that ignores it makes a clean shutdown exit with status 0.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    # One JSON line per request comes from mindscope.access; uvicorn's own access log would repeat it.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=False,
        http=header_timeout_protocol(settings.header_timeout_s),
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _import(args: argparse.Namespace) -> int:
    from mindscope.engine.importer import ImportRefused, import_model

    classes = None
    if args.classes_file:
        classes = [line.strip() for line in Path(args.classes_file).read_text().splitlines() if line.strip()]
    elif args.classes:
        classes = [part.strip() for part in args.classes.split(",")]
    try:
        report = import_model(
            Path(args.model),
            args.name,
            Path(args.store),
            classes=classes,
            initial_weights=Path(args.initial_weights) if args.initial_weights else None,
            input_range=args.preprocessing,
            mean=args.mean,
            std=args.std,
            signature=args.signature,
        )
    except (ImportRefused, FileExistsError, ValueError) as exc:
        print(f"mindscope import: {exc}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    return 0


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            "give comma-separated numbers, one per channel, e.g. 0.485,0.456,0.406"
        ) from None


def _widths(text: str) -> tuple[int, int, int]:
    parts = [int(part) for part in text.split(",")]
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError("give three positive channel counts, e.g. 32,64,128")
    return parts[0], parts[1], parts[2]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mindscope", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train the All-CNN and write a model_store entry")
    train.add_argument("--data", help="folder of class-named image folders; omit to download CIFAR-10")
    train.add_argument("--out", required=True, help="store entry to create, e.g. model_store/cifar10-allcnn/1")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument(
        "--widths",
        type=_widths,
        default=(32, 64, 128),
        help="channels of conv1-3, conv4-6 and conv7-8, e.g. 128,128,128 for the seed's net",
    )
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--val-size", type=int, default=5000, help="held-out validation images")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--learning-rate", type=float, default=0.08, help="peak of the warm-up/cosine schedule")
    train.add_argument("--per-class-limit", type=int, help="use only the first N images of each class")
    train.add_argument("--no-augment", action="store_true", help="no random crops or flips")
    train.add_argument(
        "--no-batch-norm",
        action="store_true",
        help="train the seed's plain network, so the stored kernels are the learned ones (no folding)",
    )
    train.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="sgd: Nesterov SGD; adam: AdamW")
    train.add_argument("--work-dir", help="checkpoint folder (default: OUT.partial beside OUT)")
    train.add_argument("--resume", action="store_true", help="continue from the last epoch's checkpoint")
    train.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress output")
    train.set_defaults(run=_train)

    imported = commands.add_parser(
        "import",
        help="check any Keras image classifier (.keras, Keras 2 .h5) or a SavedModel directory and write it into "
        "the store as a new version",
    )
    imported.add_argument("model", help="the .keras or .h5 file, or a SavedModel directory (holding saved_model.pb)")
    imported.add_argument("--name", required=True, help="store name, e.g. digits (letters, digits, . _ -)")
    names = imported.add_mutually_exclusive_group()
    names.add_argument("--classes", help="class names in output order, comma-separated (default: 0, 1, ...)")
    names.add_argument("--classes-file", help="a file with one class name per line, in output order")
    imported.add_argument("--initial-weights", help="the same network's weights before training (.weights.h5)")
    imported.add_argument(
        "--preprocessing",
        choices=("0-1", "0-255", "-1-1", "mean-std"),
        help="the input the model was trained on (default: 0-255 when it starts with a Rescaling layer, else 0-1)",
    )
    imported.add_argument("--mean", type=_floats, help="per-channel means for mean-std, on 0-1 pixels")
    imported.add_argument("--std", type=_floats, help="per-channel standard deviations for mean-std")
    imported.add_argument(
        "--signature", default="serving_default", help="a SavedModel's signature to serve (default: serving_default)"
    )
    imported.add_argument("--store", default="model_store", help="model store folder (default: ./model_store)")
    imported.set_defaults(run=_import)

    serve = commands.add_parser("serve", help="serve the model store over HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--grpc-port",
        type=int,
        help="Open Inference Protocol gRPC port (default: MINDSCOPE_GRPC_PORT, else --port + 1; 0: off)",
    )
    serve.add_argument("--model-store", help="model store folder (default: MINDSCOPE_MODEL_STORE_DIR or ./model_store)")
    serve.set_defaults(run=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
