"""Arguments shared by the sub-commands that build a model.

The model flags are generated from the registry: every hyperparameter a family declares with
``HParam`` becomes ``--flag-name`` here, so a new hyperparameter is one edit, in its family.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lightnets.errors import InvalidArgumentError, check_int, check_threads, threads_allowed
from lightnets.models import HParam, LightweightNet, create_model, get_model_entry, list_models
from lightnets.models.memory import check_memory

SQUEEZENET_VERSIONS = {
    "1.0": "squeezenet1_0",
    "1_0": "squeezenet1_0",
    "1.1": "squeezenet1_1",
    "1_1": "squeezenet1_1",
}


def thread_count(text: str) -> int:
    """argparse ``type`` of every ``--threads`` option: 1..logical CPUs (``check_threads``), so a
    count the machine cannot run is a one-line usage error before anything starts."""
    try:
        return check_threads("--threads", int(text))
    except (ValueError, InvalidArgumentError):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; {threads_allowed()}") from None


#: The help of every ``--threads`` option (analysis/threads.py is the policy).
THREADS_HELP = (
    "threads (default: OMP_NUM_THREADS when set, else the cores free when the command starts, "
    "at most the physical cores; the choice and its reason are printed on stderr and recorded "
    "in JSON)"
)


def add_threads_argument(parser: argparse.ArgumentParser, extra: str = "") -> None:
    """``--threads N``: override the thread policy (:mod:`lightnets.analysis.threads`)."""
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=None,
        metavar="N",
        help=THREADS_HELP[:-1] + (f"; {extra})" if extra else ")"),
    )


def threads_from_args(args: argparse.Namespace, **policy: Any) -> Any:
    """Apply the thread policy to ``--threads`` (prints its one line on stderr); returns the
    :class:`~lightnets.analysis.threads.ThreadChoice`."""
    from lightnets.analysis.threads import apply_thread_policy

    return apply_thread_policy(getattr(args, "threads", None), **policy)


def declared_hparams() -> dict[str, dict[str, HParam]]:
    """Every hyperparameter of the registry: key -> {model name: its declaration}, in the order
    the (sorted) models declare them."""
    found: dict[str, dict[str, HParam]] = {}
    for name in list_models():
        for key, spec in get_model_entry(name).hparams.items():
            found.setdefault(key, {})[name] = spec
    return found


def _flag_help(specs: dict[str, HParam]) -> str:
    # One help text per distinct declaration, naming the models it applies to.
    by_help: dict[str, list[str]] = {}
    for model, spec in specs.items():
        by_help.setdefault(spec.help, []).append(model)
    return "; ".join(f"{', '.join(models)}: {text}" for text, models in by_help.items())


def _add_hparam_flag(group: argparse._ArgumentGroup, key: str, specs: dict[str, HParam]) -> None:
    flag = "--" + key.replace("_", "-")
    first = next(iter(specs.values()))
    help_text = _flag_help(specs).replace("%", "%%")
    if first.kind is bool:
        # --no-X too, even where every model's default is off: a training recipe may turn X on
        # (SqueezeNet's short runs train --batch-norm), and the user may turn it back off.
        group.add_argument(
            flag, dest=key, action=argparse.BooleanOptionalAction, default=None, help=help_text
        )
        return
    choices = {spec.choices for spec in specs.values()}
    shared = choices.pop() if len(choices) == 1 else None
    group.add_argument(
        flag,
        dest=key,
        type=first.kind,
        # Shared string choices are checked by argparse; numbers by the registry, which names
        # the model in its message.
        choices=shared if first.kind is str else None,
        default=None,
        help=help_text,
    )


def add_model_arguments(
    parser: argparse.ArgumentParser, *, name: bool = True, exported: bool = False
) -> None:
    """Add NAME, one flag per registered hyperparameter (--width-mult, --groups, --bypass,
    ...), --version, --variant, --num-classes and --input-size.

    NAME is a model name or a file (:func:`model_or_checkpoint_from_args`); ``exported``: the
    command also runs exported files (:data:`lightnets.formats.FORMATS`).
    """
    if name:
        files = "a checkpoint such as RUN_DIR/best.pt, or a `lightnets compress` file"
        if exported:
            files += (
                ", or an exported ONNX, OpenVINO (.xml), TorchScript, .pt2, ExecuTorch (.pte) "
                "or LiteRT (.tflite) file"
            )
        parser.add_argument(
            "name",
            metavar="NAME",
            help=f"model name (see `lightnets models`) or file: {files}",
        )
    group = parser.add_argument_group("model")
    for key, specs in declared_hparams().items():
        _add_hparam_flag(group, key, specs)
    group.add_argument(
        "--version",
        dest="model_version",
        metavar="V",
        help="SqueezeNet version (1.0 or 1.1) when NAME is 'squeezenet'",
    )
    group.add_argument(
        "--variant",
        choices=("imagenet", "cifar"),
        default=None,
        help="imagenet: 224 px, total stride 32; cifar: 32 px stem (default: imagenet, or the "
        "--weights file's)",
    )
    group.add_argument(
        "--weights",
        metavar="FILE",
        default=None,
        help="start from these weights: a lightnets checkpoint or .safetensors, a torchvision "
        "or timm state dict (.pth, .bin, .safetensors); unset flags are read from the file",
    )
    group.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classifier outputs (default: 1000 for imagenet, 100 for cifar)",
    )
    group.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="input height and width in pixels (default: 224 imagenet, 32 cifar)",
    )


def model_hparams_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The hyperparameter flags given on the command line (unset flags left out)."""
    return {
        key: getattr(args, key)
        for key in declared_hparams()
        if getattr(args, key, None) is not None
    }


def resolve_model_name(name: str, version: str | None) -> str:
    if name == "squeezenet":
        if version is None:
            version = "1.0"
        if version not in SQUEEZENET_VERSIONS:
            raise InvalidArgumentError(f"unknown SqueezeNet version {version!r}; allowed: 1.0, 1.1")
        return SQUEEZENET_VERSIONS[version]
    if version is not None:
        raise InvalidArgumentError("--version applies only to NAME 'squeezenet'")
    return name


def model_kwargs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The create_model keyword arguments given on the command line (unset flags left out)."""
    name = resolve_model_name(args.name, getattr(args, "model_version", None))
    if getattr(args, "weights", None) is not None:
        # Only what was given: the rest (width, classes, variant...) comes from the file.
        kwargs: dict[str, Any] = {
            "name": name,
            "weights": args.weights,
            "variant": args.variant,
            "num_classes": args.num_classes,
        }
    else:
        variant = args.variant or "imagenet"
        kwargs = {
            "name": name,
            "variant": variant,
            "num_classes": args.num_classes
            if args.num_classes is not None
            else (100 if variant == "cifar" else 1000),
        }
    kwargs.update(model_hparams_from_args(args))
    return kwargs


def _largest_batch(args: argparse.Namespace) -> int:
    """The largest batch the command will run: --batch-size N, or the largest of bench's
    comma-separated sizes; 1 when absent or unparsable (the command reports that itself)."""
    value = getattr(args, "batch_size", None)
    if isinstance(value, int):
        return max(value, 1)
    try:
        return max(1, *(int(b) for b in str(value).split(",")))
    except ValueError:
        return 1


def _input_size(args: argparse.Namespace, default: tuple[int, int, int]) -> tuple[int, int, int]:
    channels, height, _ = default
    size = args.input_size if getattr(args, "input_size", None) is not None else height
    return (channels, check_int("--input-size", size, minimum=1), size)


def model_from_args(args: argparse.Namespace) -> LightweightNet:
    """The model the flags describe, after checking that it fits in memory at the command's
    input size and batch (an absurd width, class count, input or batch is refused first)."""
    kwargs = model_kwargs_from_args(args)
    if "weights" in kwargs:
        # The file decides the widths: build from it, then check the command's input and batch.
        model = create_model(kwargs.pop("name"), **kwargs)
        check_memory(model.hparams, _input_size_or_none(args), _largest_batch(args))
        return model
    check_memory(kwargs, _input_size_or_none(args), _largest_batch(args))
    return create_model(kwargs.pop("name"), **kwargs)


def _input_size_or_none(args: argparse.Namespace) -> tuple[int, int, int] | None:
    size = getattr(args, "input_size", None)
    if size is None:
        return None
    return _input_size(args, (3, size, size))


def input_size_from_args(
    args: argparse.Namespace, model: LightweightNet, state: dict[str, Any] | None = None
) -> tuple[int, int, int]:
    """(C, H, W) from --input-size, defaulting to the size the checkpoint ``state`` was trained
    at (its data set's recorded ``input_size``), else the model's ``default_input_size``: a
    checkpoint trained at 16 px is exported, quantized and timed at 16 px unless told otherwise."""
    recorded = ((state or {}).get("dataset") or {}).get("input_size")
    default = model.default_input_size
    if isinstance(recorded, (list, tuple)) and len(recorded) == 3:
        _, height, width = recorded
        if all(isinstance(v, int) and v >= 1 for v in (height, width)):
            default = (default[0], height, width)
    return _input_size(args, default)


def looks_like_checkpoint(name: str) -> bool:
    """True when NAME refers to a file (a checkpoint) rather than a registered model name."""
    path = Path(name)
    package = path.suffix == ".mlpackage" and path.is_dir()  # a Core ML package is a folder
    return name.endswith((".pt", ".pth")) or "/" in name or path.is_file() or package


def add_force_argument(parser: argparse.ArgumentParser) -> None:
    """``--force``: replace an existing output file without asking (for scripts)."""
    parser.add_argument(
        "--force", action="store_true", help="replace an existing output file without asking"
    )


def add_trust_code_argument(parser: argparse.ArgumentParser) -> None:
    """``--trust-code``: the one way to let lightnets load a file that is a program."""
    parser.add_argument(
        "--trust-code",
        action="store_true",
        help="load NAME even if it is a program (TorchScript, .pt2: the file runs with your "
        "permissions and can read, change or delete your files) or names operators outside "
        "lightnets' allowlist (.pte, .tflite); only for files you made or trust",
    )


def input_files(args: argparse.Namespace) -> list[str]:
    """The files a model command reads (NAME when it is a file, --weights): never written."""
    name = getattr(args, "name", None)
    files = [name] if name and looks_like_checkpoint(name) else []
    weights = getattr(args, "weights", None)
    return files + ([weights] if weights else [])


def model_or_checkpoint_from_args(
    args: argparse.Namespace,
) -> tuple[LightweightNet, dict[str, Any] | None]:
    """Build NAME from the model flags, or load it when NAME is a checkpoint file.

    Returns the model in eval mode and the checkpoint dict (None for a fresh model; {} for
    torchvision or timm weights, which record no data set).
    """
    if looks_like_checkpoint(args.name):
        from lightnets.train.checkpoint import model_from_checkpoint

        model, state = model_from_checkpoint(args.name)
        # The checkpoint's model fits at its own size; check the command's input and batch too,
        # at the size the command will run (the recorded one unless --input-size says otherwise).
        size = input_size_from_args(args, model, state)
        check_memory(model.hparams, size, _largest_batch(args))
        return model, state
    model = model_from_args(args)
    model.eval()
    if getattr(args, "weights", None) is not None:
        from lightnets.models.weights import read_weights_file, weights_state

        # A lightnets file records its preprocessing; a foreign one is ImageNet's ({}: trained
        # weights, no data set recorded).
        return model, weights_state(read_weights_file(args.weights)) or {}
    return model, None
